# SPDX-License-Identifier: BSD-3-Clause
"""ConstantFill: a blob filled with one value (what ZeroGradient's and the loss's gradients are made of).

Caffe2's rules (``filler_op.h``): with an input, the output takes the input's
shape plus ``extra_shape`` (or, with ``input_as_shape``, the shape *stored* in
the 1-D integer input); without one, it takes ``shape``.  The dtype comes from
``dtype``; without it, from the type of ``value`` (float -> float32, int or
bool -> int64); with neither it is float32.  It is never taken from the input.
A second input ``V`` (one element of the output's dtype) replaces ``value``,
as Caffe2's ``FillWithType`` does.

Argument types as Caffe2 reads them (``proto_utils.cc``): an integer or bool
``dtype`` needs an integer ``value`` (Caffe2 raises for ``dtype=INT32,
value=1.5``, and so do we).  A float ``dtype`` given an integer ``value`` is
accepted here and converted exactly (Caffe2 raises there, because its Python
stores ``1`` in the argument's integer field): a deliberate leniency.
"""

import numbers

import numpy as np

from .. import opencl
from ..core import DataType
from ..gradient import no_gradient
from ..registry import Operator, register_cpu_operator, register_cuda_operator, register_opencl_operator
from ..schema import Argument, OpSchema, register_schema

__all__ = []


def fill_dtype(dtype):
    """The NumPy dtype of a ``dtype`` argument (a DataType code, a dtype or a name).

    Raises
    ------
    TypeError
        If it names no numeric dtype.
    """
    if isinstance(dtype, numbers.Integral) and not isinstance(dtype, bool):
        try:
            return DataType(int(dtype)).numpy_dtype
        except ValueError:
            raise TypeError(f"ConstantFill: dtype {dtype!r} is not a Caffe2 DataType code") from None
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"ConstantFill: dtype {dtype!r} is not a dtype") from None
    if resolved.kind not in "biuf":
        raise TypeError(f"ConstantFill: dtype must be a numeric or bool dtype, got {resolved}")
    return resolved


def _check_dtype(dtype):
    try:
        fill_dtype(dtype)
    except TypeError as err:
        return str(err).replace("ConstantFill: ", "")
    return None


def _check_value(value):
    if isinstance(value, (bool, np.bool_, numbers.Real)):
        return None
    return f"must be a number or bool, got {type(value).__name__}"


def _non_negative(dims):
    return "must not contain negative dimensions" if any(d < 0 for d in dims) else None


def _cross_rules(op_def, args):
    """Caffe2's constructor checks that involve the input."""
    if op_def.inputs:
        if "shape" in op_def.args:
            return "cannot set the shape argument and pass in an input at the same time"
    else:
        if args["extra_shape"]:
            return "cannot set extra_shape when there is no input"
        if args["input_as_shape"]:
            return "an input must be given if input_as_shape is true"
    return None


CONSTANT_FILL_SCHEMA = register_schema(
    OpSchema(
        "ConstantFill",
        num_inputs=(0, 2),
        num_outputs=1,
        inputs=[
            ("input", "Optional: gives the output shape (its shape, or its values with input_as_shape)."),
            ("V", "Optional: one element of the output's dtype, the fill value (replaces value)."),
        ],
        outputs=[("output", "The filled blob.")],
        args=[
            Argument("value", object, default=0.0, validator=_check_value, doc="Fill value (default 0.0)."),
            Argument(
                "dtype",
                object,
                default=None,
                validator=lambda d: None if d is None else _check_dtype(d),
                doc="Output dtype: a Caffe2 DataType code (1 = FLOAT, 10 = INT64, ...), a NumPy "
                "dtype or its name.  Default: from the type of value (float -> float32, "
                "int/bool -> int64).",
            ),
            Argument(
                "shape", list[int], default=[], validator=_non_negative, doc="Output shape when there is no input."
            ),
            Argument(
                "extra_shape",
                list[int],
                default=[],
                validator=_non_negative,
                doc="Dimensions appended to the input's shape.",
            ),
            Argument(
                "input_as_shape", bool, default=False, doc="Read the shape from the values of the 1-D integer input."
            ),
        ],
        allow_inplace=[(0, 0)],
        validate=_cross_rules,
        doc="Fill a blob with ``value``.  The shape comes from the input (its shape plus "
        "``extra_shape``, or its values with ``input_as_shape``) or from ``shape``; the dtype "
        "from ``dtype`` or from the type of ``value`` — never from the input, so "
        "ZeroGradient's gradient is float32 even for a float16 blob.  A second input ``V`` "
        "(exactly one element, of the output's dtype) gives the fill value instead of ``value``, "
        "as in Caffe2.  An integer or bool ``dtype`` needs an integer ``value``.  No gradient.",
        formula=r"Y_{i} = \text{value}",
        example="""\
>>> import numpy as np, caffe2op
>>> ws = caffe2op.Workspace()
>>> ws.feed_blob("x", np.zeros((2, 3), dtype=np.float16))
>>> ws.run_operator_once(caffe2op.create_operator("ConstantFill", "x", "g", value=1.0))
>>> ws.fetch_blob("g")
array([[1., 1., 1.],
       [1., 1., 1.]], dtype=float32)
""",
    )
)


