# SPDX-License-Identifier: BSD-3-Clause
"""Concat: join blobs along an axis (how the backward pass accumulates sparse gradients).

Caffe2's rules (``concat_split_op.h``): every input has the same rank and
dtype, and the same size as input 0 on every axis but ``axis``; the output
is the inputs one after another along ``axis`` (default 1).  With
``add_axis`` the inputs (of identical shapes) are stacked along a new axis
``axis`` instead.  An optional second output ``split_info`` receives the
int32 sizes of the inputs along the axis.

``axis`` is read only when it is given (``add_axis`` with it); otherwise the
axis comes from ``order`` (``NCHW`` -> 1, ``NHWC`` -> the last) and
``add_axis`` is 0, as in Caffe2.  Concat has exactly two outputs, as in
Caffe2: the result and ``split_info``, which its gradient needs.

Gradient (Caffe2's ``GetConcatGradient``): ``Split([GO(0), O(1)]) -> GI(i)``,
the output gradient cut back into the inputs' shapes with the sizes the
forward pass recorded.  The backward pass accumulates sparse gradients with
Concat; those Concats are never differentiated.
"""

import math

import numpy as np

from .. import opencl
from .._validation import require_ndarray
from ..gradient import GradientMakerBase, register_gradient
from ..registry import Operator, register_cpu_operator, register_cuda_operator, register_opencl_operator
from ..schema import Argument, OpSchema, register_schema
from .split import axis_from_args, axis_or_order, order_argument

__all__ = []

CONCAT_SCHEMA = register_schema(
    OpSchema(
        "Concat",
        num_inputs=(1, None),
        num_outputs=2,
        inputs=[("data_0", "First input."), ("data_1 ...", "More inputs: same rank, dtype and non-axis sizes.")],
        outputs=[
            ("concat_result", "The inputs joined along axis."),
            ("split_info", "int32 sizes of the inputs along axis (1 each with add_axis)."),
        ],
        args=[
            Argument("axis", int, default=1, doc="Axis to join along (negative counts from the end); default 1."),
            Argument(
                "add_axis",
                bool,
                default=False,
                doc="With axis: stack the inputs (of identical shapes) along a new axis ``axis`` instead.",
            ),
            order_argument(),
        ],
        validate=lambda op_def, args: axis_or_order(op_def, args),
        doc="Concatenate blobs along ``axis`` (when not given, the axis comes from ``order``: 1 for "
        "``NCHW``; the backward pass uses ``axis=0`` to join the indices and the values of sparse "
        "gradients).  The second output gets the int32 sizes of the inputs along the axis.  Inputs "
        "must share rank and dtype (``TypeError`` otherwise) and the sizes of all other axes "
        "(``ValueError``).  Gradient: a Split of the output's gradient by those sizes.",
        formula=r"Y = [X_0, X_1, \ldots]_{\text{axis}}",
        example="""\
>>> import numpy as np, caffe2op
>>> ws = caffe2op.Workspace()
>>> ws.feed_blob("a", np.array([1, 2])); ws.feed_blob("b", np.array([3]))
>>> ws.run_operator_once(caffe2op.create_operator("Concat", ["a", "b"], ["ab", "sizes"], axis=0))
>>> ws.fetch_blob("ab"), ws.fetch_blob("sizes")
(array([1, 2, 3]), array([2, 1], dtype=int32))
""",
    )
)


