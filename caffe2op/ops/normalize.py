# SPDX-License-Identifier: BSD-3-Clause
"""Normalize and NormalizeGradient: L2-normalise every vector along an axis, dense or sparse.

Caffe2's ``Normalize`` (``caffe2/operators/normalize_op.h``) divides every
vector ``v`` along ``axis`` by ``max(||v||_2, 1e-12)``, so an all-zero vector
stays zero.  For a 2-D weight matrix and ``axis=0`` this is the column
normalisation ``W[i, j] / sqrt(sum_i W[i, j]**2)``.  ``NormalizeGradient(X,
dY) -> dX`` is its backward pass, ``dX = dY / n - X * <X, dY> / n**3`` per
vector with the same ``n``.

The functional form :func:`normalize` also takes ``scipy.sparse`` matrices
and arrays (the result keeps the sparsity structure: only the stored values
change) and SparseNormalize's ``norm`` / ``use_max_norm`` modes along an
axis.  :func:`sparse_normalize_csr` is SparseNormalize on the stored values of
a CSR matrix; :func:`caffe2op.sparse_normalize` dispatches to it.

On OpenCL devices (``opencl_kernels/normalize.cl``) the same operators run
on device blobs, and :func:`normalize` takes device arrays,
:class:`~caffe2op.DeviceSparseMatrix` objects and host data with
``device=``; the header comment of the kernel file describes the launch
shapes and why the results are deterministic.  Normalize's gradient maker
emits ``NormalizeGradient([X, dY]) -> dX``; NormalizeGradient itself has no
gradient (``gradient_not_implemented_yet``).

Differences from Caffe2: float16 and float64 arrays are accepted (Caffe2
registered float only); norms of float32 data are accumulated in float64
(Caffe2 summed in float; float16 sums in float32); float32 data are
multiplied by the float32 reciprocal of the norm (Caffe2 divided by it),
which can differ from the quotient by one ulp.  scipy is never imported
here: a sparse input is recognised through ``sys.modules``, so
``import caffe2op`` does not need scipy.
"""

import sys

import numpy as np

from .. import _config, opencl
from .._cpu import normalize as _kernels
from .._validation import FLOAT_DTYPES, index_vector, raise_first_bad_index, require_dtype, require_writeable
from ..core import DeviceType
from ..errors import SchemaError
from ..gradient import GradientMakerBase, gradient_not_implemented_yet, register_gradient
from ..registry import Operator, register_cpu_operator, register_cuda_operator, register_opencl_operator
from ..schema import Argument, OpSchema, non_negative_finite, register_schema

__all__ = ["normalize"]

EPS = 1e-12

_AXIS = Argument(
    "axis",
    int,
    default=-1,
    doc="Axis along which the vectors lie; negative values count from the end (default -1, the last axis).",
)

NORMALIZE_SCHEMA = register_schema(
    OpSchema(
        "Normalize",
        num_inputs=1,
        num_outputs=1,
        inputs=[("X", "float16, float32 or float64 array of any rank >= 1.")],
        outputs=[("Y", "X with every vector along axis scaled to unit L2 norm (same dtype and shape).")],
        args=[_AXIS],
        allow_inplace=[(0, 0)],
        identical_type_and_shape=True,
        doc="Divide every vector along ``axis`` by ``max(||v||_2, 1e-12)``: each vector gets unit "
        "L2 norm and an all-zero vector stays zero.  With a 2-D weight matrix and ``axis=0`` "
        "every column is normalised.  Any axis is handled in place in memory (no transposed "
        "copy); norms are accumulated in float64 (float32 for float16 data) and results do "
        "not depend on the number of threads.  In place (``X -> X``) is allowed.  Gradient: "
        "``NormalizeGradient``.  For scipy.sparse input and the max-norm / constant-norm "
        "modes use the functional form :func:`caffe2op.normalize`.  The gradient needs X, "
        "so an in-place Normalize cannot be differentiated (building a backward pass through "
        "it raises).",
        formula=r"Y_{v} = \frac{X_{v}}{\max\left(\lVert X_{v} \rVert_2,\ 10^{-12}\right)}"
        r"\quad\text{for every vector } X_{v} \text{ along axis}",
        example="""\
>>> import numpy as np, caffe2op
>>> ws = caffe2op.Workspace()
>>> ws.feed_blob("w", np.array([[3.0, 0.0], [4.0, 0.0]], dtype=np.float32))
>>> ws.run_operator_once(caffe2op.create_operator("Normalize", "w", "w", axis=0))
>>> ws.fetch_blob("w")
array([[0.6, 0. ],
       [0.8, 0. ]], dtype=float32)
""",
    )
)

NORMALIZE_GRADIENT_SCHEMA = register_schema(
    OpSchema(
        "NormalizeGradient",
        num_inputs=2,
        num_outputs=1,
        inputs=[("X", "The input of the forward Normalize."), ("dY", "Gradient of the loss with respect to Y.")],
        outputs=[("dX", "Gradient of the loss with respect to X (dtype and shape of X).")],
        args=[_AXIS],
        doc="Backward pass of ``Normalize``: per vector ``x`` along ``axis`` with "
        "``n = max(||x||_2, 1e-12)``, ``dX = dY / n - X * <X, dY> / n**3``.  X and dY must have "
        "the same dtype (float16, float32 or float64) and shape.  Its own gradient (a second "
        "derivative) is not implemented: asking for it raises ``NotImplementedError``.",
        formula=r"\frac{\partial L}{\partial X_{v}} = \frac{dY_{v}}{n_v} - "
        r"X_{v}\,\frac{\langle X_{v}, dY_{v}\rangle}{n_v^{3}},\qquad "
        r"n_v = \max\left(\lVert X_{v} \rVert_2,\ 10^{-12}\right)",
        example="""\
>>> import numpy as np, caffe2op
>>> ws = caffe2op.Workspace()
>>> ws.feed_blob("x", np.array([3.0, 4.0]))
>>> ws.feed_blob("dy", np.array([1.0, 0.0]))
>>> ws.run_operator_once(caffe2op.create_operator("NormalizeGradient", ["x", "dy"], "dx"))
>>> ws.fetch_blob("dx")
array([ 0.128, -0.096])
""",
    )
)

# SparseNormalize's modes, offered by the functional form along an axis.
_NORM = Argument("norm", float, default=1.0, validator=non_negative_finite, doc="Target L2 norm (finite, >= 0).")
_USE_MAX_NORM = Argument(
    "use_max_norm", bool, default=False, doc="Only scale down the vectors whose norm exceeds ``norm``."
)

# Kernel specialisations, picked once per dtype instead of dispatched per call.
_STORAGE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.float16): "uint16_t"}
_INDEX = {np.dtype(np.int32): "int32_t", np.dtype(np.int64): "int64_t"}
_DENSE = {t: _kernels.normalize_dense.__signatures__[s] for t, s in _STORAGE.items()}
_DENSE_GRAD = {t: _kernels.normalize_gradient_dense.__signatures__[s] for t, s in _STORAGE.items()}


def _by_index_and_storage(kernel):
    """The specialisations of a kernel fused over (index type, storage type), keyed by dtypes."""
    return {(i, t): kernel.__signatures__[f"{si}|{st}"] for i, si in _INDEX.items() for t, st in _STORAGE.items()}


