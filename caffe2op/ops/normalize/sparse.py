# SPDX-License-Identifier: BSD-3-Clause
"""Normalize on ``scipy.sparse`` CSR/CSC matrices on the CPU, and SparseNormalize on a CSR matrix's rows."""

import numpy as np

from ... import _config, _dispatch, opencl
from ..._validation import (
    FLOAT_DTYPES,
    index_vector,
    raise_first_bad_index,
    require_dtype,
    require_norm_fits,
    require_writeable,
)
from ...core import DeviceType
from ...schema import Argument
from ._common import _HALF, _INDEX, _STORAGE, _same_view, _storage, canonical_axis, scipy_sparse_of
from .schema import _NORM
from .sparse_opencl import normalize_sparse_opencl

_kernels = _dispatch.load("normalize_sparse")


def _by_index_and_storage(kernel):
    """The specialisations of a kernel fused over (index type, storage type), keyed by dtypes."""
    return {(i, t): kernel.__signatures__[f"{si}|{st}"] for i, si in _INDEX.items() for t, st in _STORAGE.items()}


_SEGMENT = _by_index_and_storage(_kernels.segment_normalize)
_CROSS_SUMS = _by_index_and_storage(_kernels.cross_partial_sums)
_CROSS_APPLY = _by_index_and_storage(_kernels.cross_apply)
_CHECK_COMPRESSED = {i: _kernels.check_compressed.__signatures__[s] for i, s in _INDEX.items()}
_DISTINCT = {i: _kernels.distinct.__signatures__[s] for i, s in _INDEX.items()}
_CROSS_RESCUE = {i: _kernels.cross_rescue.__signatures__[s] for i, s in _INDEX.items()}
_COPY_SEGMENTS = _by_index_and_storage(_kernels.copy_segments_normalize)
_COPY_CROSS_SUMS = _by_index_and_storage(_kernels.copy_cross_sums)
_APPLY_SCALES = _by_index_and_storage(_kernels.apply_scales)

# Cross-direction sums: at most _MAX_CHUNKS chunks of stored values, each with at least
# _CHUNK_MIN_NNZ of them, and at most a quarter as many partial sums (chunks x vectors) as
# stored values, so that zeroing and merging them stays a small part of the work and memory.
_MAX_CHUNKS = 16
_CHUNK_MIN_NNZ = 1 << 15
_VALUES_PER_PARTIAL_SUM = 4

_NO_SEGMENTS = np.empty(0, dtype=np.int64)
_NO_SCALES = np.empty(0, dtype=np.float64)


def _index_arrays(indptr, indices):
    """``indptr`` and ``indices`` as int32/int64 arrays of one dtype (the kernels take one index type)."""
    common = np.promote_types(indptr.dtype, indices.dtype)
    return np.ascontiguousarray(indptr, dtype=common), np.ascontiguousarray(indices, dtype=common)


def _structure_changed(op, name):
    """The error for an index structure that another thread rewrote while a call ran."""
    return ValueError(
        f"{op}: {name}.indptr or {name}.indices changed while the call ran (another thread wrote them after "
        "they were checked); out-of-range entries were skipped and the result is undefined"
    )


def _check_structure_arrays(op, name, fmt, shape, indptr, indices):
    """Check converted ``indptr``/``indices`` with ``check_compressed``; return ``(nnz, canonical)``."""
    n_minor = shape[1] if fmt == "csr" else shape[0]
    what, position, nnz, canonical = _CHECK_COMPRESSED[indptr.dtype](indptr, indices, n_minor)
    if what == 0:
        raise ValueError(
            f"{op}: {name}.indptr is not a valid index pointer (it must start at 0, never decrease and end "
            f"within indices; first bad entry at position {position})"
        )
    if what == 1:
        raise ValueError(
            f"{op}: {name}.indices[{position}] = {int(indices[position])} is out of range for "
            f"{n_minor} {'columns' if fmt == 'csr' else 'rows'}"
        )
    return nnz, canonical


