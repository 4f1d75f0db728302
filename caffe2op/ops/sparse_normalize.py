# SPDX-License-Identifier: BSD-3-Clause
"""SparseNormalize and Float16SparseNormalize: max-norm / constant-norm of selected embedding rows.

Caffe2's regularizers (``MaxNorm``, ``ConstantNorm``) ran these after each
sparse update, on the rows the update touched.  For every selected row
``r = param.reshape(len(param), -1)[i]``::

    n = ||r||_2
    if use_max_norm and n <= norm:  leave r alone
    else:                           r *= norm / (n + 1e-12)

Differences from Caffe2, all on inputs Caffe2 did not handle: float64 tables
are accepted; out-of-range and negative indices raise ``IndexError`` before
anything is written (Caffe2 had no check); a repeated index normalises its
row once (Caffe2's serial loop rescaled it a second time by about
``norm / (norm + 1e-12)``).  An all-zero row stays zero, as in Caffe2
(which multiplied it by ``norm / 1e-12``), but without ever forming that
factor, so a huge ``norm`` cannot turn it into NaN.
"""

import math

import numpy as np

from .. import _config, opencl
from .._cpu import sparse_normalize as _kernels
from .._validation import (
    FLOAT_DTYPES,
    INDEX_DTYPES,
    index_vector,
    raise_first_bad_index,
    require_dtype,
    require_ndarray,
    require_writeable,
)
from ..core import DeviceType
from ..devices import backend_for
from ..gradient import should_not_do_gradient
from ..registry import Operator, register_cpu_operator, register_cuda_operator, register_opencl_operator
from ..schema import Argument, OpSchema, non_negative_finite, register_schema

__all__ = ["sparse_normalize"]

_INPUTS = [
    ("param", "Embedding table, updated in place; rows are ``param.reshape(len(param), -1)``."),
    ("indices", "Rows to normalise (int32 or int64, any shape, flattened; repeats allowed)."),
    ("grad", "Optional, ignored: kept for compatibility with Caffe2 nets that pass the sparse gradient."),
]
_OUTPUTS = [("param", "The same blob as input 0 (enforced).")]
_ARGS = [
    Argument(
        "use_max_norm",
        bool,
        default=True,
        doc="True: only rows with norm above ``norm`` are scaled down (max-norm). "
        "False: every selected row is scaled to norm ``norm`` (constant-norm).",
    ),
    Argument(
        "norm",
        float,
        default=1.0,
        validator=non_negative_finite,
        doc="Target L2 norm of the rows (finite, >= 0).",
    ),
]
_FORMULA = (
    r"n_i = \lVert W_i \rVert_2,\qquad "
    r"W_i \leftarrow \begin{cases} W_i & \text{if } \mathtt{use\_max\_norm} \text{ and } n_i \le \mathrm{norm}\\"
    r" W_i \cdot \dfrac{\mathrm{norm}}{n_i + 10^{-12}} & \text{otherwise}\end{cases}"
)
_EXAMPLE = """\
>>> import numpy as np, caffe2op
>>> w = np.array([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]], dtype=np.float32)
>>> caffe2op.sparse_normalize(w, np.array([0, 1]), norm=1.0)
array([[0.6, 0.8],
       [0.3, 0.4],
       [6. , 8. ]], dtype=float32)
"""

SPARSE_NORMALIZE_SCHEMA = register_schema(
    OpSchema(
        "SparseNormalize",
        num_inputs=(2, 3),
        num_outputs=1,
        inputs=_INPUTS,
        outputs=_OUTPUTS,
        args=_ARGS,
        enforce_one_to_one_inplace=True,
        doc="Scale the rows of ``param`` selected by ``indices`` to L2 norm ``norm``, in place "
        "(max-norm mode: only the rows above it).  Each distinct row is normalised once, "
        "whatever the number of threads; indices are checked before any row is written.  "
        "float32 and float64 tables (float16 ones run the Float16SparseNormalize kernel).  "
        "No gradient: asking for one raises.",
        formula=_FORMULA,
        example=_EXAMPLE,
    )
)

