# SPDX-License-Identifier: BSD-3-Clause
"""Normalize on :class:`~caffe2op.DeviceSparseMatrix` (CSR/CSC on an OpenCL device)."""

import numpy as np

from ... import opencl
from ..._validation import FLOAT_DTYPES, require_dtype
from ._common import canonical_axis
from .dense_opencl import _element_offset, _group_kernel, _item_launch, _opencl_program, _overlap

# --- sparse matrices on a device ---------------------------------------------


def _host_major(w):
    """The major (compressed-direction) index of every stored entry, int64."""
    counts = np.diff(w._host_indptr.astype(np.int64))
    return np.repeat(np.arange(counts.shape[0], dtype=np.int64), counts)


def _segment_lengths(w):
    """(typical, longest) stored segment length of the device matrix ``w`` (from its host structure, once).

    The typical length (the 90th percentile) sizes the teams of the segments
    kernel, the longest the slots each of their work items must hold.
    """
    cached = w._cache.get("segment_lengths")
    if cached is None:
        lengths = np.diff(w._host_indptr.astype(np.int64))
        if lengths.shape[0]:
            typical = int(np.partition(lengths, (lengths.shape[0] * 9) // 10)[(lengths.shape[0] * 9) // 10])
            cached = (typical, int(lengths.max()))
        else:
            cached = (0, 0)
        w._cache["segment_lengths"] = cached
    return cached


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
    along_segments = (w.format == "csr") == (axis == 1)
    device = queue.device
    head = [src.base_data, _element_offset(src), dst.base_data, _element_offset(dst)]
    pending = list(src.events) + list(dst.events)
    if along_segments and not _device_has_duplicates(w):
        n_segments = w._indptr.shape[0] - 1
        typical, longest = _segment_lengths(w)
        kernel, acc, local_bytes, wg, n_groups, team = _group_kernel(
            op,
            backend,
            device,
            src.dtype,
            "caffe2op_normalize_segments_fwd",
            typical,
            longest,
            n_segments,
            w._indptr.dtype,
        )
        mode = [np.int32(use_max_norm), acc(norm), np.int32(_overlap(dst, src) == "same")]
        args = [*head, w._indptr.base_data, _element_offset(w._indptr), np.uint64(n_segments), *mode]
        args += [np.uint32(team), cl.LocalMemory((wg if team > 1 else 1) * local_bytes)]
        sizes = ((wg * n_groups,), (wg,))
    else:
        program, acc, _ = _opencl_program(op, backend, src.dtype, w._indptr.dtype)
        mode = [np.int32(use_max_norm), acc(norm), np.int32(_overlap(dst, src) == "same")]
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
            backend.copy(w._indices[:nnz]),
            backend.copy(w._indptr),
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
