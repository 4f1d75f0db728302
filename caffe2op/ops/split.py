# SPDX-License-Identifier: BSD-3-Clause
"""Split: cut a blob into pieces along an axis (the gradient of Concat, whose gradient is Concat).

Caffe2's rules (``concat_split_op.h``): the sizes of the pieces come from
the optional second input (a 1-D int32 tensor, as Concat's ``split_info``
output), else from the ``split`` argument, else the axis is cut into
``len(outputs)`` equal parts.  ``axis`` is read only when it is given
(``add_axis`` with it); otherwise the axis comes from ``order`` (``NCHW``
-> 1, ``NHWC`` -> last) and ``add_axis`` is 0.  With ``add_axis`` every
piece has size 1 along the axis, which is removed from the outputs (the
inverse of a Concat that stacked its inputs).
"""

import math

import numpy as np

from .. import opencl
from .._validation import require_ndarray
from ..gradient import GradientMakerBase, register_gradient
from ..registry import Operator, register_cpu_operator, register_cuda_operator, register_opencl_operator
from ..schema import Argument, OpSchema, register_schema

__all__ = []

_ORDERS = ("NCHW", "NHWC")


def check_order(value):
    """Validator of the ``order`` argument of Concat and Split."""
    return None if value in _ORDERS else f"must be one of {', '.join(_ORDERS)}"


def axis_from_args(op_def, args, ndim):
    """Caffe2's axis rule: ``(axis, add_axis)`` from ``axis`` when given, else from ``order``.

    ``ndim`` is the rank the axis indexes (for ``NHWC``: the last axis of a 4-d blob is 3).
    """
    if "axis" in op_def.args:
        return args["axis"], args["add_axis"]
    return (1 if args["order"] == "NCHW" else max(ndim - 1, 0)), False


def axis_or_order(op_def, args):
    """Cross-argument rule shared by Concat and Split: ``axis`` and ``order`` exclude each other."""
    if "axis" in op_def.args and "order" in op_def.args:
        return "give either axis or order, not both (Caffe2: the axis comes from order only when axis is not given)"
    if "add_axis" in op_def.args and "axis" not in op_def.args and args["add_axis"]:
        return "add_axis is read only together with axis (Caffe2 ignores it otherwise): give axis too"
    return None


def order_argument():
    """The ``order`` argument of Concat and Split."""
    return Argument(
        "order",
        str,
        default="NCHW",
        validator=check_order,
        doc="When axis is not given: ``NCHW`` splits/joins axis 1, ``NHWC`` the last axis.",
    )


def _split_rules(op_def, args):
    problem = axis_or_order(op_def, args)
    if problem:
        return problem
    if len(op_def.inputs) == 2 and args["split"]:
        return "give the split sizes either as the second input or as the split argument, not both"
    if args["split"] and len(args["split"]) != len(op_def.outputs):
        return f"split has {len(args['split'])} sizes for {len(op_def.outputs)} outputs"
    return None


SPLIT_SCHEMA = register_schema(
    OpSchema(
        "Split",
        num_inputs=(1, 2),
        num_outputs=(1, None),
        inputs=[
            ("input", "The blob to split."),
            ("split", "Optional: 1-D int32 sizes of the pieces along the axis (Concat's split_info)."),
        ],
        outputs=[("output_0 ...", "The pieces, in order.")],
        args=[
            Argument("axis", int, default=1, doc="Axis to split (negative counts from the end)."),
            Argument(
                "split",
                list[int],
                default=[],
                validator=lambda sizes: "must not contain negative sizes" if any(n < 0 for n in sizes) else None,
                doc="Sizes of the pieces along the axis; default: equal parts.",
            ),
            order_argument(),
            Argument(
                "add_axis",
                bool,
                default=False,
                doc="With axis: every piece has size 1 along axis, which the outputs drop "
                "(the gradient of a Concat with add_axis).",
            ),
        ],
        validate=_split_rules,
        doc="Split a blob into ``len(outputs)`` pieces along an axis: sizes from the second input, "
        "else from ``split``, else equal parts.  The sizes must add up to the axis' length "
        "(``ValueError`` otherwise).  This is the gradient of Concat; its own gradient is a Concat "
        "of the output gradients.",
        formula=r"[Y_0, Y_1, \ldots]_{\text{axis}} = X",
        example="""\
>>> import numpy as np, caffe2op
>>> ws = caffe2op.Workspace()
>>> ws.feed_blob("x", np.arange(6).reshape(2, 3))
>>> ws.run_operator_once(caffe2op.create_operator("Split", "x", ["a", "b"], axis=1, split=[1, 2]))
>>> ws.fetch_blob("a"), ws.fetch_blob("b")
(array([[0],
       [3]]), array([[1, 2],
       [4, 5]]))
""",
    )
)


