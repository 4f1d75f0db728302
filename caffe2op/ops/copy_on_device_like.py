# SPDX-License-Identifier: BSD-3-Clause
"""CopyOnDeviceLike: copy a blob onto the device another blob lives on (the gradient of Copy).

Caffe2's ``copy_op.cc``: ``CopyOnDeviceLike([X, like]) -> Y`` copies ``X``
to the device of ``like``; Caffe2 uses it as ``Copy``'s gradient
(``GetCopyGradient``: ``CopyOnDeviceLike([GO(0), I(0)]) -> GI(0)``), so that
the gradient lands where the forward input lives.  ``X`` may live on any
device; ``like`` only says where.  It has no gradient maker, as in Caffe2.
"""

from ..devices import backend_of_value
from ..registry import Operator, register_cpu_operator, register_cuda_operator, register_opencl_operator
from ..schema import OpSchema, register_schema

__all__ = []

COPY_ON_DEVICE_LIKE_SCHEMA = register_schema(
    OpSchema(
        "CopyOnDeviceLike",
        inputs=[("input", "The blob to copy, on any device."), ("dst", "A blob on the device to copy to.")],
        outputs=[("output", "A copy of input on the device of dst.")],
        identical_type_and_shape=True,
        doc="Copy ``input`` to the device ``dst`` lives on (the CPU or an OpenCL/CUDA device), "
        "whatever the operator's own ``device_option``; ``dst`` is only looked at, not read.  A "
        "blob that is not an array raises ``TypeError``.  It is the gradient of ``Copy``.  No "
        "gradient.",
        formula=r"Y = X \text{ on the device of } \mathit{dst}",
        example="""\
>>> import numpy as np, caffe2op
>>> ws = caffe2op.Workspace()
>>> ws.feed_blob("g", np.arange(3.0)); ws.feed_blob("x", np.zeros(3))
>>> ws.run_operator_once(caffe2op.create_operator("CopyOnDeviceLike", ["g", "x"], "x_grad"))
>>> ws.fetch_blob("x_grad")
array([0., 1., 2.])
""",
    )
)


class CopyOnDeviceLikeOp(Operator):
    """CopyOnDeviceLike on any device: the output goes to the device of input 1."""

    def run_on_device(self):
        values = []
        for k in range(2):
            backend = backend_of_value(self._inputs[k])
            if backend is None:
                raise TypeError(
                    f"{self.type}: input {k} {self.input_name(k)!r} is not an array ({type(self._inputs[k]).__name__})"
                )
            values.append(backend)
        (source, target), x = values, self._inputs[0]
        if source is target or source.same_device(target):
            copy = target.copy(x)
        else:
            copy = target.from_host(source.to_host(x))
        # Stored directly: the output's device is input 1's, not necessarily the operator's.
        self.workspace._blobs[self.output_name(0)] = copy


for _register in (register_cpu_operator, register_opencl_operator, register_cuda_operator):
    _register("CopyOnDeviceLike", CopyOnDeviceLikeOp)
del _register
