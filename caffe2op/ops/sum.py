# SPDX-License-Identifier: BSD-3-Clause
"""Sum: element-wise sum of n blobs of identical shape and dtype.

The backward-pass builder uses it to accumulate the gradients of a blob read
by several operators; its own gradient passes the output gradient through to
every input, with no operator.
"""

import numpy as np

from .. import opencl
from .._validation import require_ndarray
from ..gradient import register_gradient
from ..registry import Operator, register_cpu_operator, register_cuda_operator, register_opencl_operator
from ..schema import OpSchema, register_schema

__all__ = []

SUM_SCHEMA = register_schema(
    OpSchema(
        "Sum",
        num_inputs=(1, None),
        num_outputs=1,
        inputs=[("data_0", "First input."), ("data_1 ...", "More inputs of the same shape and dtype.")],
        outputs=[("sum", "Element-wise sum, same shape and dtype.")],
        allow_inplace=[(0, 0)],
        identical_type_and_shape=True,
        doc="Element-wise sum of one or more blobs of identical shape and dtype (mismatches "
        "raise).  In place on input 0 is allowed.  Gradient: every input's gradient is the "
        "output's gradient (no operator is emitted).",
        formula=r"Y = \sum_k X_k",
        example="""\
>>> import numpy as np, caffe2op
>>> ws = caffe2op.Workspace()
>>> ws.feed_blob("a", np.array([1.0, 2.0])); ws.feed_blob("b", np.array([10.0, 20.0]))
>>> ws.run_operator_once(caffe2op.create_operator("Sum", ["a", "b"], "s"))
>>> ws.fetch_blob("s")
array([11., 22.])
""",
    )
)


def check_sum_inputs(op, inputs):
    """Raise unless every input has input 0's shape (ValueError) and dtype (TypeError)."""
    first = inputs[0]
    if first.dtype.kind not in "biufc":
        raise TypeError(f"{op}: inputs must be numeric, got {first.dtype}")
    for k, x in enumerate(inputs[1:], start=1):
        if x.dtype != first.dtype:
            raise TypeError(f"{op}: input {k} has dtype {x.dtype} but input 0 has dtype {first.dtype}")
        if tuple(x.shape) != tuple(first.shape):
            raise ValueError(f"{op}: input {k} has shape {tuple(x.shape)} but input 0 has shape {tuple(first.shape)}")


@register_cpu_operator("Sum")
class SumCPU(Operator):
    """Sum on the CPU (NumPy adds, accumulated in the output)."""

    def run_on_device(self):
        inputs = [require_ndarray(self.type, f"input {k}", x) for k, x in enumerate(self.inputs)]
        check_sum_inputs(self.type, inputs)
        first = inputs[0]
        out = self.output(0, first.shape, first.dtype)
        if len(inputs) == 1:
            if out is not first:
                np.copyto(out, first)
            return
        np.add(first, inputs[1], out=out)
        for x in inputs[2:]:
            np.add(out, x, out=out)


@register_gradient("Sum")
def sum_gradient(op_def, g_output):
    """Sum's gradient: every input's gradient is the output's (dense) gradient, with no operator.

    Caffe2's ``GetSumGradient`` (``SetDense(i, GO(0))``).

    Parameters
    ----------
    op_def : OperatorDef
        The Sum operator.
    g_output : list
        The gradient of its output.

    Returns
    -------
    tuple of (list, list)
        No operators, and ``g_output[0]`` for every input.

    Raises
    ------
    ValueError
        If the output gradient is sparse or missing.

    Examples
    --------
    >>> import caffe2op
    >>> caffe2op.get_gradient_defs(caffe2op.create_operator("Sum", ["a", "b"], "s"), ["s_grad"])
    ([], ['s_grad', 's_grad'])
    """
    g = g_output[0]
    if not isinstance(g, str):
        raise ValueError(f"Sum: gradient of output 0 ({op_def.outputs[0]!r}) is either sparse or not provided")
    return [], [g] * len(op_def.inputs)


# --- OpenCL ------------------------------------------------------------------


def _sum_defines(op, dtype, info):
    if dtype == np.bool_:
        return {"REAL": "uchar", "CAFFE2OP_BOOL": 1}
    return opencl.dtype_defines(op, dtype, info)  # TypeError: float64 without fp64, complex


@register_opencl_operator("Sum")
@register_cuda_operator("Sum")
class SumOpenCL(Operator):
    """Sum on an OpenCL device: ``out = x0 + x1``, then ``out += xk``, one ``sum.cl`` launch per input."""

    def run_on_device(self):
        inputs = self.inputs
        check_sum_inputs(self.type, inputs)
        first = inputs[0]
        defines = _sum_defines(self.type, first.dtype, self.backend.info)
        queue = self.backend.queue
        out = self.output(0, first.shape, first.dtype)
        if len(inputs) == 1:
            if out is not first:
                opencl.copy_array(queue, first, out)
            return
        if first.size == 0:
            return
        kernel = opencl.get_kernel(opencl.get_program(queue.context, "sum.cl", defines), "caffe2op_sum_fwd")
        size = opencl.elementwise_size(queue, first.size)
        left = first
        for x in inputs[1:]:
            pending = list(out.events) + list(left.events) + list(x.events)
            event = opencl.launch(
                queue,
                kernel,
                size,
                None,
                out.base_data,
                left.base_data,
                x.base_data,
                np.uint64(first.size),
                wait_for=pending,
            )
            out.add_event(event)
            left = out