def concat_layout(op, shapes, dtypes, axis, add_axis):
    """Check the inputs of a Concat; return ``(canonical axis, output shape, split sizes)``.

    Parameters are the inputs' shapes and dtypes, so that device
    implementations can share the checks.

    Raises
    ------
    TypeError
        If the inputs' dtypes differ.
    ValueError
        If ranks, non-axis sizes or the axis are wrong.
    """
    first_shape, first_dtype = tuple(shapes[0]), np.dtype(dtypes[0])
    ndim = len(first_shape)
    for k, (shape, dtype) in enumerate(zip(shapes, dtypes, strict=True)):
        if np.dtype(dtype) != first_dtype:
            raise TypeError(f"{op}: input {k} has dtype {np.dtype(dtype)} but input 0 has dtype {first_dtype}")
        if len(shape) != ndim:
            raise ValueError(f"{op}: input {k} has {len(shape)} dimensions but input 0 has {ndim}")
    out_ndim = ndim + 1 if add_axis else ndim
    if out_ndim == 0:
        raise ValueError(f"{op}: cannot concatenate 0-d inputs (use add_axis=True to stack them)")
    if not -out_ndim <= axis < out_ndim:
        raise ValueError(
            f"{op}: axis {axis} is out of range for {out_ndim}-d output (valid: {-out_ndim}..{out_ndim - 1})"
        )
    axis = axis % out_ndim
    if add_axis:
        for k, shape in enumerate(shapes):
            if tuple(shape) != first_shape:
                raise ValueError(
                    f"{op}: with add_axis every input must have input 0's shape {first_shape}, "
                    f"input {k} has {tuple(shape)}"
                )
        sizes = [1] * len(shapes)
        out_shape = first_shape[:axis] + (len(shapes),) + first_shape[axis:]
    else:
        for k, shape in enumerate(shapes):
            for d in range(ndim):
                if d != axis and shape[d] != first_shape[d]:
                    raise ValueError(
                        f"{op}: input {k} has shape {tuple(shape)} but input 0 has {first_shape}; they may "
                        f"differ only on axis {axis} (dimension {d} differs)"
                    )
        sizes = [int(shape[axis]) for shape in shapes]
        out_shape = first_shape[:axis] + (sum(sizes),) + first_shape[axis + 1 :]
    return axis, out_shape, sizes


@register_cpu_operator("Concat")
class ConcatCPU(Operator):
    """Concat on the CPU (NumPy, written into the reused output blob)."""

    def run_on_device(self):
        inputs = [require_ndarray(self.type, f"input {k}", x) for k, x in enumerate(self.inputs)]
        axis, add_axis = axis_from_args(self.op_def, self.args, inputs[0].ndim)
        axis, out_shape, sizes = concat_layout(
            self.type, [x.shape for x in inputs], [x.dtype for x in inputs], axis, add_axis
        )
        # Compute before writing any output: nothing is half-written on failure.
        joined = np.stack(inputs, axis=axis) if add_axis else np.concatenate(inputs, axis=axis)
        np.copyto(self.output(0, out_shape, inputs[0].dtype), joined)
        np.copyto(self.output(1, (len(sizes),), np.dtype(np.int32)), np.asarray(sizes, dtype=np.int32))


@register_opencl_operator("Concat")
@register_cuda_operator("Concat")
class ConcatOpenCL(Operator):
    """Concat on an OpenCL device: one rectangular device-to-device copy per input, no host round trip.

    Seen as 2-D, every input is ``(outer, inner_k)`` (``outer`` = the sizes
    before ``axis``) and lands in columns ``[offset_k, offset_k + inner_k)``
    of the ``(outer, sum inner_k)`` output, which ``clEnqueueCopyBufferRect``
    copies for any dtype.
    """

    def run_on_device(self):
        inputs = self.inputs
        axis, add_axis = axis_from_args(self.op_def, self.args, len(inputs[0].shape))
        axis, out_shape, sizes = concat_layout(
            self.type, [x.shape for x in inputs], [x.dtype for x in inputs], axis, add_axis
        )
        for k, x in enumerate(inputs):
            if not x.flags.c_contiguous:
                raise ValueError(f"{self.type}: device input {k} must be C-contiguous")
        queue = self.backend.queue
        out = self.output(0, out_shape, inputs[0].dtype)
        if any(out is x for x in inputs):  # an input aliased by the output name: write a fresh array
            out = self.backend.empty(out_shape, inputs[0].dtype)
            self.set_output(0, out)
        itemsize = out.dtype.itemsize
        outer = math.prod(out_shape[:axis])
        row_bytes = math.prod(out_shape[axis:]) * itemsize
        column = 0
        for x in inputs:
            width = x.nbytes // outer if outer else 0
            if width and outer:
                opencl.copy_columns(queue, x, out, outer, width, 0, width, column, row_bytes)
            column += width
        self.set_output(1, self.backend.from_host(np.asarray(sizes, dtype=np.int32)))


@register_gradient("Concat")
class GetConcatGradient(GradientMakerBase):
    """The gradient of Concat: ``Split([GO(0), O(1)]) -> GI(i)``, by the recorded sizes (Caffe2's)."""

    def get_gradient_defs(self):
        if self.g_output[0] is None:
            return []
        grads = [self.GI(i) for i in range(len(self.def_.inputs))]
        return self.single_gradient_def("Split", "", [self.GO(0), self.O(1)], grads)
