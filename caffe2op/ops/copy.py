# SPDX-License-Identifier: BSD-3-Clause
"""Copy operators: move blobs between the host and a device explicitly, as Caffe2's did.

An operator only reads blobs of its own device; these are the operators that
cross devices.  Their ``device_option`` is the device side, as in Caffe2:

==================  ==========================  =================  ===================
operator            registered for              input lives on     output lives on
==================  ==========================  =================  ===================
``CopyCPUToGPU``    OPENCL, CUDA                the CPU            the operator's device
``CopyGPUToCPU``    OPENCL, CUDA                the operator's     the CPU
``Copy``            CPU, OPENCL, CUDA           the operator's     the operator's device
``EnsureCPUOutput`` CPU, OPENCL, CUDA           anywhere           the CPU
==================  ==========================  =================  ===================

"GPU" means any OpenCL device here, NVIDIA or not.  Each output is a new
copy; in place is not allowed (the blob would have to live on two devices).
``Copy`` does not stop gradients (use StopGradient for that).
"""

import numpy as np

from ..devices import backend_of_value
from ..gradient import GradientMakerBase, GradientSlice, register_gradient
from ..registry import Operator, register_cpu_operator, register_cuda_operator, register_opencl_operator
from ..schema import OpSchema, register_schema

__all__ = []


def _schema(op_type, doc, input_doc, output_doc, example=""):
    return register_schema(
        OpSchema(
            op_type,
            num_inputs=1,
            num_outputs=1,
            inputs=[("input", input_doc)],
            outputs=[("output", output_doc)],
            identical_type_and_shape=True,
            doc=doc,
            formula=r"Y = X",
            example=example,
        )
    )


COPY_CPU_TO_GPU_SCHEMA = _schema(
    "CopyCPUToGPU",
    "Copy a CPU blob to the operator's OpenCL/CUDA device.  The operator's ``device_option`` "
    "names the device; the input must live on the CPU (``ValueError`` otherwise).  There is no "
    "CPU implementation, so running the example needs an OpenCL device.  Gradient: "
    "``CopyGPUToCPU`` brings the output's gradient back to the CPU.",
    "A blob on the CPU.",
    "A copy on the operator's device.",
    example="""\
>>> import numpy as np, caffe2op
>>> gpu = caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0)
>>> op = caffe2op.create_operator("CopyCPUToGPU", "x", "x_gpu", device_option=gpu)
>>> op.describe()
'CopyCPUToGPU(x) -> (x_gpu)  device=OPENCL:0'
>>> ws = caffe2op.Workspace()
>>> ws.feed_blob("x", np.arange(3.0))
>>> ws.run_operator_once(op)  # needs an OpenCL device  # doctest: +OPENCL
>>> ws.fetch_blob("x_gpu")  # fetching always copies to a NumPy array  # doctest: +OPENCL
array([0., 1., 2.])
""",
)
COPY_GPU_TO_CPU_SCHEMA = _schema(
    "CopyGPUToCPU",
    "Copy a blob of the operator's OpenCL/CUDA device to the CPU.  The operator's ``device_option`` "
    "names the device the input lives on (``ValueError`` otherwise); the output is a NumPy array "
    "in the workspace.  There is no CPU implementation, so running the example needs an OpenCL "
    "device.  Gradient: ``CopyCPUToGPU`` sends the output's gradient back to the device.",
    "A blob on the operator's device.",
    "A copy on the CPU (a NumPy array).",
    example="""\
>>> import numpy as np, caffe2op
>>> gpu = caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0)
>>> op = caffe2op.create_operator("CopyGPUToCPU", "h_gpu", "h", device_option=gpu)
>>> op.describe()
'CopyGPUToCPU(h_gpu) -> (h)  device=OPENCL:0'
>>> ws = caffe2op.Workspace()
>>> ws.feed_blob("h_gpu", np.arange(3.0), gpu)  # needs an OpenCL device  # doctest: +OPENCL
>>> ws.run_operator_once(op)  # doctest: +OPENCL
>>> ws.fetch_blob("h")  # doctest: +OPENCL
array([0., 1., 2.])
""",
)
COPY_SCHEMA = _schema(
    "Copy",
    "Copy a blob on the operator's device (CPU or OpenCL/CUDA) to a new blob of the same device.  "
    "Unlike StopGradient it is not a gradient barrier in Caffe2's sense: its gradient is a "
    "``CopyOnDeviceLike`` of the output's gradient onto the input's device, as in Caffe2.",
    "A blob on the operator's device.",
    "A copy on the same device.",
    example="""\
>>> import numpy as np, caffe2op
>>> ws = caffe2op.Workspace()
>>> ws.feed_blob("x", np.arange(3))
>>> ws.run_operator_once(caffe2op.create_operator("Copy", "x", "y"))
>>> ws.fetch_blob("y")
array([0, 1, 2])
""",
)
ENSURE_CPU_OUTPUT_SCHEMA = _schema(
    "EnsureCPUOutput",
    "Make a CPU copy of a blob wherever it lives (the CPU or any device), whatever the operator's "
    "own ``device_option``: the one operator that accepts an input from any device.  A blob that "
    "is not an array raises ``TypeError``.  It has no gradient maker.",
    "A blob on any device.",
    "A copy on the CPU (a NumPy array).",
    example="""\
>>> import numpy as np, caffe2op
>>> ws = caffe2op.Workspace()
>>> ws.feed_blob("x", np.arange(3.0))
>>> ws.run_operator_once(caffe2op.create_operator("EnsureCPUOutput", "x", "x_cpu"))
>>> ws.fetch_blob("x_cpu")
array([0., 1., 2.])

A blob on an OpenCL device comes back the same way:

>>> gpu = caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0)
>>> ws.feed_blob("h_gpu", np.ones(2), gpu)  # needs an OpenCL device  # doctest: +OPENCL
>>> ws.run_operator_once(caffe2op.create_operator("EnsureCPUOutput", "h_gpu", "h"))  # doctest: +OPENCL
>>> ws.fetch_blob("h")  # doctest: +OPENCL
array([1., 1.])
""",
)