def _checked_structure(op, name, matrix):
    """``(indptr, indices, nnz, canonical)`` of a CSR/CSC matrix, checked so that the kernels can trust them.

    ``canonical`` says whether every row (CSR) or column (CSC) has strictly
    increasing indices, so no duplicate entries: it is read from the indices,
    never from scipy's ``has_canonical_format`` flag, which a caller may have
    left stale.

    Raises
    ------
    TypeError
        If the index arrays are not int32 or int64.
    ValueError
        If ``indptr`` has the wrong length, does not start at 0, decreases or
        runs past ``indices``/``data``, or a stored index is out of range.
    """
    major = 0 if matrix.format == "csr" else 1
    n_major = matrix.shape[major]
    if matrix.indptr.ndim != 1 or matrix.indptr.shape[0] != n_major + 1:
        raise ValueError(
            f"{op}: {name}.indptr must have {n_major + 1} entries for a {matrix.format.upper()} matrix of shape "
            f"{matrix.shape}, got shape {matrix.indptr.shape}"
        )
    if matrix.indptr.dtype not in _INDEX or matrix.indices.dtype not in _INDEX:
        raise TypeError(
            f"{op}: {name}.indptr and {name}.indices must be int32 or int64 (scipy.sparse index dtypes), got "
            f"{matrix.indptr.dtype} and {matrix.indices.dtype}; convert them with .astype(np.int64)"
        )
    indptr, indices = _index_arrays(matrix.indptr, matrix.indices)
    nnz, canonical = _check_structure_arrays(op, name, matrix.format, matrix.shape, indptr, indices)
    if matrix.data.ndim != 1 or matrix.data.shape[0] < nnz:
        raise ValueError(f"{op}: {name}.data must be 1-D with at least {nnz} values, got shape {matrix.data.shape}")
    return indptr, indices[:nnz], nnz, canonical


def _canonical_data(op, name, w, indptr, indices, nnz):
    """``(indptr, indices, data)`` of ``w`` with duplicate entries summed, from private copies.

    The structure is copied and checked again before scipy reads it (scipy's
    ``sum_duplicates`` trusts it), so a concurrent writer cannot make scipy
    read out of bounds.  scipy sums float16 data in float32 here, rounded back.
    """
    sparse = scipy_sparse_of(w)
    half = w.dtype == _HALF
    own_indptr, own_indices = indptr.copy(), indices[:nnz].copy()
    data = w.data[:nnz].astype(np.float32 if half else w.dtype)  # a copy
    if _check_structure_arrays(op, name, w.format, w.shape, own_indptr, own_indices)[0] != nnz:
        raise _structure_changed(op, name)
    build = sparse.csr_matrix if w.format == "csr" else sparse.csc_matrix
    canon = build((data, own_indices, own_indptr), shape=w.shape, copy=False)
    canon.sum_duplicates()
    if half:
        canon.data = canon.data.astype(np.float16)
    c_indptr, c_indices, c_nnz, _ = _checked_structure(op, name, canon)
    return c_indptr, c_indices, np.ascontiguousarray(canon.data[:c_nnz])


