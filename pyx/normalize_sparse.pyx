# SPDX-License-Identifier: BSD-3-Clause
"""CPU kernels of Normalize (and SparseNormalize's CSR path) on compressed sparse storage.

The scale rules and precision are those of the dense kernels (shared in
``_normalize_vectors.pxi``).  Every vector is reduced by exactly one thread,
in an order fixed by the input's structure alone, so results never depend on
the number of threads:

* Along the compressed direction (CSR rows, CSC columns): each stored segment
  ``data[indptr[i]:indptr[i + 1]]`` is a vector.
* Across it (CSR columns, CSC rows): the stored values are cut into
  ``partial.shape[0]`` equal chunks (a number the caller derives from ``nnz``
  and the number of vectors only); each chunk scatter-adds the squares of its
  values into its own row of partial sums, in parallel, and the rows are then
  added in chunk order.

Index arrays belong to the caller, who may write them from another thread
while a kernel runs.  Two designs keep that safe:

* The checked kernels (``check_compressed`` in Python's validation, then
  ``segment_normalize``, ``cross_*``) read each caller-owned index or index
  pointer exactly once (``read_once``), check it against the bounds they
  were given and skip it when it is out of range, returning how many they
  skipped, so that a concurrent writer can never make them read or write
  outside their arrays (the caller turns a non-zero count into a
  ValueError).  The check costs one compare on a value already loaded.
* The copying kernels (``copy_segments_normalize``, ``copy_cross_sums``)
  serve a new output: they copy the caller's ``indices`` into the output's
  own array, reading each once, and validate the copy as they go (bounds,
  and strictly increasing indices within each segment), so validation costs
  no pass of its own, and the structure they checked is exactly the one
  they used and return.  Their ``indptr`` is already a private, checked
  copy.  A structure that fails is reported, and the caller then takes the
  checked path, which raises the precise error or sums duplicate entries.
"""

import numpy as np

from cython.parallel cimport parallel, prange
from libc.float cimport DBL_MAX
from libc.math cimport fabs, frexp, ldexp, sqrt
from libc.string cimport memcpy, memset

from _typedefs cimport (
    c2o_float_to_half,
    c2o_half_to_float,
    index_t,
    int32_t,
    int64_t,
    uint8_t,
    uint16_t,
    uint32_t,
    uint64_t,
)

cdef extern from *:
    """
    /* One load of a caller-owned index, never repeated or split by the compiler. */
    static inline int32_t c2o_normalize_read_i32(const int32_t *p) { return *(const volatile int32_t *)p; }
    static inline int64_t c2o_normalize_read_i64(const int64_t *p) { return *(const volatile int64_t *)p; }
    """
    int32_t c2o_normalize_read_i32(const int32_t* p) noexcept nogil
    int64_t c2o_normalize_read_i64(const int64_t* p) noexcept nogil

include "_normalize_vectors.pxi"

cdef extern from "caffe2op_normalize.h":
    void c2o_gather_scale_f32_i32(const int32_t* index, const float* x, float* y, const float* scales,
                                  Py_ssize_t n, int stream) noexcept nogil
    void c2o_gather_scale_f32_i64(const int64_t* index, const float* x, float* y, const float* scales,
                                  Py_ssize_t n, int stream) noexcept nogil
    void c2o_gather_scale_f64_i32(const int32_t* index, const double* x, double* y, const double* scales,
                                  Py_ssize_t n, int stream) noexcept nogil
    void c2o_gather_scale_f64_i64(const int64_t* index, const double* x, double* y, const double* scales,
                                  Py_ssize_t n, int stream) noexcept nogil

# Values per work item of apply_scales.
cdef Py_ssize_t APPLY_PIECE = 1 << 14

# apply_scales writes an output of at least this many bytes with non-temporal
# stores (see caffe2op_normalize.h): larger than one core's L2 cache here
# (2 MiB), the output would not stay near the core anyway.
cdef Py_ssize_t STREAM_MIN_BYTES = 1 << 21

# Modes of the segment kernel.
SEGMENT_SCALES = 0      # compute each segment's scale into ``scales`` only
SEGMENT_NORMALIZE = 1   # compute each segment's scale and apply it
SEGMENT_APPLY = 2       # apply the scales given in ``scales``
cdef enum:
    _SCALES = 0
    _NORMALIZE = 1
    _APPLY = 2

cdef enum:
    # Segments per work item of the segment kernels: long, predictable copy and check loops
    # (segments are often a few values long), passes whose iterations overlap, and enough
    # items to balance the threads.
    SEGMENT_BLOCK = 256