def _store_on_cpu(op, value):
    """Store ``value`` (a NumPy array) as the operator's output, whatever the operator's device."""
    op.workspace._blobs[op.output_name(0)] = value


class _CopyCPUToDevice(Operator):
    def run_on_device(self):
        x = self._inputs[0]
        if not isinstance(x, np.ndarray):
            source = backend_of_value(x)
            where = source.name if source is not None else f"no device (a {type(x).__name__})"
            raise ValueError(
                f"{self.type}: input 0 {self.input_name(0)!r} must live on the CPU, but it lives on {where}"
            )
        self.set_output(0, self.backend.from_host(x))


class _CopyDeviceToCPU(Operator):
    def run_on_device(self):
        x = self.input(0)
        _store_on_cpu(self, self.backend.to_host(x))


class _CopySameDevice(Operator):
    def run_on_device(self):
        self.set_output(0, self.backend.copy(self.input(0)))


class _EnsureCPUOutput(Operator):
    def run_on_device(self):
        x = self._inputs[0]
        backend = backend_of_value(x)
        if backend is None:
            raise TypeError(f"{self.type}: input {self.input_name(0)!r} is not an array ({type(x).__name__})")
        _store_on_cpu(self, backend.to_host(x))


for _register in (register_opencl_operator, register_cuda_operator):
    _register("CopyCPUToGPU", _CopyCPUToDevice)
    _register("CopyGPUToCPU", _CopyDeviceToCPU)
for _register in (register_cpu_operator, register_opencl_operator, register_cuda_operator):
    _register("Copy", _CopySameDevice)
    _register("EnsureCPUOutput", _EnsureCPUOutput)
del _register


# --- gradients (Caffe2's copy_op.cc): each direction's gradient is the other one ---


def _copy_gradient(backward_type):
    class CopyGradientMaker(GradientMakerBase):
        def get_gradient_defs(self):
            if isinstance(self.g_output[0], GradientSlice):
                return [
                    self.single_gradient_def(backward_type, "", [self.GO_I(0)], [self.GI_I(0)])[0],
                    self.single_gradient_def(backward_type, "", [self.GO_V(0)], [self.GI_V(0)])[0],
                ]
            return self.single_gradient_def(backward_type, "", [self.GO(0)], [self.GI(0)])

    CopyGradientMaker.__name__ = CopyGradientMaker.__qualname__ = f"Get{backward_type}Gradient"
    CopyGradientMaker.__doc__ = (
        f"The output's gradient goes back through ``{backward_type}``: one operator for a dense gradient, "
        f"two (indices, values) for a sparse one."
    )
    return CopyGradientMaker


register_gradient("CopyCPUToGPU")(_copy_gradient("CopyGPUToCPU"))
register_gradient("CopyGPUToCPU")(_copy_gradient("CopyCPUToGPU"))


@register_gradient("Copy")
class GetCopyGradient(GradientMakerBase):
    """The output's gradient goes back with ``CopyOnDeviceLike([GO(0), I(0)])``, onto the input's device (Caffe2's)."""

    def get_gradient_defs(self):
        if isinstance(self.g_output[0], GradientSlice):
            return [
                self.single_gradient_def("CopyOnDeviceLike", "", [self.GO_I(0), self.I(0)], [self.GI_I(0)])[0],
                self.single_gradient_def("CopyOnDeviceLike", "", [self.GO_V(0), self.I(0)], [self.GI_V(0)])[0],
            ]
        return self.single_gradient_def("CopyOnDeviceLike", "", [self.GO(0), self.I(0)], [self.GI(0)])