def _n_chunks(nnz, n_minor):
    """Chunks of the cross-direction sums: a function of the shape only, never of the thread count."""
    return max(1, min(_MAX_CHUNKS, nnz // _CHUNK_MIN_NNZ, nnz // (_VALUES_PER_PARTIAL_SUM * max(n_minor, 1))))


def _segments(op, mode, indptr, src, dst, rule, rows=None, scales=_NO_SCALES):
    """Run the segment kernel (``segment_normalize`` in ``pyx/normalize_sparse.pyx``) on every segment or on ``rows``.

    ``rule`` is ``(use_max_norm, norm, additive_eps)``.
    """
    every = rows is None
    skipped = _SEGMENT[indptr.dtype, src.dtype](
        indptr, _storage(src), _storage(dst), _NO_SEGMENTS if every else rows, every, scales, mode, *rule,
        _config.get_num_threads(),
    )  # fmt: skip
    if skipped:
        raise _structure_changed(op, "W")


def _normalize_segments(op, name, w, structure, src, dst, rule, rows=None):
    """Normalise the stored segments of CSR/CSC ``w`` (every one, or the distinct ``rows``) from src into dst.

    ``structure`` is ``_checked_structure``'s result.  With duplicate
    entries a segment's norm is that of its summed entries, and its scale is
    applied to every stored part, so the structure is kept.
    """
    indptr, indices, nnz, canonical = structure
    if canonical:
        _segments(op, _kernels.SEGMENT_NORMALIZE, indptr, src, dst, rule, rows)
        return
    c_indptr, _, c_data = _canonical_data(op, name, w, indptr, indices, nnz)
    scales = np.empty(indptr.shape[0] - 1 if rows is None else rows.shape[0], dtype=np.float64)
    _segments(op, _kernels.SEGMENT_SCALES, c_indptr, c_data, c_data, rule, rows, scales)
    _segments(op, _kernels.SEGMENT_APPLY, indptr, src, dst, rule, rows, scales)


def _normalize_cross(op, name, w, structure, src, dst, rule):
    """Normalise the vectors across the compressed direction of CSR/CSC ``w`` (CSR columns, CSC rows)."""
    indptr, indices, nnz, canonical = structure
    n_threads = _config.get_num_threads()
    n_minor = w.shape[1] if w.format == "csr" else w.shape[0]
    if canonical:
        sum_indices, sum_data = indices, src
    else:
        sum_indices, sum_data = _canonical_data(op, name, w, indptr, indices, nnz)[1:]
    partial = np.empty((_n_chunks(sum_data.shape[0], n_minor), n_minor), dtype=np.float64)
    skipped = _CROSS_SUMS[sum_indices.dtype, sum_data.dtype](sum_indices, _storage(sum_data), partial, n_threads)
    # Only float64 sums can overflow or underflow (see pyx/_normalize_vectors.pxi).
    rescue = np.zeros(n_minor if sum_data.dtype == np.float64 else 0, dtype=np.uint8)
    if _kernels.cross_scales(partial, rescue, *rule, n_threads):
        _CROSS_RESCUE[sum_indices.dtype](sum_indices, sum_data, partial[0], rescue, *rule)
    skipped += _CROSS_APPLY[indices.dtype, src.dtype](indices, _storage(src), _storage(dst), partial[0], n_threads)
    if skipped:
        raise _structure_changed(op, name)


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


def _matrix_like(w, data, indices, indptr):
    """A matrix of ``w``'s class, format and shape made of the given arrays (their index dtypes kept)."""
    result = type(w)((data, indices, indptr), shape=w.shape, copy=False)
    # scipy may narrow int64 index arrays to int32: keep them exactly as they were.
    result.indices = indices
    result.indptr = indptr
    result.data = data
    return result


def _new_with_data(w, data, nnz):
    """A matrix of ``w``'s class and format with a copy of ``w``'s structure (dtypes kept) and ``data``."""
    return _matrix_like(w, data, w.indices[:nnz].copy(), w.indptr.copy())


def _normalize_new(op, w, axis, rule):
    """Normalise CSR/CSC ``w`` into a new matrix with the copying kernels, or None to take the checked path.

    The kernels copy ``w.indices`` into the result's own array and check the
    copy as they read it, so validation costs no pass of its own (see
    ``pyx/normalize_sparse.pyx``).  None (nothing was returned to the caller,
    nothing of ``w`` was written) when the structure is unusual (mixed
    index dtypes, non-contiguous arrays, no stored values), invalid or not
    canonical: the checked path then raises the precise error or sums the
    duplicate entries.
    """
    csr = w.format == "csr"
    n_major, n_minor = w.shape if csr else w.shape[::-1]
    indptr, indices, data = w.indptr, w.indices, w.data
    if (
        indptr.dtype not in _INDEX
        or indices.dtype != indptr.dtype
        or indptr.ndim != 1
        or indptr.shape[0] != n_major + 1
        or indices.ndim != 1
        or data.ndim != 1
        or not (indices.flags.c_contiguous and data.flags.c_contiguous)
        or n_major == 0
    ):
        return None
    own_indptr = indptr.copy()  # private: no other thread can change what the kernels read
    nnz = int(own_indptr[-1])
    if own_indptr[0] != 0 or not 0 < nnz <= min(indices.shape[0], data.shape[0]):
        return None
    own_indices = np.empty(nnz, dtype=indices.dtype)
    src = data[:nnz]
    dst = np.empty(nnz, dtype=w.dtype)
    n_threads = _config.get_num_threads()
    if csr == (axis == 1):
        failed = _COPY_SEGMENTS[indices.dtype, src.dtype](
            own_indptr, indices, own_indices, n_minor, _storage(src), _storage(dst), *rule, n_threads
        )
        if failed:
            return None
    else:
        partial = np.empty((_n_chunks(nnz, n_minor), n_minor), dtype=np.float64)
        if _COPY_CROSS_SUMS[indices.dtype, src.dtype](
            own_indptr, indices, own_indices, _storage(src), partial, n_threads
        ):
            return None
        # Only float64 sums can overflow or underflow (see pyx/_normalize_vectors.pxi).
        rescue = np.zeros(n_minor if src.dtype == np.float64 else 0, dtype=np.uint8)
        if _kernels.cross_scales(partial, rescue, *rule, n_threads):
            _CROSS_RESCUE[own_indices.dtype](own_indices, src, partial[0], rescue, *rule)
        _APPLY_SCALES[own_indices.dtype, src.dtype](own_indices, _storage(src), _storage(dst), partial[0], n_threads)
    return _matrix_like(w, dst, own_indices, own_indptr)


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
    require_norm_fits(op, "W", norm, w.dtype)
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
    if out is None and backend is None:
        result = _normalize_new(op, w, axis, (use_max_norm, norm, False))
        if result is not None:
            return result
    structure = _checked_structure(op, "W", w)
    nnz = structure[2]
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
        _normalize_segments(op, "W", w, structure, work_src, work_dst, rule)
    else:
        _normalize_cross(op, "W", w, structure, work_src, work_dst, rule)
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
        If ``param`` is not CSR or not float, its index arrays are not int32
        or int64, or the indices are not integers.
    ValueError
        If ``param`` is not 2-D, its data is read-only or its structure is
        invalid (or another thread rewrote an index array during the
        call), ``norm`` is negative or not finite, or ``device`` is not
        the CPU.
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
    require_norm_fits(op, "param", norm, param.dtype)
    require_writeable(op, "param.data", param.data)
    index = index_vector(op, "indices", indices)
    n_rows = param.shape[0]
    if index.size and (index.min() < 0 or index.max() >= n_rows):
        raise_first_bad_index(op, "indices", index, n_rows)
    structure = _checked_structure(op, "param", param)
    nnz = structure[2]
    if index.size == 0 or nnz == 0:
        return param
    # The kernel re-checks every index it reads: the caller may rewrite them from another thread.
    rows, skipped = _DISTINCT[index.dtype](index, n_rows)
    if skipped:
        raise ValueError(
            f"{op}: indices changed while the call ran (another thread wrote them after they were checked)"
        )
    data = param.data
    work = data[:nnz] if data.flags.c_contiguous else np.ascontiguousarray(data[:nnz])
    _normalize_segments(op, "param", param, structure, work, work, (use_max_norm, norm, True), rows)
    if work is not data and not np.shares_memory(work, data):
        data[:nnz] = work
    return param