cdef inline index_t _read_index(const index_t* p) noexcept nogil:
    """``*p`` read exactly once (see the module docstring)."""
    if index_t is int32_t:
        return c2o_normalize_read_i32(p)
    else:
        return c2o_normalize_read_i64(p)



# ------------------------------------------------------------ sparse storage

def check_compressed(const index_t[::1] indptr, const index_t[::1] indices, Py_ssize_t n_minor):
    """Check a compressed sparse structure before the kernels trust it.

    Returns ``(status, position, nnz, canonical)``.  ``status`` is -1 when
    ``indptr`` starts at 0, never decreases and ends at ``nnz <=
    len(indices)``, and every stored index lies in ``[0, n_minor)``; else 0
    with the first bad ``indptr`` entry at ``position``, or 1 with the first
    bad index there.  ``canonical`` says whether every segment's indices
    strictly increase (sorted, no duplicate entries), found from the indices
    themselves, never from scipy's cached ``has_canonical_format`` flag.
    """
    cdef Py_ssize_t i, k, n_major = indptr.shape[0] - 1, nnz, bad = 0, start, end
    cdef Py_ssize_t falls = 0, boundary_falls = 0
    cdef uint32_t limit32 = <uint32_t> (n_minor if n_minor < (<Py_ssize_t> 1 << 31) else (<Py_ssize_t> 1 << 31))
    cdef uint64_t limit64 = <uint64_t> n_minor
    if n_major < 0 or indptr[0] != 0:
        return 0, 0, 0, False
    # Count first (branch-free loops the compiler vectorises), locate only on failure.
    with nogil:
        for i in range(n_major):
            bad += indptr[i + 1] < indptr[i]
    if bad:
        for i in range(n_major):
            if indptr[i + 1] < indptr[i]:
                return 0, i + 1, 0, False
    nnz = _read_index(&indptr[n_major])
    if nnz > indices.shape[0]:
        return 0, n_major, 0, False
    with nogil:
        # Negative indices become huge unsigned values: one comparison checks both bounds.
        if index_t is int32_t:
            for k in range(nnz):
                bad += (<uint32_t> indices[k]) >= limit32
        else:
            for k in range(nnz):
                bad += (<uint64_t> indices[k]) >= limit64
        # Canonical when no index is <= its predecessor within a segment: count every
        # such fall, then those across a segment boundary, which are allowed.
        for k in range(1, nnz):
            falls += indices[k] <= indices[k - 1]
        if falls:
            for i in range(n_major):
                start = _read_index(&indptr[i])
                end = _read_index(&indptr[i + 1])
                if 0 < start < end <= nnz:
                    boundary_falls += indices[start] <= indices[start - 1]
    if bad:
        for k in range(nnz):
            if indices[k] < 0 or indices[k] >= n_minor:
                return 1, k, nnz, False
    return -1, 0, nnz, falls == boundary_falls


cdef Py_ssize_t _segment_block(const index_t* indptr, Py_ssize_t n_major, const int64_t* segments,
                               bint all_segments, Py_ssize_t first, Py_ssize_t count, const storage_t* x,
                               storage_t* y, Py_ssize_t nnz, double* scales, int mode, bint use_max_norm,
                               double norm, bint additive_eps) noexcept nogil:
    """Segments ``first .. first + count - 1`` (at most SEGMENT_BLOCK) of ``segment_normalize``.

    Returns how many were skipped.  Each caller-owned bound is read once, in
    the first pass; the sums, the scales and the scaling are then separate
    passes over the block, whose iterations are independent (see
    ``_copy_segment_block``).
    """
    cdef Py_ssize_t begins[SEGMENT_BLOCK]
    cdef Py_ssize_t ends[SEGMENT_BLOCK]
    cdef double block_scales[SEGMENT_BLOCK]
    cdef Py_ssize_t q, seg, begin, end, skipped = 0
    for q in range(count):
        seg = first + q if all_segments else segments[first + q]
        begin = 0
        end = -1  # a skipped segment
        if 0 <= seg < n_major:
            begin = _read_index(&indptr[seg])
            end = _read_index(&indptr[seg + 1])
            if begin < 0 or end < begin or end > nnz:
                begin = 0
                end = -1
        skipped += end < 0
        begins[q] = begin
        ends[q] = end
    if mode == _APPLY:
        for q in range(count):
            block_scales[q] = scales[first + q]
    else:
        for q in range(count):
            block_scales[q] = _sum_squares(x + begins[q], ends[q] - begins[q]) if ends[q] >= 0 else 0.0
        for q in range(count):
            if ends[q] >= 0:
                block_scales[q] = _scale_of_sum(x + begins[q], ends[q] - begins[q], block_scales[q], use_max_norm,
                                                norm, additive_eps)
            else:
                block_scales[q] = 1.0
        if mode == _SCALES:
            memcpy(scales + first, block_scales, count * sizeof(double))
            return skipped
    for q in range(count):
        if ends[q] >= 0:
            _scale_into(x + begins[q], y + begins[q], ends[q] - begins[q], block_scales[q])
    return skipped