_SEGMENT = _by_index_and_storage(_kernels.segment_normalize)
_CROSS_SUMS = _by_index_and_storage(_kernels.cross_partial_sums)
_CROSS_APPLY = _by_index_and_storage(_kernels.cross_apply)
_CHECK_COMPRESSED = {i: _kernels.check_compressed.__signatures__[s] for i, s in _INDEX.items()}
_DISTINCT = {i: _kernels.distinct.__signatures__[s] for i, s in _INDEX.items()}
_HALF = np.dtype(np.float16)

# Cross-direction sums: at most _MAX_CHUNKS chunks of stored values, each with at least
# _CHUNK_MIN_NNZ of them, and at most a quarter as many partial sums (chunks x vectors) as
# stored values, so that zeroing and merging them stays a small part of the work and memory.
_MAX_CHUNKS = 16
_CHUNK_MIN_NNZ = 1 << 15
_VALUES_PER_PARTIAL_SUM = 4

_NO_SEGMENTS = np.empty(0, dtype=np.int64)
_NO_SCALES = np.empty(0, dtype=np.float64)


# ------------------------------------------------------------------ helpers


def scipy_sparse_of(value):
    """``scipy.sparse`` if ``value`` is one of its matrices or arrays, else None (never imports scipy).

    Parameters
    ----------
    value : object
        Anything.

    Returns
    -------
    module or None
        The ``scipy.sparse`` module when ``value`` is sparse.
    """
    sparse = sys.modules.get("scipy.sparse")
    if sparse is not None and sparse.issparse(value):
        return sparse
    return None


def canonical_axis(op, axis, ndim):
    """``axis`` converted to an int in ``[0, ndim)``; negative values count from the end.

    Raises
    ------
    SchemaTypeError
        If ``axis`` is not an int.
    SchemaError
        If it is out of range for rank ``ndim`` (a ValueError).
    """
    axis = _AXIS.convert(op, axis)
    if not -ndim <= axis < ndim:
        valid = f"valid axes are {-ndim}..{ndim - 1}" if ndim else "it has no axes"
        raise SchemaError(f"{op}: axis {axis} is out of range for an input of rank {ndim} ({valid})")
    return axis % ndim


def _storage(array):
    """The kernels' view of float data: float16 travels as its uint16 bit pattern."""
    return array.view(np.uint16) if array.dtype == _HALF else array


def _same_view(a, b):
    """Whether two arrays are the same memory seen the same way."""
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.strides == b.strides
        and a.shape == b.shape
        and a.dtype == b.dtype
    )


def _three_d(array, axis):
    """``array`` (C-contiguous) reshaped to ``(outer, n, inner)`` around ``axis`` (a view)."""
    shape = array.shape
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    return _storage(array).reshape(outer, shape[axis], inner)


def _oriented(x, axis):
    """A C-contiguous array with x's data (``x`` itself, ``x.T``, or a copy) and the axis in it.

    Returns ``(source, axis, transposed)``: an F-contiguous ``x`` is read as
    the C-contiguous ``x.T`` without a copy; other layouts are copied.
    """
    if x.flags.c_contiguous:
        return x, axis, False
    if x.flags.f_contiguous:
        return x.T, x.ndim - 1 - axis, True
    return np.ascontiguousarray(x), axis, False


def _check_out_dense(op, x, out):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{op}: out must be a numpy.ndarray for dense input, got {type(out).__name__}")
    if out.dtype != x.dtype:
        raise TypeError(f"{op}: out must have dtype {x.dtype} (that of the input), got {out.dtype}")
    if out.shape != x.shape:
        raise ValueError(f"{op}: out must have shape {x.shape} (that of the input), got {out.shape}")
    require_writeable(op, "out", out)


def _run_dense(kernel_for, arrays, out, axis, extra_args):
    """Run a dense kernel on ``arrays`` (inputs, all shaped like ``out``) into ``out``.

    Inputs are read through C-contiguous views (F-contiguous ones transposed,
    others copied); ``out`` is written directly when it has the same
    orientation and does not partially overlap an input, else through a
    temporary.
    """
    arrays = [a.view(np.ndarray) for a in arrays]  # subclasses (np.matrix, memmap) as plain views
    first, kernel_axis, transposed = _oriented(arrays[0], axis)
    sources = [first]
    for other in arrays[1:]:
        view = other.T if transposed else other
        sources.append(view if view.flags.c_contiguous else np.ascontiguousarray(view))
    plain_out = out.view(np.ndarray)
    target = plain_out.T if transposed else plain_out
    direct = target.flags.c_contiguous and all(
        _same_view(target, src) or not np.may_share_memory(target, src) for src in sources
    )
    dest = target if direct else np.empty(target.shape, target.dtype)
    kernel_for[out.dtype](*[_three_d(s, kernel_axis) for s in sources], _three_d(dest, kernel_axis), *extra_args)
    if not direct:
        np.copyto(target, dest)
    return out


# -------------------------------------------------------------------- dense


def normalize_dense(op, x, axis, use_max_norm=False, norm=1.0, out=None, backend=None):
    """Validate, then normalise the dense array ``x`` along ``axis`` into ``out`` (new if None).

    ``use_max_norm`` and ``norm`` must already be converted.  ``out`` may be
    ``x`` (in place).  With an OpenCL ``backend`` the work is done there (``x``
    copied in, the result copied back into ``out``).  Returns ``out``.
    """
    require_dtype(op, "X", x, FLOAT_DTYPES)
    if backend is not None:
        opencl.dtype_defines(op, x.dtype, backend.info)  # TypeError: float64 without fp64
    axis = canonical_axis(op, axis, x.ndim)
    if out is None:
        out = np.empty(x.shape, x.dtype, order="F" if (x.flags.f_contiguous and not x.flags.c_contiguous) else "C")
    else:
        _check_out_dense(op, x, out)
    if x.size == 0:
        return out
    if backend is not None:
        work = backend.from_host(x.view(np.ndarray))
        _enqueue_dense(op, backend.queue, backend, [work], work, axis, (use_max_norm, norm))
        np.copyto(out.view(np.ndarray), backend.to_host(work))
        return out
    return _run_dense(_DENSE, [x], out, axis, (use_max_norm, norm, _config.get_num_threads()))


def check_gradient_inputs(op, x, dy, axis):
    """Validate NormalizeGradient's inputs; return the axis in ``[0, x.ndim)``."""
    for name, value in (("X", x), ("dY", dy)):
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(value).__name__}")
    require_dtype(op, "X", x, FLOAT_DTYPES)
    if dy.dtype != x.dtype:
        raise TypeError(f"{op}: dY must have the dtype of X ({x.dtype}), got {dy.dtype}")
    if dy.shape != x.shape:
        raise ValueError(f"{op}: dY must have the shape of X {x.shape}, got {dy.shape}")
    return canonical_axis(op, axis, x.ndim)


def normalize_gradient_dense(op, x, dy, axis, out=None):
    """Validate, then compute NormalizeGradient's ``dX`` from ``x`` and ``dy`` into ``out`` (new if None)."""
    axis = check_gradient_inputs(op, x, dy, axis)
    if out is None:
        out = np.empty(x.shape, x.dtype)
    else:
        _check_out_dense(op, x, out)
    if x.size == 0:
        return out
    return _run_dense(_DENSE_GRAD, [x, dy], out, axis, (_config.get_num_threads(),))


# ------------------------------------------------------------------- sparse