FLOAT16_SPARSE_NORMALIZE_SCHEMA = register_schema(
    OpSchema(
        "Float16SparseNormalize",
        num_inputs=(2, 3),
        num_outputs=1,
        inputs=[("param", "float16 embedding table, updated in place.")] + _INPUTS[1:],
        outputs=_OUTPUTS,
        args=_ARGS,
        enforce_one_to_one_inplace=True,
        doc="SparseNormalize for float16 tables: norms and scaling are computed in float32 and "
        "each element is rounded back to float16 (round to nearest even).  No gradient: asking "
        "for one raises.",
        formula=_FORMULA,
        example="""\
>>> import numpy as np, caffe2op
>>> w = np.array([[3.0, 4.0], [0.3, 0.4]], dtype=np.float16)
>>> caffe2op.sparse_normalize(w, [0]).dtype
dtype('float16')
>>> w[0].tolist()  # 0.6 and 0.8, rounded to float16
[0.60009765625, 0.7998046875]
""",
    )
)

# Storage type of each table dtype in the kernels (float16 travels as its bits).
_STORAGE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.float16): "uint16_t"}
_INDEX = {np.dtype(np.int32): "int32_t", np.dtype(np.int64): "int64_t"}
_HALF = (np.dtype(np.float16),)


def _specialised(table_dtype, index_dtype):
    """The fused kernel specialised for one (table, index) dtype pair, without per-call dispatch."""
    return _kernels.sparse_normalize_rows.__signatures__[f"{_STORAGE[table_dtype]}|{_INDEX[index_dtype]}"]


_KERNELS = {(t, i): _specialised(t, i) for t in _STORAGE for i in _INDEX}
_RANGE_CHECKS = {i: _kernels.count_out_of_range.__signatures__[_INDEX[i]] for i in _INDEX}


def check_sparse_normalize_args(
    op, param, indices, use_max_norm, norm, *, float16_only=False, n_threads=1, check_range=True
):
    """Validate SparseNormalize's inputs on the host; return ``(indices, use_max_norm, norm)``.

    ``param`` is checked for kind, dtype, rank and writeability; ``indices``
    are flattened to int32/int64 and (with ``check_range``) bounds-checked
    against ``len(param)``.  Nothing is modified.
    """
    require_ndarray(op, "param", param, " (it is updated in place)")
    require_dtype(op, "param", param, _HALF if float16_only else FLOAT_DTYPES)
    if param.ndim == 0:
        raise ValueError(f"{op}: param must have at least 1 dimension (rows), got a 0-d array")
    require_writeable(op, "param", param)
    schema = FLOAT16_SPARSE_NORMALIZE_SCHEMA if float16_only else SPARSE_NORMALIZE_SCHEMA
    use_max_norm = schema.arg("use_max_norm").convert(op, use_max_norm)
    norm = schema.arg("norm").convert(op, norm)
    indices = index_vector(op, "indices", indices)
    n_rows = param.shape[0]
    if check_range and indices.size and _RANGE_CHECKS[indices.dtype](indices, n_rows, n_threads):
        raise_first_bad_index(op, "indices", indices, n_rows)
    return indices, use_max_norm, norm


_FLOAT_SET = frozenset(FLOAT_DTYPES)
_INDEX_SET = frozenset(INDEX_DTYPES)


def _is_plain_call(param, indices, use_max_norm, norm, float16_only):
    """The exact types a training loop passes, all valid: the full checks can be skipped.

    Only accepts, never rejects: anything else goes through
    :func:`check_sparse_normalize_args`, the one place with the rules' messages.
    Calls are made every training step, often on cold caches, so this is one
    expression instead of a dozen function calls.
    """
    return (
        type(param) is np.ndarray
        and (param.dtype == np.float16 if float16_only else param.dtype in _FLOAT_SET)
        and param.ndim > 0
        and param.flags.writeable
        and type(indices) is np.ndarray
        and indices.dtype in _INDEX_SET
        and indices.ndim == 1
        and indices.flags.c_contiguous
        and type(use_max_norm) is bool
        and type(norm) is float
        and 0.0 <= norm < math.inf
    )