def segment_normalize(const index_t[::1] indptr, const storage_t[::1] src, storage_t[::1] dst,
                      const int64_t[::1] segments, bint all_segments, double[::1] scales, int mode,
                      bint use_max_norm, double norm, bint additive_eps, int n_threads):
    """Normalise the stored segments ``data[indptr[i]:indptr[i + 1]]`` of a CSR/CSC matrix.

    Segments: every one (``all_segments``) or those listed, distinct, in
    ``segments``.  ``mode``: SEGMENT_SCALES writes the scale of the ``p``-th
    processed segment to ``scales[p]`` and nothing else; SEGMENT_NORMALIZE
    computes each scale and writes ``dst`` (``scales`` is unused);
    SEGMENT_APPLY writes ``dst`` with the scales given.  ``dst`` may be ``src``.

    Returns the number of segments skipped because their bounds, read once
    here, no longer lie within ``src`` (their ``indptr`` entries were changed
    after validation).
    """
    cdef Py_ssize_t n_major = indptr.shape[0] - 1, nnz = src.shape[0]
    cdef Py_ssize_t count = n_major if all_segments else segments.shape[0]
    cdef Py_ssize_t p, b, n_blocks, first, block, skipped = 0
    cdef const int64_t* segp = &segments[0] if segments.shape[0] > 0 else NULL
    cdef double* sp
    cdef bint threads
    if dst.shape[0] != nnz or (mode != _NORMALIZE and scales.shape[0] < count):
        raise ValueError("segment_normalize: dst must have the length of src, and scales one value per segment")
    if count <= 0 or nnz == 0:
        if mode == _SCALES and count > 0:
            for p in range(count):
                scales[p] = 1.0
        return 0
    sp = &scales[0] if mode != _NORMALIZE else NULL
    threads = count > 1 and (nnz > PARALLEL_MIN_WORK or count > PARALLEL_MIN_WORK)
    n_blocks = (count + SEGMENT_BLOCK - 1) // SEGMENT_BLOCK
    for b in prange(n_blocks, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=threads and n_blocks > 1):
        first = b * SEGMENT_BLOCK
        block = count - first
        if block > SEGMENT_BLOCK:
            block = SEGMENT_BLOCK
        skipped += _segment_block(&indptr[0], n_major, segp, all_segments, first, block, &src[0], &dst[0], nnz, sp,
                                  mode, use_max_norm, norm, additive_eps)
    return skipped


def cross_partial_sums(const index_t[::1] indices, const storage_t[::1] data, double[:, ::1] partial,
                       int n_threads):
    """Sums of squares per minor index, one row of ``partial`` per chunk of the stored values.

    Chunk ``c`` of ``C = partial.shape[0]`` covers ``[c * nnz // C, (c + 1) * nnz // C)``
    with ``nnz = data.shape[0]``; it zeroes its row, then adds in storage
    order, in float64 for every dtype.  Returns the number of stored values
    skipped because their index, read once here, lies outside
    ``[0, partial.shape[1])`` (changed after validation).
    """
    cdef Py_ssize_t n_chunks = partial.shape[0], n_minor = partial.shape[1], nnz = data.shape[0]
    cdef Py_ssize_t c, k, begin, end, skipped = 0
    cdef index_t j
    cdef double* row
    cdef float hx
    if indices.shape[0] < nnz:
        raise ValueError("cross_partial_sums: fewer indices than stored values")
    if n_chunks == 0 or n_minor == 0:
        return 0
    for c in prange(n_chunks, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_chunks > 1):
        row = &partial[c, 0]
        memset(row, 0, n_minor * sizeof(double))
        begin = c * nnz // n_chunks
        end = (c + 1) * nnz // n_chunks
        for k in range(begin, end):
            j = _read_index(&indices[k])
            if <uint64_t> j >= <uint64_t> n_minor:
                skipped += 1
                continue
            if storage_t is uint16_t:
                hx = c2o_half_to_float(data[k])
                row[j] += <double> (hx * hx)
            else:
                row[j] += <double> data[k] * data[k]
    return skipped