def _index_arrays(indptr, indices):
    """``indptr`` and ``indices`` as int32/int64 arrays of one dtype (the kernels take one index type)."""
    common = np.promote_types(indptr.dtype, indices.dtype)
    if common not in _INDEX:
        common = np.dtype(np.int64)
    return np.ascontiguousarray(indptr, dtype=common), np.ascontiguousarray(indices, dtype=common)


def _checked_structure(op, name, matrix):
    """``(indptr, indices, nnz)`` of a CSR/CSC matrix, checked so that the kernels can trust them.

    Raises
    ------
    ValueError
        If ``indptr`` has the wrong length, does not start at 0, decreases or
        runs past ``indices``/``data``, or a stored index is out of range.
    """
    major, minor = (0, 1) if matrix.format == "csr" else (1, 0)
    n_major, n_minor = matrix.shape[major], matrix.shape[minor]
    if matrix.indptr.ndim != 1 or matrix.indptr.shape[0] != n_major + 1:
        raise ValueError(
            f"{op}: {name}.indptr must have {n_major + 1} entries for a {matrix.format.upper()} matrix of shape "
            f"{matrix.shape}, got shape {matrix.indptr.shape}"
        )
    if matrix.indptr.dtype.kind not in "iu" or matrix.indices.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name}.indptr and {name}.indices must be integers")
    indptr, indices = _index_arrays(matrix.indptr, matrix.indices)
    what, position = _CHECK_COMPRESSED[indptr.dtype](indptr, indices, n_minor)
    if what == 0:
        raise ValueError(
            f"{op}: {name}.indptr is not a valid index pointer (it must start at 0, never decrease and end "
            f"within indices; first bad entry at position {position})"
        )
    if what == 1:
        raise ValueError(
            f"{op}: {name}.indices[{position}] = {int(indices[position])} is out of range for "
            f"{n_minor} {'columns' if matrix.format == 'csr' else 'rows'}"
        )
    nnz = int(indptr[-1])
    if matrix.data.ndim != 1 or matrix.data.shape[0] < nnz:
        raise ValueError(f"{op}: {name}.data must be 1-D with at least {nnz} values, got shape {matrix.data.shape}")
    return indptr, indices[:nnz], nnz


def _canonical_copy(matrix):
    """A copy of ``matrix`` with duplicate entries summed (scipy sums float16 in float32, rounded back)."""
    half = matrix.dtype == _HALF
    canon = matrix.astype(np.float32) if half else matrix.copy()
    canon.sum_duplicates()
    if half:
        canon.data = canon.data.astype(np.float16)
    return canon