def sparse_normalize_cpu(op, param, indices, use_max_norm, norm, *, float16_only=False):
    """Validate, then normalise ``param[indices]`` in place on the CPU.

    The kernel checks every index while it collects the distinct rows, before
    it writes any: an out-of-range index raises IndexError with the table
    untouched.
    """
    if not _is_plain_call(param, indices, use_max_norm, norm, float16_only):
        indices, use_max_norm, norm = check_sparse_normalize_args(
            op, param, indices, use_max_norm, norm, float16_only=float16_only, check_range=False
        )
    if indices.size == 0:
        return param
    n_rows = param.shape[0]
    contiguous = param.flags.c_contiguous
    table = param if contiguous else np.ascontiguousarray(param)
    rows = table.reshape(n_rows, math.prod(param.shape[1:]))
    if table.dtype == np.float16:
        rows = rows.view(np.uint16)
    first_bad = _KERNELS[param.dtype, indices.dtype](rows, indices, use_max_norm, norm, _config.get_num_threads())
    if first_bad >= 0:
        raise_first_bad_index(op, "indices", indices, n_rows)
    if not contiguous:
        np.copyto(param, table)
    return param


def sparse_normalize(param, indices, grad=None, *, use_max_norm=True, norm=1.0, device=None):
    """Normalise the rows of ``param`` selected by ``indices`` to L2 norm ``norm``, in place.

    The functional form of the SparseNormalize operator (and of
    Float16SparseNormalize for float16 tables), running the same kernels
    without a workspace.

    Parameters
    ----------
    param : numpy.ndarray, pyopencl.array.Array or scipy.sparse CSR matrix/array
        Embedding table (float16, float32 or float64, at least 1-D, writable);
        row ``i`` is ``param.reshape(len(param), -1)[i]``.  Updated in place.
        Non-contiguous NumPy arrays are handled (through a temporary copy);
        device arrays must be C-contiguous, and the kernels run on their queue.
        A CSR matrix/array (CPU only): the stored values of the selected rows
        are normalised, the structure is left untouched.
    indices : array_like of int or pyopencl.array.Array
        Rows to normalise: any shape (flattened), int32 or int64 (other
        integer dtypes are converted).  Repeated indices normalise their row
        once; an empty array does nothing.  With a device ``param`` they may
        be a device array of the same context (bounds-checked on the device)
        or host data (checked on the host, then copied).
    grad : object, optional
        Ignored; accepted because Caffe2 nets passed the sparse gradient values.
    use_max_norm : bool, default True
        True: only rows whose norm exceeds ``norm`` are scaled down.  False:
        every selected row is scaled to norm ``norm``.
    norm : float, default 1.0
        Target norm, finite and >= 0.
    device : str or DeviceOption, optional
        For a NumPy ``param``: ``"cpu"`` (the default), or ``"opencl"``,
        ``"opencl:N"``, ``"cuda"``, ``"cuda:N"`` or a DeviceOption to run the
        OpenCL kernel there (``param`` and ``indices`` are copied in, and the
        result is copied back into ``param``).  For a device ``param`` it may
        only name that array's device.

    Returns
    -------
    numpy.ndarray or pyopencl.array.Array
        ``param`` itself.

    Raises
    ------
    TypeError
        If ``param`` is not a NumPy or pyopencl array or not float16/32/64,
        if ``indices`` are not integers, if ``norm``/``use_max_norm`` have the
        wrong type, or if ``param`` is float64 and the device has no fp64.
    ValueError
        If ``param`` is 0-d or read-only, a device ``param`` is not
        C-contiguous, ``norm`` is negative, NaN or infinite, or ``device``
        contradicts where ``param`` lives.
    IndexError
        If an index is negative or ``>= len(param)`` (the message names the
        first one).  ``param`` is left bit-identical.
    RuntimeError
        If ``device`` names an OpenCL or CUDA device that does not exist.

    See Also
    --------
    normalize : normalise every vector along an axis (Caffe2's Normalize).

    Notes
    -----
    Rows are scaled by ``norm / (n + 1e-12)`` where ``n`` is the row's L2
    norm (accumulated in float64 for float32/float64 tables, in float32 for
    float16 ones, as Caffe2 did); with ``use_max_norm`` a row with
    ``n <= norm`` is untouched.  All-zero rows stay zero.  Results are
    identical for any number of threads.

    Examples
    --------
    >>> import numpy as np, caffe2op
    >>> w = np.array([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]])
    >>> caffe2op.sparse_normalize(w, [0, 1, 0], norm=1.0)
    array([[0.6, 0.8],
           [0.3, 0.4],
           [6. , 8. ]])
    >>> caffe2op.sparse_normalize(w, [1], use_max_norm=False, norm=2.0)[1]
    array([1.2, 1.6])
    >>> caffe2op.sparse_normalize(w, [2], device="opencl")[2]  # doctest: +SKIP
    array([0.6, 0.8])
    """
    if device is None and isinstance(param, np.ndarray):
        return sparse_normalize_cpu("SparseNormalize", param, indices, use_max_norm, norm)
    if type(param).__module__.startswith("scipy.sparse"):  # CSR storage: see caffe2op.ops.normalize
        from .normalize.sparse import sparse_normalize_csr

        return sparse_normalize_csr(param, indices, use_max_norm=use_max_norm, norm=norm, device=device)
    return _sparse_normalize_elsewhere("SparseNormalize", param, indices, use_max_norm, norm, device)