def cross_scales(double[:, ::1] partial, uint8_t[::1] rescue, bint use_max_norm, double norm, bint additive_eps,
                 int n_threads):
    """Add the partial sums in chunk order and replace ``partial[0]`` by the scales of the vectors.

    With a non-empty ``rescue`` (float64 data; one flag per vector), a sum
    that may have overflowed or underflowed is left in ``partial[0]``, its
    flag set, for :func:`cross_rescue`.  Returns the number of such sums.
    """
    cdef Py_ssize_t n_chunks = partial.shape[0], n_minor = partial.shape[1]
    cdef Py_ssize_t j, c, flagged = 0
    cdef double s
    cdef bint may_rescue = rescue.shape[0] >= n_minor
    if n_chunks == 0 or n_minor == 0:
        return 0
    for j in prange(n_minor, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_minor * n_chunks > PARALLEL_MIN_WORK):
        s = partial[0, j]
        for c in range(1, n_chunks):
            s = s + partial[c, j]
        if may_rescue and _needs_rescue(s):
            rescue[j] = 1
            partial[0, j] = s
            flagged += 1
        else:
            partial[0, j] = _scale(s, use_max_norm, norm, additive_eps)
    return flagged


def cross_rescue(const index_t[::1] indices, const double[::1] data, double[::1] scales, uint8_t[::1] rescue,
                 bint use_max_norm, double norm, bint additive_eps):
    """Scales of the float64 vectors flagged by :func:`cross_scales`, from power-of-two scaled values.

    Serial: two passes over the stored values (largest magnitudes, then
    scaled sums), run only when some vector needs them.
    """
    cdef Py_ssize_t nnz = data.shape[0], n_minor = scales.shape[0], k
    cdef index_t j
    cdef double t
    cdef int e
    amax_array = np.zeros(n_minor, dtype=np.float64)
    cdef double[::1] amax = amax_array
    if indices.shape[0] < nnz or rescue.shape[0] < n_minor:
        raise ValueError("cross_rescue: fewer indices than stored values, or fewer flags than vectors")
    with nogil:
        for k in range(nnz):
            j = _read_index(&indices[k])
            if <uint64_t> j < <uint64_t> n_minor and rescue[j] and fabs(data[k]) > amax[j]:
                amax[j] = fabs(data[k])
        for j in range(n_minor):
            if not rescue[j]:
                continue
            if 0 < amax[j] <= DBL_MAX:
                frexp(amax[j], &e)
                amax[j] = e
                scales[j] = 0
            else:  # all zero or infinite: the plain norm is exact
                rescue[j] = 0
                scales[j] = _scale_of_norm(sqrt(scales[j]), use_max_norm, norm, additive_eps)
        for k in range(nnz):
            j = _read_index(&indices[k])
            if <uint64_t> j < <uint64_t> n_minor and rescue[j]:
                t = ldexp(data[k], -<int> amax[j])
                scales[j] += t * t
        for j in range(n_minor):
            if rescue[j]:
                scales[j] = _scale_of_split_norm(sqrt(scales[j]), <int> amax[j], use_max_norm, norm, additive_eps)


def cross_apply(const index_t[::1] indices, const storage_t[::1] src, storage_t[::1] dst,
                const double[::1] scales, int n_threads):
    """``dst[k] = src[k] * scales[indices[k]]`` for every stored value (``dst`` may be ``src``).

    Returns the number of values skipped because their index, read once
    here, lies outside ``scales`` (changed after validation).
    """
    cdef Py_ssize_t nnz = src.shape[0], n_minor = scales.shape[0], k, skipped = 0
    cdef index_t j
    cdef double s
    cdef bint inplace
    if dst.shape[0] != nnz or indices.shape[0] < nnz:
        raise ValueError("cross_apply: dst must have the length of src, and indices at least as many values")
    if nnz == 0:
        return 0
    inplace = <const void*> &src[0] == <const void*> &dst[0]
    for k in prange(nnz, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=nnz > PARALLEL_MIN_WORK):
        j = _read_index(&indices[k])
        if <uint64_t> j >= <uint64_t> n_minor:
            skipped += 1
            continue
        s = scales[j]
        if inplace and s == 1.0:
            continue
        if storage_t is uint16_t:
            dst[k] = c2o_float_to_half(c2o_half_to_float(src[k]) * <float> s)
        elif storage_t is float:
            dst[k] = src[k] * <float> s
        else:
            dst[k] = src[k] * s
    return skipped