def resolve_fill(op, args, op_def, first_input, value_input=None):
    """Return (shape, dtype, value) of a ConstantFill with resolved ``args``.

    ``first_input`` is the host array of input 0 for ``input_as_shape`` (None
    otherwise); its shape is read from the blob itself otherwise.
    ``value_input`` is the host array of the second input ``V``, or None.
    """
    value = args["value"]
    if op_def.args.get("dtype") is not None:
        dtype = fill_dtype(args["dtype"])
    elif isinstance(value, (float, np.floating)) and not isinstance(value, bool):
        dtype = np.dtype(np.float32)
    elif "value" in op_def.args:
        dtype = np.dtype(np.int64)
    else:
        dtype = np.dtype(np.float32)
    if first_input is None:
        shape = tuple(args["shape"])
    elif args["input_as_shape"]:
        dims = np.asarray(first_input)
        if dims.ndim != 1 or dims.dtype.kind not in "iu" or dims.size == 0:
            raise ValueError(
                f"{op}: with input_as_shape the input must be a non-empty 1-D integer tensor, "
                f"got shape {dims.shape} and dtype {dims.dtype}"
            )
        if (dims < 0).any():
            raise ValueError(f"{op}: input_as_shape got negative dimensions {dims.tolist()}")
        shape = tuple(int(d) for d in dims) + tuple(args["extra_shape"])
    else:
        shape = tuple(first_input.shape) + tuple(args["extra_shape"])
    if value_input is not None:
        v = np.asarray(value_input)
        if v.size != 1:
            raise ValueError(f"{op}: the value input V must have exactly 1 element, got shape {v.shape}")
        if v.dtype != dtype:
            raise TypeError(
                f"{op}: the value input V must have the output's dtype {dtype} (Caffe2 reads it as that "
                f"type), got {v.dtype}"
            )
        return shape, dtype, v.reshape(()).copy()
    given = "value" in op_def.args
    if given and dtype.kind in "iub" and not isinstance(value, (bool, np.bool_, numbers.Integral)):
        # Caffe2 reads an integer dtype's value from the argument's integer field and raises otherwise.
        raise TypeError(f"{op}: dtype {dtype} needs an integer value, got {type(value).__name__} ({value!r})")
    if dtype.kind in "iu" and not (np.isfinite(value) and np.iinfo(dtype).min <= int(value) <= np.iinfo(dtype).max):
        raise ValueError(f"{op}: value {value!r} does not fit dtype {dtype}")
    with np.errstate(over="ignore"):
        typed_value = np.bool_(value) if dtype.kind == "b" else np.array(value).astype(dtype, casting="unsafe")
    return shape, dtype, typed_value


@register_cpu_operator("ConstantFill")
class ConstantFillCPU(Operator):
    """ConstantFill on the CPU."""

    def run_on_device(self):
        first = self.input(0) if self.num_inputs else None
        value_input = self.input(1) if self.num_inputs > 1 else None
        shape, dtype, value = resolve_fill(self.type, self.args, self.op_def, first, value_input)
        current = self.workspace._blobs.get(self.output_name(0))
        reusable = isinstance(current, np.ndarray) and current.shape == shape and current.dtype == dtype
        if not reusable and value == 0:
            # calloc-backed zeros: pages are zeroed lazily by the OS.
            self.set_output(0, np.zeros(shape, dtype))
            return
        self.output(0, shape, dtype).fill(value)


no_gradient("ConstantFill")

# --- OpenCL ------------------------------------------------------------------

# Element size -> the unsigned type whose bit pattern clEnqueueFillBuffer copies.
_FILL_BITS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def fill_device_array(queue, out, value):
    """Fill the C-contiguous device array ``out`` with ``value`` (already of ``out.dtype``).

    ``clEnqueueFillBuffer`` copies the value's bit pattern (1, 2, 4 or 8
    bytes), so every such dtype works on every device (float64 without fp64
    and float16 without fp16 included) and the driver picks the fastest fill.
    """
    if out.size == 0:
        return None
    bits = _FILL_BITS.get(out.dtype.itemsize)
    if bits is None:
        raise TypeError(f"ConstantFill: OpenCL cannot fill dtype {out.dtype}")
    cl = opencl.require_pyopencl()
    pattern = np.asarray(value, dtype=out.dtype).reshape(1).view(bits)
    event = cl.enqueue_fill_buffer(
        queue, out.base_data, pattern, out.offset, out.nbytes, wait_for=list(out.events) or None
    )
    out.add_event(event)
    return event


@register_opencl_operator("ConstantFill")
@register_cuda_operator("ConstantFill")
class ConstantFillOpenCL(Operator):
    """ConstantFill on an OpenCL device (the shape input of ``input_as_shape`` is read back to the host)."""

    def run_on_device(self):
        first = self.input(0) if self.num_inputs else None
        if first is not None and self.args["input_as_shape"]:
            first = self.backend.to_host(first)
        value_input = self.backend.to_host(self.input(1)) if self.num_inputs > 1 else None
        shape, dtype, value = resolve_fill(self.type, self.args, self.op_def, first, value_input)
        self.backend.check_allocation(self.type, shape, dtype)
        fill_device_array(self.backend.queue, self.output(0, shape, dtype), value)