@register_cpu_operator("SparseNormalize")
class SparseNormalizeCPU(Operator):
    """SparseNormalize on the CPU (float16 tables use the Float16 kernel)."""

    float16_only = False

    def run_on_device(self):
        sparse_normalize_cpu(
            self.type,
            self.input(0),
            self.input(1),
            self.arg("use_max_norm"),
            self.arg("norm"),
            float16_only=self.float16_only,
        )


@register_cpu_operator("Float16SparseNormalize")
class Float16SparseNormalizeCPU(SparseNormalizeCPU):
    """Float16SparseNormalize on the CPU (float16 tables only)."""

    float16_only = True


# A projection applied after the optimizer step, never differentiated (as in Caffe2).
should_not_do_gradient("SparseNormalize")
should_not_do_gradient("Float16SparseNormalize")

# --- OpenCL ------------------------------------------------------------------
#
# Kernels: opencl_kernels/sparse_normalize.cl (its header comment describes the
# launch protocol, the duplicate handling and the bounds check).

_EMPTY_SLOT = 0xFFFFFFFF
# Positions are uint32 in the kernel's hash set, whose size (a power of two
# >= 2 * positions) must fit its uint32 mask.
_MAX_POSITIONS = 2**31
_MAX_WORK_GROUP = 256
_GROUPS_PER_COMPUTE_UNIT = 256
_CPU_GROUPS_PER_COMPUTE_UNIT = 4
# False runs the GPU launch shape on CPU devices too (the tests use it to
# exercise the local-memory reduction on PoCL).
_CPU_SHAPE_ON_CPU_DEVICES = True


def _launch_shape(kernel, device, block, k):
    """(work-group size, number of work-groups) of the normalisation kernel.

    GPUs: a power of two >= ``block`` (one element per work item, capped by
    the device, the kernel and 256) and up to 256 groups per compute unit.
    CPU devices (PoCL): one work item per group and 4 groups per core, each
    looping over its share of the positions; on 2 cores this ran the
    benchmark's 1,000,000 x 64 case about 4x faster than 64-item groups,
    whose barriers PoCL turns into loops over the work items.
    """
    cl = opencl.require_pyopencl()
    units = max(1, device.max_compute_units)
    if _CPU_SHAPE_ON_CPU_DEVICES and device.type & cl.device_type.CPU:
        return 1, min(k, units * _CPU_GROUPS_PER_COMPUTE_UNIT)
    cap = min(
        _MAX_WORK_GROUP,
        device.max_work_group_size,
        kernel.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, device),
    )
    size = 1
    while size < block and size * 2 <= cap:
        size *= 2
    return size, min(k, units * _GROUPS_PER_COMPUTE_UNIT, 1 << 16)