def distinct(const index_t[::1] indices, Py_ssize_t n_rows):
    """The distinct values of ``indices`` in ``[0, n_rows)``, int64, in first-occurrence order.

    Returns ``(rows, skipped)``: ``skipped`` counts the indices outside
    ``[0, n_rows)``, which are left out.  The caller validated them, but
    they are the caller's and may have changed since; each is read once.
    """
    cdef Py_ssize_t i, count = 0, k = indices.shape[0], skipped = 0
    cdef int64_t row
    cdef uint64_t bit
    result = np.empty(k, dtype=np.int64)
    seen_array = np.zeros((n_rows + 63) // 64 + 1, dtype=np.uint64)
    cdef int64_t[::1] out = result
    cdef uint64_t[::1] seen = seen_array
    with nogil:
        for i in range(k):
            row = _read_index(&indices[i])
            if <uint64_t> row >= <uint64_t> n_rows:
                skipped += 1
                continue
            bit = (<uint64_t> 1) << (row & 63)
            if not (seen[row >> 6] & bit):
                seen[row >> 6] |= bit
                out[count] = row
                count += 1
    return result[:count], skipped


# ------------------------------------------- copying kernels (a new output)
#
# ``own`` arrays are the result's, private to the call: the caller's indices are copied into
# them with plain loads (a copy reads each value once; only the copy is ever used), and
# every check and every later read uses the copy, so the loops need no volatile loads and
# vectorise.

cdef inline Py_ssize_t _count_out_of_range(const index_t* own, Py_ssize_t n, Py_ssize_t n_minor) noexcept nogil:
    """How many of ``own[0:n]`` lie outside ``[0, n_minor)`` (a branch-free, vectorisable count)."""
    cdef Py_ssize_t k, bad = 0
    # Negative indices become huge unsigned values: one comparison checks both bounds.
    cdef uint32_t limit32 = <uint32_t> (n_minor if n_minor < (<Py_ssize_t> 1 << 31) else (<Py_ssize_t> 1 << 31))
    cdef uint64_t limit64 = <uint64_t> n_minor
    if index_t is int32_t:
        for k in range(n):
            bad += (<uint32_t> own[k]) >= limit32
    else:
        for k in range(n):
            bad += (<uint64_t> own[k]) >= limit64
    return bad


cdef inline Py_ssize_t _count_falls(const index_t* own, Py_ssize_t n) noexcept nogil:
    """How many positions ``k >= 1`` of ``own[0:n]`` hold an index not above the one before."""
    cdef Py_ssize_t k, down = 0
    for k in range(1, n):
        down += own[k] <= own[k - 1]
    return down


cdef Py_ssize_t _copy_segment_block(const index_t* indptr, Py_ssize_t n_seg, const index_t* indices, index_t* own,
                                    Py_ssize_t nnz, Py_ssize_t n_minor, const storage_t* x, storage_t* y,
                                    bint use_max_norm, double norm, bint additive_eps) noexcept nogil:
    """One work item of ``copy_segments_normalize``: the ``n_seg`` segments bounded by ``indptr[0:n_seg + 1]``.

    Returns 1, leaving ``y`` unwritten, when the block's structure is
    invalid or not canonical; else normalises its segments and returns 0.
    """
    cdef Py_ssize_t p, start, lo = indptr[0], hi = indptr[n_seg], down = 0, boundary = 0
    cdef double scales[SEGMENT_BLOCK]
    if lo < 0 or hi < lo or hi > nnz:
        return 1
    for p in range(n_seg):
        down += indptr[p + 1] < indptr[p]
    if down:
        return 1
    if hi == lo:
        return 0
    memcpy(own + lo, indices + lo, (hi - lo) * sizeof(index_t))
    if _count_out_of_range(own + lo, hi - lo, n_minor):
        return 1
    # Canonical when every fall lies at the start of a segment (where the indices may restart).
    for p in range(1, n_seg):
        start = indptr[p]
        if lo < start < indptr[p + 1]:
            boundary += own[start] <= own[start - 1]
    if _count_falls(own + lo, hi - lo) != boundary:
        return 1
    # Three passes over the block's segments instead of one per segment: the sums, then the
    # scales, then the scaling.  Each pass's iterations are independent, so the processor
    # overlaps many short segments instead of waiting on each one's sqrt and division.
    for p in range(n_seg):
        scales[p] = _sum_squares(x + indptr[p], indptr[p + 1] - indptr[p])
    for p in range(n_seg):
        start = indptr[p]
        scales[p] = _scale_of_sum(x + start, indptr[p + 1] - start, scales[p], use_max_norm, norm, additive_eps)
    for p in range(n_seg):
        start = indptr[p]
        _scale_into(x + start, y + start, indptr[p + 1] - start, scales[p])
    return 0


def copy_segments_normalize(const index_t[::1] indptr, const index_t[::1] indices, index_t[::1] own_indices,
                            Py_ssize_t n_minor, const storage_t[::1] src, storage_t[::1] dst,
                            bint use_max_norm, double norm, bint additive_eps, int n_threads):
    """Copy ``indices`` into ``own_indices``, check the copy, and normalise every stored segment from src into dst.

    ``indptr`` must be the caller's private copy (nobody else writes it);
    ``own_indices``, ``src`` and ``dst`` have ``nnz`` values and ``indices``
    at least that many.  The segments are taken in blocks of
    ``SEGMENT_BLOCK``; a block whose bounds are not within ``[0, nnz]`` in
    order, or whose copied indices do not strictly increase within each
    segment and lie within ``[0, n_minor)``, is counted and its ``dst`` left
    unwritten.  Each segment's result is that of ``segment_normalize``.

    Returns the number of such blocks: 0 means that the structure is valid
    and canonical (every index pointer in order, no index out of range, no
    duplicate entry) and ``dst`` holds the result.
    """
    cdef Py_ssize_t n_major = indptr.shape[0] - 1, nnz = src.shape[0]
    cdef Py_ssize_t n_blocks, b, first, count, failed = 0
    cdef const index_t* ip
    cdef index_t* op
    cdef const storage_t* xp
    cdef storage_t* yp
    if dst.shape[0] != nnz or own_indices.shape[0] != nnz or indices.shape[0] < nnz:
        raise ValueError("copy_segments_normalize: src, dst and own_indices must have nnz values, indices at least")
    if n_major <= 0:
        return 0
    if nnz == 0:
        for b in range(n_major + 1):
            failed += indptr[b] != 0
        return failed
    ip = &indices[0]
    op = &own_indices[0]
    xp = &src[0]
    yp = &dst[0]
    n_blocks = (n_major + SEGMENT_BLOCK - 1) // SEGMENT_BLOCK
    for b in prange(n_blocks, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_blocks > 1 and (nnz > PARALLEL_MIN_WORK or n_major > PARALLEL_MIN_WORK)):
        first = b * SEGMENT_BLOCK
        count = n_major - first
        if count > SEGMENT_BLOCK:
            count = SEGMENT_BLOCK
        failed += _copy_segment_block(&indptr[first], count, ip, op, nnz, n_minor, xp, yp, use_max_norm, norm,
                                      additive_eps)
    return failed


cdef Py_ssize_t _copy_chunk(const index_t* indices, index_t* own, Py_ssize_t n, Py_ssize_t n_minor,
                            Py_ssize_t* falls) noexcept nogil:
    """Copy one chunk of ``indices`` into ``own`` and check the copy (see ``copy_cross_sums``).

    Returns the number of copied indices out of ``[0, n_minor)``; sets
    ``falls`` to the number of positions ``k >= 1`` of the chunk whose index
    is not above the one before it.
    """
    if n == 0:
        falls[0] = 0
        return 0
    memcpy(own, indices, n * sizeof(index_t))
    falls[0] = _count_falls(own, n)
    return _count_out_of_range(own, n, n_minor)


cdef Py_ssize_t _falls_at_segment_starts(const index_t* indptr, Py_ssize_t n_major, const index_t* own,
                                         Py_ssize_t begin, Py_ssize_t end, bint* starts_at_begin) noexcept nogil:
    """Falls at the starts of non-empty segments inside ``(begin, end)``; whether one starts at ``begin``.

    Run by each chunk of ``copy_cross_sums`` right after its copy, while
    ``own[begin:end]`` is still in the cache (a pass over every segment
    start after all chunks, reading ``own`` from memory again, took ~17% of
    the kernel; in one process, 100,000 x 1,000 CSR at 1%: 1,454 -> 1,402 us
    with 1 thread, 958 -> 922 us with 2).  Exact when ``indptr`` is valid (ascending within
    ``[0, nnz]``: checked separately); whatever it holds, only
    ``own[begin:end]`` is read and at most ``n_major`` segments are visited.
    """
    cdef Py_ssize_t lo = 0, hi = n_major, mid, i, start, count = 0
    starts_at_begin[0] = False
    while lo < hi:  # the first segment starting at or after begin
        mid = lo + (hi - lo) // 2
        if indptr[mid] < begin:
            lo = mid + 1
        else:
            hi = mid
    for i in range(lo, n_major):
        start = indptr[i]
        if start >= end:
            break
        if start >= begin and start < indptr[i + 1]:
            if start == begin:
                starts_at_begin[0] = True
            else:
                count += own[start] <= own[start - 1]
    return count


cdef inline void _add_square(const storage_t* x, Py_ssize_t k, double* row, index_t j) noexcept nogil:
    """``row[j] += x[k] ** 2`` in float64 (a float16 square is exact in float32)."""
    cdef float hx
    if storage_t is uint16_t:
        hx = c2o_half_to_float(x[k])
        row[j] += <double> (hx * hx)
    else:
        row[j] += <double> x[k] * x[k]


cdef void _chunk_sums(const index_t* own_a, const storage_t* x_a, Py_ssize_t n_a, double* row_a,
                      const index_t* own_b, const storage_t* x_b, Py_ssize_t n_b, double* row_b) noexcept nogil:
    """Add the squares of chunk a into ``row_a`` and of chunk b into ``row_b``, each in storage order.

    The two chunks are walked side by side (``n_b`` may be 0): two
    independent streams of scattered additions keep the processor busier
    than one, whose additions may hit the same partial sum a few values
    apart.  Each row's order, and so its bits, is that of walking its chunk
    alone.  The indices were copied and checked by ``_copy_chunk``.
    """
    cdef Py_ssize_t k, both = n_a if n_a < n_b else n_b
    for k in range(both):
        _add_square(x_a, k, row_a, own_a[k])
        _add_square(x_b, k, row_b, own_b[k])
    for k in range(both, n_a):
        _add_square(x_a, k, row_a, own_a[k])
    for k in range(both, n_b):
        _add_square(x_b, k, row_b, own_b[k])


def copy_cross_sums(const index_t[::1] indptr, const index_t[::1] indices, index_t[::1] own_indices,
                    const storage_t[::1] data, double[:, ::1] partial, int n_threads):
    """``cross_partial_sums`` that also copies ``indices`` into ``own_indices`` and checks the structure.

    ``indptr`` must be the caller's private copy; ``own_indices`` and
    ``data`` have ``nnz`` values, ``indices`` at least that many.  The
    chunks and the order of the sums are exactly those of
    ``cross_partial_sums``, so the sums are the same bits.

    Returns the number of faults: indices out of ``[0, partial.shape[1])``,
    segments whose bounds are not within ``[0, nnz]`` in order, and
    positions where the indices do not increase within a segment (duplicate
    or unsorted entries).  0 means that ``partial`` holds the sums of a
    valid, canonical structure.
    """
    cdef Py_ssize_t n_chunks = partial.shape[0], n_minor = partial.shape[1], nnz = data.shape[0]
    cdef Py_ssize_t n_major = indptr.shape[0] - 1
    cdef Py_ssize_t c, i, begin, end, bad = 0, falls = 0, broken = 0
    cdef Py_ssize_t item, n_items, per_item, ca, cb, begin_b, end_b, item_bad, seg_begin, seg_end
    cdef Py_ssize_t chunk_falls[64]
    cdef bint chunk_starts_segment[64]
    cdef const index_t* ip
    cdef index_t* op
    cdef const storage_t* xp
    if own_indices.shape[0] != nnz or indices.shape[0] < nnz or n_major < 0:
        raise ValueError("copy_cross_sums: own_indices and data must have nnz values, indices at least")
    if n_chunks > 64:
        raise ValueError("copy_cross_sums: at most 64 chunks")
    if n_chunks == 0 or n_minor == 0 or nnz == 0:
        return 0 if nnz == 0 else 1
    ip = &indices[0]
    op = &own_indices[0]
    xp = &data[0]
    # A work item takes two chunks (see _chunk_sums) when that still leaves two items per
    # thread; the chunks, and so the bits, are the same either way.
    per_item = 2 if n_chunks >= 4 * n_threads else 1
    n_items = (n_chunks + per_item - 1) // per_item
    # One parallel region, two loops: the chunks (each also checks the segment starts inside it),
    # then the bounds of every segment.
    with nogil, parallel(num_threads=n_threads, use_threads_if=n_items > 1):
        for item in prange(n_items, schedule="static"):
            ca = item * per_item
            cb = ca + 1 if per_item == 2 and ca + 1 < n_chunks else ca
            begin = ca * nnz // n_chunks
            end = (ca + 1) * nnz // n_chunks
            begin_b = cb * nnz // n_chunks
            end_b = (cb + 1) * nnz // n_chunks if cb != ca else begin_b
            chunk_falls[cb] = 0
            memset(&partial[ca, 0], 0, n_minor * sizeof(double))
            item_bad = _copy_chunk(ip + begin, op + begin, end - begin, n_minor, &chunk_falls[ca])
            if cb != ca:
                memset(&partial[cb, 0], 0, n_minor * sizeof(double))
                item_bad = item_bad + _copy_chunk(ip + begin_b, op + begin_b, end_b - begin_b, n_minor,
                                                  &chunk_falls[cb])
            if item_bad == 0:
                _chunk_sums(op + begin, xp + begin, end - begin, &partial[ca, 0],
                            op + begin_b, xp + begin_b, end_b - begin_b, &partial[cb, 0])
            # Canonical when every fall lies at the start of a segment: those are not faults.
            chunk_falls[ca] -= _falls_at_segment_starts(&indptr[0], n_major, op, begin, end,
                                                        &chunk_starts_segment[ca])
            if cb != ca:
                chunk_falls[cb] -= _falls_at_segment_starts(&indptr[0], n_major, op, begin_b, end_b,
                                                            &chunk_starts_segment[cb])
            bad += item_bad
        for i in prange(n_major, schedule="static"):
            seg_begin = indptr[i]
            seg_end = indptr[i + 1]
            if seg_begin < 0 or seg_end < seg_begin or seg_end > nnz:
                broken += 1
    if bad:
        return bad
    for c in range(n_chunks):
        falls += chunk_falls[c]
        begin = c * nnz // n_chunks
        if begin > 0 and begin < (c + 1) * nnz // n_chunks and not chunk_starts_segment[c]:
            falls += op[begin] <= op[begin - 1]
    return broken + falls


def apply_scales(const index_t[::1] own_indices, const storage_t[::1] src, storage_t[::1] dst,
                 const double[::1] scales, int n_threads):
    """``dst[k] = src[k] * scales[own_indices[k]]``: ``cross_apply`` for indices the call owns and checked.

    ``own_indices`` must be a private copy already checked to lie within
    ``scales`` (``copy_cross_sums`` returned 0): no index is re-checked.
    float32 and float16 values are multiplied by the scales rounded to
    float32, exactly as ``cross_apply`` does.
    """
    cdef Py_ssize_t nnz = src.shape[0], k, piece, begin, count
    cdef int stream = nnz * <Py_ssize_t> sizeof(storage_t) >= STREAM_MIN_BYTES
    cdef const double* sp
    cdef float[::1] fscales
    cdef const float* fp
    if dst.shape[0] != nnz or own_indices.shape[0] != nnz:
        raise ValueError("apply_scales: src, dst and own_indices must have the same length")
    if nnz == 0:
        return
    sp = &scales[0]
    if storage_t is uint16_t:
        fscales = np.asarray(scales, dtype=np.float32)
        fp = &fscales[0]
        for k in prange(nnz, nogil=True, schedule="static", num_threads=n_threads,
                        use_threads_if=nnz > PARALLEL_MIN_WORK):
            dst[k] = c2o_float_to_half(c2o_half_to_float(src[k]) * fp[own_indices[k]])
    else:
        if storage_t is float:
            fscales = np.asarray(scales, dtype=np.float32)
            fp = &fscales[0]
        # Pieces of APPLY_PIECE values, so that the gathers run over whole vectors.
        for piece in prange((nnz + APPLY_PIECE - 1) // APPLY_PIECE, nogil=True, schedule="static",
                            num_threads=n_threads, use_threads_if=nnz > PARALLEL_MIN_WORK):
            begin = piece * APPLY_PIECE
            count = min(APPLY_PIECE, nnz - begin)
            if storage_t is float:
                if index_t is int32_t:
                    c2o_gather_scale_f32_i32(&own_indices[begin], &src[begin], &dst[begin], fp, count, stream)
                else:
                    c2o_gather_scale_f32_i64(&own_indices[begin], &src[begin], &dst[begin], fp, count, stream)
            else:
                if index_t is int32_t:
                    c2o_gather_scale_f64_i32(&own_indices[begin], &src[begin], &dst[begin], sp, count, stream)
                else:
                    c2o_gather_scale_f64_i64(&own_indices[begin], &src[begin], &dst[begin], sp, count, stream)