def _n_chunks(nnz, n_minor):
    """Chunks of the cross-direction sums: a function of the shape only, never of the thread count."""
    return max(1, min(_MAX_CHUNKS, nnz // _CHUNK_MIN_NNZ, nnz // (_VALUES_PER_PARTIAL_SUM * max(n_minor, 1))))


def _segments(mode, indptr, src, dst, rule, rows=None, scales=_NO_SCALES):
    """Run the segment kernel (``segment_normalize`` in ``pyx/normalize.pyx``) on every segment or on ``rows``.

    ``rule`` is ``(use_max_norm, norm, additive_eps)``.
    """
    every = rows is None
    _SEGMENT[indptr.dtype, src.dtype](
        indptr, _storage(src), _storage(dst), _NO_SEGMENTS if every else rows, every, scales, mode, *rule,
        _config.get_num_threads(),
    )  # fmt: skip


def _canonical_data(op, w):
    """``(indptr, indices, data)`` of ``w`` with duplicate entries summed (a checked copy)."""
    canon = _canonical_copy(w)
    indptr, indices, nnz = _checked_structure(op, "W", canon)
    return indptr, indices, np.ascontiguousarray(canon.data[:nnz])


def _normalize_segments(op, w, indptr, src, dst, rule, rows=None):
    """Normalise the stored segments of CSR/CSC ``w`` (every one, or the distinct ``rows``) from src into dst.

    With duplicate entries a segment's norm is that of its summed entries,
    and its scale is applied to every stored part, so the structure is kept.
    """
    if w.has_canonical_format:
        _segments(_kernels.SEGMENT_NORMALIZE, indptr, src, dst, rule, rows)
        return
    c_indptr, _, c_data = _canonical_data(op, w)
    scales = np.empty(indptr.shape[0] - 1 if rows is None else rows.shape[0], dtype=np.float64)
    _segments(_kernels.SEGMENT_SCALES, c_indptr, c_data, c_data, rule, rows, scales)
    _segments(_kernels.SEGMENT_APPLY, indptr, src, dst, rule, rows, scales)


def _normalize_cross(op, w, indices, src, dst, rule):
    """Normalise the vectors across the compressed direction of CSR/CSC ``w`` (CSR columns, CSC rows)."""
    n_threads = _config.get_num_threads()
    n_minor = w.shape[1] if w.format == "csr" else w.shape[0]
    sum_indices, sum_data = (indices, src) if w.has_canonical_format else _canonical_data(op, w)[1:]
    partial = np.empty((_n_chunks(sum_data.shape[0], n_minor), n_minor), dtype=np.float64)
    _CROSS_SUMS[sum_indices.dtype, sum_data.dtype](sum_indices, _storage(sum_data), partial, n_threads)
    _kernels.cross_scales(partial, sum_data.dtype == _HALF, *rule, n_threads)
    _CROSS_APPLY[indices.dtype, src.dtype](indices, _storage(src), _storage(dst), partial[0], n_threads)


def _check_out_sparse(op, w, out):
    sparse = scipy_sparse_of(out)
    if sparse is None:
        raise TypeError(
            f"{op}: out must be a scipy.sparse {w.format.upper()} matrix or array for sparse input, "
            f"got {type(out).__name__}"
        )
    if out.format != w.format:
        raise TypeError(f"{op}: out must have the format of the input ({w.format}), got {out.format}")
    if out.dtype != w.dtype:
        raise TypeError(f"{op}: out must have dtype {w.dtype} (that of the input), got {out.dtype}")
    if out.shape != w.shape:
        raise ValueError(f"{op}: out must have shape {w.shape} (that of the input), got {out.shape}")
    same_structure = (out.indptr is w.indptr or np.array_equal(out.indptr, w.indptr)) and (
        out.indices is w.indices or (out.indices.shape == w.indices.shape and np.array_equal(out.indices, w.indices))
    )
    if not same_structure:
        raise ValueError(
            f"{op}: out must have the sparsity structure of the input (equal indptr and indices); "
            "create it with W.copy(), or pass out=W to normalise in place"
        )
    require_writeable(op, "out.data", out.data)


def _new_with_data(w, data, nnz):
    """A matrix of ``w``'s class and format with a copy of ``w``'s structure (dtypes kept) and ``data``."""
    indices = w.indices[:nnz].copy()
    result = type(w)((data, indices, w.indptr), shape=w.shape, copy=False)
    # scipy may narrow int64 index arrays to int32: keep them exactly as they were.
    result.indices = indices
    result.indptr = w.indptr.copy()
    result.data = data
    return result


def normalize_sparse(op, w, axis, use_max_norm=False, norm=1.0, out=None, backend=None):
    """Validate, then normalise the scipy.sparse matrix ``w`` along ``axis`` (see :func:`normalize`).

    With an OpenCL ``backend`` the values are normalised there (the matrix
    copied in, the new values copied back).
    """
    fmt = w.format
    if fmt not in ("csr", "csc", "coo"):
        raise TypeError(
            f"{op}: sparse input must be CSR, CSC or COO, got {type(w).__name__} (format {fmt!r}); "
            "convert it with .tocsr() or .tocsc()"
        )
    if len(w.shape) != 2:
        raise ValueError(f"{op}: sparse input must be 2-D, got shape {w.shape}")
    require_dtype(op, "W", w, FLOAT_DTYPES)
    if backend is not None:
        opencl.dtype_defines(op, w.dtype, backend.info)  # TypeError: float64 without fp64
    axis = canonical_axis(op, axis, 2)
    if fmt == "coo":
        if out is not None:
            raise ValueError(
                f"{op}: out is not supported for COO input (it is converted to CSR/CSC with duplicate "
                "entries summed, so the result has a new structure); pass out=None"
            )
        if w.dtype == _HALF:
            raise TypeError(f"{op}: scipy cannot convert float16 COO matrices; convert the data to float32 first")
        compressed = w.tocsr() if axis == 1 else w.tocsc()
        compressed.sum_duplicates()
        normalize_sparse(op, compressed, axis, use_max_norm, norm, out=compressed, backend=backend)
        return compressed.tocoo()
    indptr, indices, nnz = _checked_structure(op, "W", w)
    if out is not None and out is not w:
        _check_out_sparse(op, w, out)
    elif out is w:
        require_writeable(op, "W.data", w.data)
    src = w.data[:nnz]
    if out is None:
        dst = np.empty(nnz, dtype=w.dtype)
        result = _new_with_data(w, dst, nnz)
    else:
        result = out
        dst = out.data[:nnz]
    if nnz == 0:
        return result
    if backend is not None:
        on_device = opencl.DeviceSparseMatrix.from_scipy(w, backend)
        normalize_sparse_opencl(op, on_device, axis, use_max_norm, norm, out=on_device)
        dst[...] = backend.to_host(on_device.data)[:nnz]
        return result
    direct_dst = dst.flags.c_contiguous and (_same_view(dst, src) or not np.may_share_memory(dst, src))
    work_src = src if src.flags.c_contiguous else np.ascontiguousarray(src)
    work_dst = dst if direct_dst else np.empty(dst.shape, dst.dtype)
    rule = (use_max_norm, norm, False)
    if (w.format == "csr") == (axis == 1):
        _normalize_segments(op, w, indptr, work_src, work_dst, rule)
    else:
        _normalize_cross(op, w, indices, work_src, work_dst, rule)
    if not direct_dst:
        np.copyto(dst, work_dst)
    return result


def sparse_normalize_csr(param, indices, *, use_max_norm=True, norm=1.0, device=None, op="SparseNormalize"):
    """SparseNormalize on the stored values of a CSR matrix: the rows ``indices`` are normalised in place.

    Each distinct selected row ``r`` (its stored values; duplicate entries
    count as their sum) with L2 norm ``n`` is left alone when
    ``use_max_norm and n <= norm`` or ``n == 0``, else multiplied by
    ``norm / (n + 1e-12)``: exactly SparseNormalize on ``param.toarray()``.
    The structure (``indptr``, ``indices``, explicit zeros) is untouched.

    Parameters
    ----------
    param : scipy.sparse.csr_matrix or scipy.sparse.csr_array
        2-D, float16/float32/float64, writable data.  Updated in place.
    indices : array_like of int
        Rows to normalise (any shape, flattened; repeats normalise once).
    use_max_norm : bool, default True
        Only scale down rows whose norm exceeds ``norm``.
    norm : float, default 1.0
        Target norm, finite and >= 0.
    device : str or DeviceOption, optional
        None or the CPU: sparse storage is normalised on the CPU only.
    op : str, default "SparseNormalize"
        Operator name used in error messages.

    Returns
    -------
    scipy.sparse.csr_matrix or scipy.sparse.csr_array
        ``param`` itself.

    Raises
    ------
    TypeError
        If ``param`` is not CSR or not float, or the indices are not integers.
    ValueError
        If ``param`` is not 2-D, its data is read-only or its structure is
        invalid, ``norm`` is negative or not finite, or ``device`` is not the
        CPU.
    IndexError
        If an index is negative or ``>= param.shape[0]``; ``param`` is left
        bit-identical.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, caffe2op
    >>> w = sp.csr_array(np.array([[3.0, 0.0, 4.0], [0.0, 0.3, 0.4]]))
    >>> caffe2op.sparse_normalize(w, [0, 1]).toarray()
    array([[0.6, 0. , 0.8],
           [0. , 0.3, 0.4]])
    """
    if device is not None and opencl.resolve_device(device).device_type != DeviceType.CPU:
        raise ValueError(f"{op}: a scipy.sparse param is normalised on the CPU only, got device={device!r}")
    if getattr(param, "format", None) != "csr":
        raise TypeError(
            f"{op}: a sparse param must be CSR (a csr_matrix or csr_array), got {type(param).__name__}; "
            "convert it with .tocsr()"
        )
    if len(param.shape) != 2:
        raise ValueError(f"{op}: a sparse param must be 2-D, got shape {param.shape}")
    require_dtype(op, "param", param, FLOAT_DTYPES)
    use_max_norm = Argument("use_max_norm", bool).convert(op, use_max_norm)
    norm = _NORM.convert(op, norm)
    require_writeable(op, "param.data", param.data)
    index = index_vector(op, "indices", indices)
    n_rows = param.shape[0]
    if index.size and (index.min() < 0 or index.max() >= n_rows):
        raise_first_bad_index(op, "indices", index, n_rows)
    indptr, _, nnz = _checked_structure(op, "param", param)
    if index.size == 0 or nnz == 0:
        return param
    rows = _DISTINCT[index.dtype](index, n_rows)
    data = param.data
    work = data[:nnz] if data.flags.c_contiguous else np.ascontiguousarray(data[:nnz])
    _normalize_segments(op, param, indptr, work, work, (use_max_norm, norm, True), rows)
    if work is not data and not np.shares_memory(work, data):
        data[:nnz] = work
    return param


# --------------------------------------------------------------- functional


def normalize(W, *, axis=-1, norm=1.0, use_max_norm=False, out=None, device=None):
    """Scale every vector of ``W`` along ``axis`` to L2 norm ``norm`` (Caffe2's Normalize by default).

    With the defaults every vector ``v`` becomes ``v / max(||v||_2, 1e-12)``:
    exactly the Normalize operator, for dense arrays of any rank and for
    ``scipy.sparse`` matrices and arrays, whose sparsity is kept.

    Parameters
    ----------
    W : array_like, scipy.sparse matrix/array, pyopencl.array.Array or DeviceSparseMatrix
        float16, float32 or float64 data.  Dense: any rank >= 1.  Sparse:
        2-D CSR or CSC (the result has the same format and structure: equal
        ``indptr`` and ``indices``, explicit zeros kept, only ``data``
        changes), or COO (converted to CSR for ``axis=1`` / CSC for
        ``axis=0`` with **duplicate entries summed**, normalised, and returned
        as a new COO matrix in canonical order).  Other sparse formats (DIA,
        LIL, DOK, BSR) are rejected.  CSR/CSC with duplicate entries are
        handled: a vector's norm is that of its summed entries, and every
        stored part is scaled, so the structure is still unchanged.  On a
        device: a C-contiguous ``pyopencl.array.Array`` (the kernels run on
        its queue, the result stays on its device) or a
        :class:`~caffe2op.DeviceSparseMatrix` (CSR/CSC on a device, same
        rules as scipy's; float64 needs a device with ``cl_khr_fp64``).
    axis : int, default -1
        Axis along which the vectors lie; negative values count from the end.
        For a 2-D matrix ``axis=0`` normalises columns and ``axis=1`` rows.
    norm : float, default 1.0
        Target L2 norm of the vectors, finite and >= 0.
    use_max_norm : bool, default False
        True: only vectors whose norm exceeds ``norm`` are scaled (down) to
        ``norm``; the others are untouched (SparseNormalize's max-norm mode).
    out : numpy.ndarray or scipy.sparse matrix, optional
        Where to write the result.  Dense: an array of ``W``'s shape and
        dtype; ``out=W`` normalises in place.  Sparse (CSR/CSC): ``W`` itself
        (in place: only ``W.data`` is rewritten), or a matrix of the same
        format, dtype, shape and structure (equal ``indptr`` and ``indices``,
        e.g. ``W.copy()``) whose ``data`` is overwritten.  Not allowed for
        COO input.  On a device: a C-contiguous ``pyopencl.array.Array`` of
        ``W``'s context for a device array (``out=W`` in place; an ``out``
        overlapping ``W`` otherwise is written through a temporary), a
        DeviceSparseMatrix with ``W``'s structure (e.g. ``W.copy()``, or ``W``
        itself) for a device sparse matrix.  Default: a new array / matrix.
    device : str or DeviceOption, optional
        Where to compute for host data (NumPy or scipy): ``"cpu"`` or None
        (the CPU kernels), or ``"opencl"``, ``"opencl:N"``, ``"cuda"``,
        ``"cuda:N"`` or a DeviceOption to run the OpenCL kernels there: the
        data are copied in and the result copied back into a new host object
        or into ``out`` (``out=W`` updates ``W`` in place), exactly as on the
        CPU.  For device input it may only name that input's device.

    Returns
    -------
    numpy.ndarray, scipy.sparse matrix/array, pyopencl.array.Array or DeviceSparseMatrix
        ``out`` when given, else a new array (dense) or a new sparse object
        of ``W``'s class with copies of ``W``'s index arrays (their dtypes
        kept), on ``W``'s device for device input.

    Raises
    ------
    TypeError
        If the data are not float16/32/64 (or float64 on a device without
        fp64), the sparse format is not CSR, CSC or COO, or ``out`` has the
        wrong kind, format or dtype.
    ValueError
        If ``axis`` is out of range (a :class:`~caffe2op.SchemaError`),
        ``norm`` is negative or not finite, a sparse input is not 2-D or has
        an invalid structure, ``out`` has the wrong shape or structure, is
        read-only or lives on another device, a device array is not
        C-contiguous, or ``device`` contradicts where ``W`` lives.  Nothing is
        modified when an error is raised.
    RuntimeError
        If ``device`` names an OpenCL or CUDA device that does not exist.

    See Also
    --------
    sparse_normalize : SparseNormalize on selected rows of an embedding table.

    Notes
    -----
    For a vector ``v`` with ``n = ||v||_2`` the result is:

    * ``use_max_norm=True`` and ``n <= norm``: ``v`` unchanged (the rule of
      SparseNormalize);
    * otherwise ``v * norm / max(n, 1e-12)`` (the eps rule of Normalize).

    So an all-zero vector stays zero in every mode, a vector with a NaN
    propagates NaN, and in max-norm mode a scaled vector ends with norm
    ``norm`` up to rounding.  SparseNormalize itself scales by
    ``norm / (n + 1e-12)``: the two agree to a relative ``1e-12 / n``, below
    float32 resolution (and equal exactly for ``n == 0``); they differ only
    for ``0 < n < 1e-12`` in constant-norm mode, where this function
    amplifies by ``norm / 1e-12`` instead of ``norm / (n + 1e-12)``.

    Norms are accumulated in float64 (float32 for float16 data).  float64
    data are scaled in float64; float32 and float16 data are multiplied in
    float32 by the scale rounded to float32, as Caffe2 did (within one ulp of
    the exact quotient; float16 results rounded to nearest even).  Any axis of a C- or F-contiguous array is
    processed in place in memory (other layouts through one contiguous
    copy); sparse input is never densified.  Results are bit-identical for
    any number of threads.  ``sklearn.preprocessing.normalize(X, norm="l2",
    axis=a)`` gives the same values except that it takes ``axis=1`` as
    default and returns a CSC result for CSR input along ``axis=0``.

    The OpenCL kernels (``opencl_kernels/normalize.cl``) compute the same
    formulas with the same precision (float32 data accumulate in float64 on
    devices with fp64, in float32 on others); they sum in another order than
    the CPU kernels, so the two agree to rounding, and each device repeats
    its own results bit for bit.  One kernel launch per call; a device
    sparse matrix's structure is analysed on the host once (it is kept with
    the matrix) and nothing but the values moves afterwards.

    Examples
    --------
    >>> import numpy as np, caffe2op
    >>> w = np.array([[3.0, 0.0], [4.0, 0.0]])
    >>> caffe2op.normalize(w, axis=0)
    array([[0.6, 0. ],
           [0.8, 0. ]])
    >>> caffe2op.normalize(np.array([[6.0, 8.0], [0.3, 0.4]]), use_max_norm=True, norm=5.0)
    array([[3. , 4. ],
           [0.3, 0.4]])

    Sparse input keeps its structure:

    >>> import scipy.sparse as sp
    >>> s = sp.csr_array(np.array([[3.0, 0.0, 1.0], [4.0, 0.0, 0.0]]))
    >>> r = caffe2op.normalize(s, axis=0)
    >>> r.format, r.nnz, r.toarray()
    ('csr', 3, array([[0.6, 0. , 1. ],
           [0.8, 0. , 0. ]]))

    On an OpenCL device (host data copied in and out, or device data in place):

    >>> caffe2op.normalize(w, axis=0, device="opencl")  # doctest: +SKIP
    array([[0.6, 0. ],
           [0.8, 0. ]])
    >>> from caffe2op.opencl import backend_for
    >>> d = backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL)).from_host(w)  # doctest: +SKIP
    >>> caffe2op.normalize(d, axis=0, out=d).get()  # doctest: +SKIP
    array([[0.6, 0. ],
           [0.8, 0. ]])
    """
    op = "Normalize"
    norm = _NORM.convert(op, norm)
    use_max_norm = _USE_MAX_NORM.convert(op, use_max_norm)
    backend = None
    if device is not None or isinstance(W, opencl.DeviceSparseMatrix) or type(W).__module__.startswith("pyopencl"):
        target = opencl.resolve_device(device)
        on_cpu = target is None or target.device_type == DeviceType.CPU
        home = W.backend if isinstance(W, opencl.DeviceSparseMatrix) else opencl.backend_of_array(W)
        if home is not None:
            if target is not None and (on_cpu or opencl.backend_for(target).info.index != home.info.index):
                raise ValueError(f"{op}: W lives on {home.name} but device={device!r} was asked for")
            if isinstance(W, opencl.DeviceSparseMatrix):
                return normalize_sparse_opencl(op, W, axis, use_max_norm, norm, out)
            return normalize_opencl(op, W, axis, use_max_norm, norm, out, backend=home)
        if not on_cpu:
            backend = opencl.backend_for(target)  # RuntimeError if there is no such device
    if scipy_sparse_of(W) is not None:
        return normalize_sparse(op, W, axis, use_max_norm, norm, out, backend)
    if scipy_sparse_of(out) is not None:
        raise TypeError(f"{op}: out must be a numpy.ndarray for dense input, got {type(out).__name__}")
    x = W if isinstance(W, np.ndarray) else np.asarray(W)
    return normalize_dense(op, x, axis, use_max_norm, norm, out, backend)


# ---------------------------------------------------------------- operators


def _require_array(op, name, value):
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(value).__name__}")
    return value


@register_cpu_operator("Normalize")
class NormalizeCPU(Operator):
    """Normalize on the CPU (in place or out of place, any axis, float16/32/64)."""

    def run_on_device(self):
        x = _require_array(self.type, "X", self.input(0))
        require_dtype(self.type, "X", x, FLOAT_DTYPES)
        axis = canonical_axis(self.type, self.arg("axis"), x.ndim)
        normalize_dense(self.type, x, axis, out=self.output(0, x.shape, x.dtype))


@register_cpu_operator("NormalizeGradient")
class NormalizeGradientCPU(Operator):
    """NormalizeGradient on the CPU."""

    def run_on_device(self):
        x, dy = self.input(0), self.input(1)
        axis = check_gradient_inputs(self.type, x, dy, self.arg("axis"))
        normalize_gradient_dense(self.type, x, dy, axis, out=self.output(0, x.shape, x.dtype))


@register_gradient("Normalize")
class GetNormalizeGradient(GradientMakerBase):
    """Normalize's gradient maker: ``NormalizeGradient([X, dY]) -> dX`` (Caffe2's ``GetNormalizeGradient``).

    The forward operator's ``axis`` reaches the gradient operator with the
    other copied arguments (see :func:`caffe2op.get_gradient_defs`).  The
    gradient reads the forward *input*, so a Normalize that overwrote its
    input (``X -> X``) cannot be differentiated.  Caffe2's backward-pass
    algorithm would not notice (for an in-place operator the input's name is
    also the output's, at the output's version) and would silently compute
    the gradient from the normalised output, wrong by the factor ``||x||``;
    this maker raises a ``RuntimeError`` instead, worded like the builder's
    version errors.

    Parameters
    ----------
    op_def : OperatorDef
        The Normalize operator.
    g_output : list
        The gradient of its output (a dense gradient's blob name).

    Examples
    --------
    >>> import caffe2op
    >>> fwd = caffe2op.create_operator("Normalize", "w", "w_unit", axis=0)
    >>> ops, g_input = caffe2op.get_gradient_defs(fwd, ["w_unit_grad"])
    >>> ops[0].describe(), g_input
    ('NormalizeGradient(w, w_unit_grad) -> (w_grad)  axis=0', ['w_grad'])
    """

    def get_gradient_defs(self):
        """``[NormalizeGradient([X, dY], [dX])]``, recording ``X_grad`` as X's gradient.

        Returns
        -------
        list of OperatorDef
            The one NormalizeGradient operator.

        Raises
        ------
        RuntimeError
            If the Normalize ran in place (its input is lost).
        ValueError
            If the output gradient is sparse or not provided.
        """
        if self.I(0) == self.O(0):
            raise RuntimeError(
                f"Normalize: the gradient needs input {self.I(0)!r} at the version before this operator, but "
                "the operator overwrote it in place (a later version); write the output to another blob to "
                "differentiate through Normalize"
            )
        return self.single_gradient_def("NormalizeGradient", "", [self.I(0), self.GO(0)], [self.GI(0)])


# A second derivative exists but is not implemented (Caffe2 registered none either):
# asking for it raises instead of silently giving zero.
gradient_not_implemented_yet("NormalizeGradient")


# ------------------------------------------------------------------- OpenCL
#
# Kernels: opencl_kernels/normalize.cl (its header comment describes the two
# dense launch shapes, the sparse kernels and why results are deterministic).

_MAX_WORK_GROUP = 256
_COLUMN_WORK_GROUP = 64
_GROUPS_PER_COMPUTE_UNIT = 256
# CPU devices: a columns work item takes up to this many chunks of 8 vectors (2048 columns),
# aiming at _CPU_ITEMS_PER_COMPUTE_UNIT work items per core.
_CPU_COLUMN_STRIP = 256
_CPU_ITEMS_PER_COMPUTE_UNIT = 4
# Vectors at least this long get a work-group each on GPUs (shorter ones a work item).
_GPU_GROUP_MIN_LENGTH = 64
# False runs the GPU launch shapes on CPU devices too (the tests use it to exercise
# the local-memory reductions on PoCL).
_CPU_SHAPE_ON_CPU_DEVICES = True


def _opencl_program(op, backend, dtype, ptr_dtype=None):
    """(program, ACC numpy type) of normalize.cl for ``dtype`` (TypeError for float64 without fp64)."""
    defines = opencl.dtype_defines(op, dtype, backend.info)
    double = opencl.accumulates_in_double(dtype, backend.info)
    defines.update(ACC="double" if double else "float", PTR_T="int" if ptr_dtype == np.dtype(np.int32) else "long")
    defines["C2O_COLUMN_STRIP"] = _column_strip(backend.queue.device)
    if double:
        defines["CAFFE2OP_FP64"] = 1
    return opencl.get_program(backend.context, "normalize.cl", defines), (np.float64 if double else np.float32)


def _column_strip(device):
    """Most chunks of 8 vectors per work item of the columns kernels (a build option)."""
    return _CPU_COLUMN_STRIP if _on_cpu_device(device) else 1


def _on_cpu_device(device):
    cl = opencl.require_pyopencl()
    return _CPU_SHAPE_ON_CPU_DEVICES and bool(device.type & cl.device_type.CPU)


def _group_launch(kernel, device, n, n_vectors):
    """(work-group size, number of work-groups) of a work-group-per-vector kernel.

    CPU devices (PoCL): one work item per group (its chunks of 8 become
    vector instructions; barriers would turn into loops over the items).
    GPUs: a power of two covering the vector in chunks of 8, at most 256.
    """
    cl = opencl.require_pyopencl()
    units = max(1, device.max_compute_units)
    groups = int(min(n_vectors, units * _GROUPS_PER_COMPUTE_UNIT, 1 << 20))
    if _on_cpu_device(device):
        return 1, groups
    cap = min(
        _MAX_WORK_GROUP,
        device.max_work_group_size,
        kernel.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, device),
    )
    size = 1
    while size * 8 < n and size * 2 <= cap:
        size *= 2
    return size, groups