def enqueue_sparse_normalize(op, queue, info, table, indices, use_max_norm, norm, *, check=True, events=None):
    """Normalise ``table[indices]`` in place on the device of ``queue``; return the last event.

    ``table`` is a C-contiguous device array (float16/32/64) and ``indices``
    a contiguous 1-D int32/int64 device array of the same context; their
    dtypes and the device's fp64 support must already be checked.  With
    ``check`` the indices are bounds-checked on the device first (one extra
    kernel and a 4-byte read, which waits for the queue) and an IndexError is
    raised, the table untouched, if one is out of range.  Without it the
    caller guarantees they are in range (they were checked on the host).
    ``events``, a list, receives ``(step, event)`` pairs for profiling.
    """
    cl = opencl.require_pyopencl()
    k = int(indices.size)
    n_rows = int(table.shape[0])
    block = int(np.prod(table.shape[1:], dtype=np.int64))
    if k == 0:
        return None
    if k > _MAX_POSITIONS:
        raise ValueError(f"{op}: at most {_MAX_POSITIONS} indices per call on OpenCL, got {k}")
    context = queue.context
    defines = opencl.dtype_defines(op, table.dtype, info)
    double = opencl.accumulates_in_double(table.dtype, info)
    defines.update(INDEX_T="int" if indices.dtype == np.int32 else "long", ACC="double" if double else "float")
    if double:
        defines["CAFFE2OP_FP64"] = 1
    program = opencl.get_program(context, "sparse_normalize.cl", defines)

    hash_size = 64
    while hash_size < 2 * k:
        hash_size *= 2
    scratch = cl.Buffer(context, cl.mem_flags.READ_WRITE, 4 * (1 + hash_size))
    pending = list(table.events) + list(indices.events)
    event = cl.enqueue_fill_buffer(queue, scratch, np.uint32(_EMPTY_SLOT), 0, 4 * (1 + hash_size), wait_for=pending)
    steps = events if events is not None else []
    steps.append(("clear", event))
    index_offset = np.uint64(indices.offset // indices.dtype.itemsize)
    if check:
        event = opencl.launch(
            queue,
            opencl.get_kernel(program, "caffe2op_sparse_normalize_check"),
            opencl.elementwise_size(queue, k),
            None,
            indices.base_data,
            index_offset,
            np.uint64(k),
            np.int64(n_rows),
            scratch,
            wait_for=[event],
        )
        steps.append(("check", event))
    if block > 0 and n_rows > 0:
        kernel = opencl.get_kernel(program, "caffe2op_sparse_normalize_fwd")
        wg, groups = _launch_shape(kernel, queue.device, block, k)
        event = opencl.launch(
            queue,
            kernel,
            (groups * wg,),
            (wg,),
            table.base_data,
            np.uint64(table.offset // table.dtype.itemsize),
            np.uint64(block),
            indices.base_data,
            index_offset,
            np.uint32(k),
            scratch,
            np.uint32(hash_size - 1),
            np.int32(bool(use_max_norm)),
            (np.float64 if double else np.float32)(norm),
            cl.LocalMemory(wg * (8 if double else 4)),
            wait_for=[event],
        )
        table.add_event(event)
        steps.append(("normalize", event))
    if check:
        status = np.empty(1, np.uint32)
        cl.enqueue_copy(queue, status, scratch, wait_for=[event])
        if status[0] != _EMPTY_SLOT:
            raise_first_bad_index(op, "indices", indices.get(queue=queue), n_rows)
    return event


def _device_indices(op, backend, indices, n_rows):
    """Indices as a 1-D int32/int64 device array of ``backend``'s context, and whether they still need a check."""
    cl = opencl.require_pyopencl()
    if isinstance(indices, cl.array.Array):
        if indices.context != backend.context:
            other = opencl.backend_of_array(indices)
            raise ValueError(f"{op}: indices live on {other.name} but param lives on {backend.name}")
        if indices.dtype.kind not in "iu":
            raise TypeError(f"{op}: indices must be integers (int32 or int64), got {indices.dtype}")
        if not indices.flags.c_contiguous:
            raise ValueError(f"{op}: device indices must be C-contiguous")
        if indices.dtype not in INDEX_DTYPES:
            indices = indices.astype(np.int64)
        return indices.reshape(-1), True
    host = index_vector(op, "indices", indices)
    if host.size and _RANGE_CHECKS[host.dtype](host, n_rows, _config.get_num_threads()):
        raise_first_bad_index(op, "indices", host, n_rows)
    return backend.from_host(host), False


def sparse_normalize_opencl(op, param, indices, use_max_norm, norm, *, float16_only=False, backend=None, queue=None):
    """Validate, then normalise the rows ``param[indices]`` of a device table in place; return ``param``.

    Everything is checked before any kernel runs (device indices by a bounds
    kernel that runs before the normalisation kernel may write).  ``backend``
    defaults to the array's own; ``queue`` to the array's queue, else the
    backend's.
    """
    cl = opencl.require_pyopencl()
    if not isinstance(param, cl.array.Array):
        raise TypeError(f"{op}: param must be a pyopencl.array.Array on the device, got {type(param).__name__}")
    require_dtype(op, "param", param, _HALF if float16_only else FLOAT_DTYPES)
    if param.ndim == 0:
        raise ValueError(f"{op}: param must have at least 1 dimension (rows), got a 0-d array")
    if not param.flags.c_contiguous:
        raise ValueError(f"{op}: a device param must be C-contiguous")
    backend = backend if backend is not None else opencl.backend_of_array(param)
    queue = queue if queue is not None else (param.queue if param.queue is not None else backend.queue)
    opencl.dtype_defines(op, param.dtype, backend.info)  # TypeError for float64 without fp64
    schema = FLOAT16_SPARSE_NORMALIZE_SCHEMA if float16_only else SPARSE_NORMALIZE_SCHEMA
    use_max_norm = schema.arg("use_max_norm").convert(op, use_max_norm)
    norm = schema.arg("norm").convert(op, norm)
    device_indices, check = _device_indices(op, backend, indices, param.shape[0])
    enqueue_sparse_normalize(op, queue, backend.info, param, device_indices, use_max_norm, norm, check=check)
    return param


def _sparse_normalize_elsewhere(op, param, indices, use_max_norm, norm, device):
    """The functional form's non-default paths: a device ``param``, or ``device=``."""
    target = opencl.resolve_device(device)
    on_cpu = target is None or target.device_type == DeviceType.CPU
    if isinstance(param, np.ndarray):
        if on_cpu:
            return sparse_normalize_cpu(op, param, indices, use_max_norm, norm)
        backend = backend_for(target)  # RuntimeError if the device is missing
        host_indices, use_max_norm, norm = check_sparse_normalize_args(op, param, indices, use_max_norm, norm)
        opencl.dtype_defines(op, param.dtype, backend.info)
        if host_indices.size == 0 or param.size == 0:
            return param
        table = backend.from_host(param)
        enqueue_sparse_normalize(
            op, backend.queue, backend.info, table, backend.from_host(host_indices), use_max_norm, norm, check=False
        )
        np.copyto(param, backend.to_host(table))
        return param
    backend = opencl.backend_of_array(param)
    if backend is None:
        return sparse_normalize_cpu(op, param, indices, use_max_norm, norm)  # raises the TypeError
    if target is not None and (on_cpu or backend_for(target).info.index != backend.info.index):
        raise ValueError(f"{op}: param lives on {backend.name} but device={device!r} was asked for")
    return sparse_normalize_opencl(op, param, indices, use_max_norm, norm, backend=backend)


@register_opencl_operator("SparseNormalize")
@register_cuda_operator("SparseNormalize")
class SparseNormalizeOpenCL(Operator):
    """SparseNormalize on an OpenCL device: bounds-check kernel, then one normalisation kernel."""

    float16_only = False

    def run_on_device(self):
        sparse_normalize_opencl(
            self.type,
            self.input(0),
            self.input(1),
            self.arg("use_max_norm"),
            self.arg("norm"),
            float16_only=self.float16_only,
            backend=self.backend,
            queue=self.backend.queue,
        )


@register_opencl_operator("Float16SparseNormalize")
@register_cuda_operator("Float16SparseNormalize")
class Float16SparseNormalizeOpenCL(SparseNormalizeOpenCL):
    """Float16SparseNormalize on an OpenCL device (vload_half/vstore_half, float arithmetic)."""

    float16_only = True