def split_layout(op, op_def, args, shape, sizes_input):
    """Check a Split; return ``(canonical axis, sizes, output shapes)``.

    ``sizes_input`` is the host array of the second input, or None.

    Raises
    ------
    TypeError
        If the sizes input is not an integer tensor.
    ValueError
        If the axis, the number of sizes or their sum are wrong.
    """
    ndim = len(shape)
    axis, add_axis = axis_from_args(op_def, args, ndim)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis {axis} is out of range for a {ndim}-d input (valid: {-ndim}..{ndim - 1})")
    axis %= ndim
    n_out = len(op_def.outputs)
    length = int(shape[axis])
    if sizes_input is not None:
        sizes_array = np.asarray(sizes_input)
        if sizes_array.dtype.kind not in "iu":
            raise TypeError(f"{op}: the split input must hold integers, got dtype {sizes_array.dtype}")
        if sizes_array.ndim != 1 or sizes_array.size != n_out:
            raise ValueError(
                f"{op}: the split input must be 1-D with one size per output ({n_out}), got shape {sizes_array.shape}"
            )
        sizes = [int(n) for n in sizes_array]
        if any(n < 0 for n in sizes):
            raise ValueError(f"{op}: the split input holds negative sizes {sizes}")
    elif args["split"]:
        sizes = list(args["split"])
    else:
        if length % n_out:
            raise ValueError(
                f"{op}: without split sizes, axis {axis} (length {length}) must divide into {n_out} equal parts"
            )
        sizes = [length // n_out] * n_out
    if add_axis:
        if n_out != length:
            raise ValueError(f"{op}: with add_axis there must be one output per element of axis {axis} ({length})")
        sizes = [1] * n_out
    elif sum(sizes) != length:
        raise ValueError(f"{op}: split sizes {sizes} add up to {sum(sizes)}, but axis {axis} has length {length}")
    shapes = []
    for n in sizes:
        out = list(shape)
        if add_axis:
            del out[axis]
        else:
            out[axis] = n
        shapes.append(tuple(out))
    return axis, sizes, shapes


@register_cpu_operator("Split")
class SplitCPU(Operator):
    """Split on the CPU (each piece copied into its reused output blob)."""

    def run_on_device(self):
        x = require_ndarray(self.type, "input 0", self.input(0))
        sizes_input = self.input(1) if self.num_inputs > 1 else None
        axis, sizes, shapes = split_layout(self.type, self.op_def, self.args, x.shape, sizes_input)
        # Slice everything first; an output may be the input blob itself.
        bounds = np.cumsum([0] + sizes)
        pieces = [
            np.take(x, np.arange(bounds[k], bounds[k + 1]), axis=axis).reshape(shapes[k]) for k in range(len(sizes))
        ]
        for k, piece in enumerate(pieces):
            np.copyto(self.output(k, shapes[k], x.dtype), piece)


@register_opencl_operator("Split")
@register_cuda_operator("Split")
class SplitOpenCL(Operator):
    """Split on an OpenCL device: one rectangular device-to-device copy per output, no host round trip.

    Seen as 2-D, the input is ``(outer, row)`` bytes (``outer`` = the sizes
    before ``axis``); output ``k`` is the column block
    ``[offset_k, offset_k + width_k)``, which ``clEnqueueCopyBufferRect``
    copies for any dtype.  Only the sizes input is read back to the host.
    """

    def run_on_device(self):
        x = self.input(0)
        if not x.flags.c_contiguous:
            raise ValueError(f"{self.type}: device input 0 must be C-contiguous")
        sizes_input = self.backend.to_host(self.input(1)) if self.num_inputs > 1 else None
        axis, sizes, shapes = split_layout(self.type, self.op_def, self.args, x.shape, sizes_input)
        queue = self.backend.queue
        outer = math.prod(x.shape[:axis])
        row_bytes = math.prod(x.shape[axis:]) * x.dtype.itemsize
        outputs = []
        for k, shape in enumerate(shapes):
            out = self.output(k, shape, x.dtype)
            if out is x:  # the input's own blob named as an output: write a fresh array
                out = self.backend.empty(shape, x.dtype)
            outputs.append(out)
        column = 0
        for out in outputs:
            width = out.nbytes // outer if outer else 0
            if width and outer:
                opencl.copy_columns(queue, x, out, outer, width, column, row_bytes, 0, width)
            column += width
        for k, out in enumerate(outputs):
            self.set_output(k, out)


@register_gradient("Split")
class GetSplitGradient(GradientMakerBase):
    """The gradient of Split: ``Concat`` of the output gradients into the input's (Caffe2's ``GetSplitGradient``)."""

    def get_gradient_defs(self):
        present = [g is not None for g in self.g_output]
        if not any(present):
            return []
        # Caffe2 concatenates only the gradients it has, which gives the input gradient the wrong
        # shape when one is missing; ask for all (GO explains how to give an unused output one).
        grads = [self.GO(i) for i in range(len(self.g_output))]
        grad = self.GI(0)
        return self.single_gradient_def("Concat", "", grads, [grad, "_" + grad + "_dims"])