def _item_launch(kernel, device, n_items):
    """(global size, local size) of a work-item-per-vector kernel (the kernel skips the padding).

    On CPU devices a work-group runs on one core, so groups shrink until
    every core gets several of them.
    """
    cl = opencl.require_pyopencl()
    local = min(
        _COLUMN_WORK_GROUP,
        device.max_work_group_size,
        kernel.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, device),
    )
    if _on_cpu_device(device):
        local = max(1, min(local, n_items // (max(1, device.max_compute_units) * _CPU_ITEMS_PER_COMPUTE_UNIT)))
    return ((n_items + local - 1) // local * local,), (local,)


def _uses_groups(device, outer, n, inner):
    """Whether a dense call runs the work-group-per-vector kernel (else the block-of-columns one)."""
    if _on_cpu_device(device):
        return inner == 1
    if inner == 1:
        return n >= _GPU_GROUP_MIN_LENGTH
    # Few long vectors: a work-group each keeps the device busy; otherwise a work item per block.
    blocks = outer * ((inner + 7) // 8)
    return blocks < max(1, device.max_compute_units) * 32 and n >= 8 * _GPU_GROUP_MIN_LENGTH


def _element_offset(array):
    return np.uint64(array.offset // array.dtype.itemsize)


def _overlap(a, b):
    """'same' (one array), 'partial' (shared bytes, different views) or None, for two device arrays."""
    if a is b:
        return "same"
    if a.base_data is None or b.base_data is None or a.base_data != b.base_data:
        return None
    if a.offset == b.offset and a.nbytes == b.nbytes:
        return "same"
    if a.offset < b.offset + b.nbytes and b.offset < a.offset + a.nbytes:
        return "partial"
    return None


def _shape3(shape, axis):
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    return outer, int(shape[axis]), inner


def _enqueue_dense(op, queue, backend, arrays, out, axis, rule):
    """Launch the forward (``rule`` given, ``arrays == [x]``) or backward (``rule`` None, ``[x, dy]``) kernel.

    Everything is already checked.  ``out`` may be ``x`` (forward in place);
    an ``out`` that partially overlaps an input is written through a temporary.
    """
    cl = opencl.require_pyopencl()
    x = arrays[0]
    if any(_overlap(out, a) == "partial" for a in arrays):
        tmp = cl.array.empty(queue, out.shape, out.dtype)
        _enqueue_dense(op, queue, backend, arrays, tmp, axis, rule)
        return opencl.copy_array(queue, tmp, out)
    outer, n, inner = _shape3(x.shape, axis)
    program, acc = _opencl_program(op, backend, x.dtype)
    device = queue.device
    groups = _uses_groups(device, outer, n, inner)
    forward = rule is not None
    name = f"caffe2op_normalize{'' if groups else '_columns'}_{'fwd' if forward else 'bwd'}"
    kernel = opencl.get_kernel(program, name)
    buffers = []
    for a in arrays:
        buffers += [a.base_data, _element_offset(a)]
    buffers += [out.base_data, _element_offset(out)]
    if groups:
        wg, n_groups = _group_launch(kernel, device, n, outer * inner)
        sizes = ((wg * n_groups,), (wg,))
        shape_args = [np.uint64(outer * inner), np.uint64(n), np.uint64(inner)]
    else:
        chunks = (inner + 7) // 8
        per_item = 1
        if _on_cpu_device(device):
            wanted = max(1, device.max_compute_units) * _CPU_ITEMS_PER_COMPUTE_UNIT
            per_item = int(min(_CPU_COLUMN_STRIP, max(1, -(-(outer * chunks) // wanted)), chunks))
        n_items = outer * -(-chunks // per_item)
        sizes = _item_launch(kernel, device, n_items)
        shape_args = [np.uint64(n_items), np.uint64(n), np.uint64(inner), np.uint32(per_item)]
    extra = []
    if forward:
        use_max_norm, norm = rule
        extra = [np.int32(use_max_norm), acc(norm), np.int32(_overlap(out, x) == "same")]
    if groups:
        extra.append(cl.LocalMemory(sizes[1][0] * np.dtype(acc).itemsize))
    pending = [e for a in [*arrays, out] for e in a.events]
    event = opencl.launch(queue, kernel, *sizes, *buffers, *shape_args, *extra, wait_for=pending)
    out.add_event(event)
    return event


def _check_device_array(op, name, value, backend):
    """Raise unless ``value`` is a C-contiguous pyopencl array of ``backend``'s context."""
    cl = opencl.require_pyopencl()
    if not isinstance(value, cl.array.Array):
        raise TypeError(f"{op}: {name} must be a pyopencl.array.Array on {backend.name}, got {type(value).__name__}")
    if value.context != backend.context:
        raise ValueError(f"{op}: {name} lives on {opencl.backend_of_array(value).name}, not on {backend.name}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{op}: a device {name} must be C-contiguous")


def _check_device_out(op, x, out, backend):
    _check_device_array(op, "out", out, backend)
    if out.dtype != x.dtype:
        raise TypeError(f"{op}: out must have dtype {x.dtype} (that of the input), got {out.dtype}")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"{op}: out must have shape {tuple(x.shape)} (that of the input), got {tuple(out.shape)}")


def check_dense_opencl(op, x, axis, backend):
    """Validate a device input of Normalize; return the axis in ``[0, x.ndim)`` (nothing is launched)."""
    _check_device_array(op, "X", x, backend)
    require_dtype(op, "X", x, FLOAT_DTYPES)
    opencl.dtype_defines(op, x.dtype, backend.info)  # TypeError: float64 without fp64
    return canonical_axis(op, axis, x.ndim)


def normalize_opencl(op, x, axis, use_max_norm=False, norm=1.0, out=None, *, backend=None, queue=None):
    """Validate, then normalise the device array ``x`` along ``axis`` into ``out`` (new if None); return ``out``.

    ``backend`` defaults to the array's own; ``queue`` to the array's queue,
    else the backend's.  ``out`` may be ``x`` (in place).
    """
    backend = backend if backend is not None else opencl.backend_of_array(x)
    axis = check_dense_opencl(op, x, axis, backend)
    queue = queue if queue is not None else (x.queue if x.queue is not None else backend.queue)
    if out is None:
        out = opencl.require_pyopencl().array.empty(queue, x.shape, x.dtype)
    else:
        _check_device_out(op, x, out, backend)
    if x.size:
        _enqueue_dense(op, queue, backend, [x], out, axis, (use_max_norm, norm))
    return out


def check_gradient_opencl(op, x, dy, axis, backend):
    """Validate NormalizeGradient's device inputs; return the axis in ``[0, x.ndim)``."""
    axis = check_dense_opencl(op, x, axis, backend)
    _check_device_array(op, "dY", dy, backend)
    if dy.dtype != x.dtype:
        raise TypeError(f"{op}: dY must have the dtype of X ({x.dtype}), got {dy.dtype}")
    if tuple(dy.shape) != tuple(x.shape):
        raise ValueError(f"{op}: dY must have the shape of X {tuple(x.shape)}, got {tuple(dy.shape)}")
    return axis


def normalize_gradient_opencl(op, x, dy, axis, out=None, *, backend=None, queue=None):
    """Validate, then compute NormalizeGradient's ``dX`` on the device into ``out`` (new if None)."""
    backend = backend if backend is not None else opencl.backend_of_array(x)
    axis = check_gradient_opencl(op, x, dy, axis, backend)
    queue = queue if queue is not None else (x.queue if x.queue is not None else backend.queue)
    if out is None:
        out = opencl.require_pyopencl().array.empty(queue, x.shape, x.dtype)
    else:
        _check_device_out(op, x, out, backend)
    if x.size:
        _enqueue_dense(op, queue, backend, [x, dy], out, axis, None)
    return out


# --- sparse matrices on a device ---------------------------------------------


def _host_major(w):
    """The major (compressed-direction) index of every stored entry, int64."""
    counts = np.diff(w._host_indptr.astype(np.int64))
    return np.repeat(np.arange(counts.shape[0], dtype=np.int64), counts)


def _device_has_duplicates(w):
    """Whether the device matrix ``w`` stores an entry twice (computed on its host structure, once)."""
    cached = w._cache.get("has_duplicates")
    if cached is None:
        indices = w._host_indices.astype(np.int64)
        cached = False
        if indices.shape[0] > 1:
            # Strictly increasing inside every segment: sorted and distinct, the usual case.
            increasing = np.diff(indices) > 0
            starts = w._host_indptr[1:-1].astype(np.int64)
            starts = starts[(starts > 0) & (starts < indices.shape[0])]
            increasing[starts - 1] = True
            if not increasing.all():
                major = _host_major(w)
                order = np.lexsort((indices, major))
                cached = bool(np.any((np.diff(major[order]) == 0) & (np.diff(indices[order]) == 0)))
        w._cache["has_duplicates"] = cached
    return cached


def _device_grouping(w, along_segments):
    """Device arrays ``(order, vptr, keys or None)`` of the grouped kernel, computed on the host once.

    Vector ``v``'s entries are ``data[order[p]]`` for ``p`` in
    ``[vptr[v], vptr[v + 1])``, duplicates adjacent; ``keys[p]`` is the
    entry's position along the vector (only needed with duplicates).
    """
    key = ("grouping", along_segments)
    cached = w._cache.get(key)
    if cached is None:
        indices = w._host_indices.astype(np.int64)
        duplicates = _device_has_duplicates(w)
        if along_segments:  # only used with duplicates: sort every segment by index
            major = _host_major(w)
            order = np.lexsort((indices, major))
            vptr = w._host_indptr.astype(np.int64)
            keys = indices[order]
        else:  # across: entries of each minor vector in storage order (a stable sort)
            n_minor = w.shape[0] if w.format == "csc" else w.shape[1]
            order = np.argsort(indices, kind="stable")
            vptr = np.zeros(n_minor + 1, dtype=np.int64)
            np.cumsum(np.bincount(indices, minlength=n_minor), out=vptr[1:])
            keys = _host_major(w)[order] if duplicates else None
        backend = w.backend
        cached = (
            backend.from_host(order.astype(np.int64)),
            backend.from_host(vptr),
            None if keys is None else backend.from_host(keys),
        )
        w._cache[key] = cached
    return cached


def _enqueue_sparse(op, w, dst, axis, rule, queue):
    """Normalise the stored values of device matrix ``w`` along ``axis`` into the device array ``dst``."""
    cl = opencl.require_pyopencl()
    backend = w.backend
    src = w.data
    if _overlap(dst, src) == "partial":
        tmp = cl.array.empty(queue, dst.shape, dst.dtype)
        _enqueue_sparse(op, w, tmp, axis, rule, queue)
        return opencl.copy_array(queue, tmp, dst)
    use_max_norm, norm = rule
    program, acc = _opencl_program(op, backend, src.dtype, w.indptr.dtype)
    along_segments = (w.format == "csr") == (axis == 1)
    device = queue.device
    head = [src.base_data, _element_offset(src), dst.base_data, _element_offset(dst)]
    mode = [np.int32(use_max_norm), acc(norm), np.int32(_overlap(dst, src) == "same")]
    pending = list(src.events) + list(dst.events)
    if along_segments and not _device_has_duplicates(w):
        kernel = opencl.get_kernel(program, "caffe2op_normalize_segments_fwd")
        n_segments = w.indptr.shape[0] - 1
        n_avg = w.nnz // max(n_segments, 1)
        wg, n_groups = _group_launch(kernel, device, n_avg, n_segments)
        args = [*head, w.indptr.base_data, _element_offset(w.indptr), np.uint64(n_segments), *mode]
        args.append(cl.LocalMemory(wg * np.dtype(acc).itemsize))
        sizes = ((wg * n_groups,), (wg,))
    else:
        order, vptr, keys = _device_grouping(w, along_segments)
        kernel = opencl.get_kernel(program, "caffe2op_normalize_grouped_fwd")
        n_vectors = vptr.shape[0] - 1
        sizes = _item_launch(kernel, device, n_vectors)
        args = [*head, order.data, vptr.data, (keys if keys is not None else vptr).data, np.int32(keys is not None)]
        args += [np.uint64(n_vectors), *mode]
    event = opencl.launch(queue, kernel, *sizes, *args, wait_for=pending)
    dst.add_event(event)
    return event


def normalize_sparse_opencl(op, w, axis, use_max_norm=False, norm=1.0, out=None):
    """Validate, then normalise the DeviceSparseMatrix ``w`` along ``axis`` on its device (see :func:`normalize`)."""
    backend = w.backend
    require_dtype(op, "W", w, FLOAT_DTYPES)
    opencl.dtype_defines(op, w.dtype, backend.info)  # TypeError: float64 without fp64
    axis = canonical_axis(op, axis, 2)
    if out is not None and out is not w:
        if not isinstance(out, opencl.DeviceSparseMatrix):
            raise TypeError(f"{op}: out must be a DeviceSparseMatrix for device sparse input, got {type(out).__name__}")
        if out.backend.context != backend.context:
            raise ValueError(f"{op}: out lives on {out.backend.name} but W lives on {backend.name}")
        if out.format != w.format:
            raise TypeError(f"{op}: out must have the format of the input ({w.format}), got {out.format}")
        if out.dtype != w.dtype:
            raise TypeError(f"{op}: out must have dtype {w.dtype} (that of the input), got {out.dtype}")
        if out.shape != w.shape:
            raise ValueError(f"{op}: out must have shape {w.shape} (that of the input), got {out.shape}")
        if not w.same_structure(out):
            raise ValueError(
                f"{op}: out must have the sparsity structure of the input (equal indptr and indices); "
                "create it with W.copy(), or pass out=W to normalise in place"
            )
    queue = w.data.queue if w.data.queue is not None else backend.queue
    nnz = w.nnz
    if out is None:
        cl = opencl.require_pyopencl()
        result = opencl.DeviceSparseMatrix.__new__(opencl.DeviceSparseMatrix)
        result._init(
            backend,
            cl.array.empty(queue, (nnz,), w.dtype),
            backend.copy(w.indices[:nnz]),
            backend.copy(w.indptr),
            w.shape,
            w.format,
            w._host_indptr,
            w._host_indices,
        )
        result._cache = w._cache  # the same structure: the same facts and groupings
    else:
        result = out
    if nnz:
        _enqueue_sparse(op, w, result.data, axis, (use_max_norm, norm), queue)
    return result


@register_opencl_operator("Normalize")
@register_cuda_operator("Normalize")
class NormalizeOpenCL(Operator):
    """Normalize on an OpenCL device: one kernel launch, in place or out of place, any axis."""

    def run_on_device(self):
        x = self.input(0)
        axis = check_dense_opencl(self.type, x, self.arg("axis"), self.backend)
        out = self.output(0, x.shape, x.dtype)
        if x.size:
            _enqueue_dense(self.type, self.backend.queue, self.backend, [x], out, axis, (False, 1.0))


@register_opencl_operator("NormalizeGradient")
@register_cuda_operator("NormalizeGradient")
class NormalizeGradientOpenCL(Operator):
    """NormalizeGradient on an OpenCL device: one kernel launch."""

    def run_on_device(self):
        x, dy = self.input(0), self.input(1)
        axis = check_gradient_opencl(self.type, x, dy, self.arg("axis"), self.backend)
        out = self.output(0, x.shape, x.dtype)
        if x.size:
            _enqueue_dense(self.type, self.backend.queue, self.backend, [x, dy], out, axis, None)
