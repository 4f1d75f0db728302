# SPDX-License-Identifier: BSD-3-Clause
"""CPU kernels of SparseNormalize and Float16SparseNormalize.

The caller (``caffe2op.ops.sparse_normalize``) has already checked dtypes,
contiguity and that every index lies in ``[0, n_rows)``.

Duplicate indices: Caffe2 ran one serial loop, so a repeated row was
normalised twice.  Here the distinct rows are collected first (a bitmap,
first-occurrence order), then normalised in parallel, each by exactly one
thread: no two threads ever touch the same row, and the result does not
depend on the thread count.
"""

from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport calloc, free, malloc

from _typedefs cimport (
    c2o_float_to_half,
    c2o_prefetch,
    c2o_half_to_float,
    index_t,
    int64_t,
    uint16_t,
    uint64_t,
)

# Caffe2's epsilon: rows are scaled by norm / (||row|| + EPS).
cdef double EPS = 1e-12

# Below this many table elements of work a parallel region costs more than it saves.
cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 12

# Rows ahead whose first cache lines are prefetched, and how many bytes of each.
cdef Py_ssize_t PREFETCH_ROWS = 8
cdef Py_ssize_t PREFETCH_BYTES = 256

# Table storage: float32, float64, or float16 bit patterns computed in float32.
ctypedef fused storage_t:
    float
    double
    uint16_t


def count_out_of_range(const index_t[::1] indices, Py_ssize_t n_rows, int n_threads):
    """Return how many indices fall outside ``[0, n_rows)``."""
    cdef Py_ssize_t i, n = indices.shape[0], bad = 0
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n > PARALLEL_MIN_WORK):
        if indices[i] < 0 or indices[i] >= n_rows:
            bad += 1
    return bad


cdef Py_ssize_t _distinct_rows(const index_t[::1] indices, Py_ssize_t n_rows, int64_t* rows,
                               Py_ssize_t* first_bad) noexcept nogil:
    """Write the distinct indices to ``rows`` in first-occurrence order; return their number.

    Stops at the first index outside ``[0, n_rows)`` and stores its position
    in ``first_bad`` (else -1), so that nothing is written when one is bad.
    Returns -1 when the bitmap cannot be allocated.
    """
    cdef Py_ssize_t i, count = 0
    cdef int64_t row
    cdef uint64_t bit
    cdef uint64_t* seen = <uint64_t*> calloc(<size_t> ((n_rows + 63) >> 6) + 1, sizeof(uint64_t))
    first_bad[0] = -1
    if seen == NULL:
        return -1
    for i in range(indices.shape[0]):
        row = indices[i]
        if row < 0 or row >= n_rows:
            first_bad[0] = i
            break
        bit = (<uint64_t> 1) << (row & 63)
        if not (seen[row >> 6] & bit):
            seen[row >> 6] |= bit
            rows[count] = row
            count += 1
    free(seen)
    return count


cdef inline void _prefetch_row(storage_t* row, Py_ssize_t block) noexcept nogil:
    """Prefetch the first cache lines of a row (the hardware prefetcher follows the rest)."""
    cdef char* start = <char*> row
    cdef Py_ssize_t offset, size = block * sizeof(storage_t)
    if size > PREFETCH_BYTES:
        size = PREFETCH_BYTES
    for offset in range(0, size, 64):
        c2o_prefetch(start + offset)


cdef inline void _normalize_row(storage_t* row, Py_ssize_t block, bint use_max_norm,
                                double norm) noexcept nogil:
    """Scale one row in place to L2 norm ``norm`` (Caffe2's rule, see module doc)."""
    cdef Py_ssize_t j = 0
    # float16 accumulates in float32 as Caffe2's Float16SparseNormalize did;
    # float32 and float64 accumulate in float64.
    cdef float hs0 = 0, hs1 = 0, hs2 = 0, hs3 = 0, hx, hn, hscale
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, n, scale
    if storage_t is uint16_t:
        # Four partial sums break the dependency chain of the reduction.
        while j + 4 <= block:
            hx = c2o_half_to_float(row[j])
            hs0 += hx * hx
            hx = c2o_half_to_float(row[j + 1])
            hs1 += hx * hx
            hx = c2o_half_to_float(row[j + 2])
            hs2 += hx * hx
            hx = c2o_half_to_float(row[j + 3])
            hs3 += hx * hx
            j += 4
        while j < block:
            hx = c2o_half_to_float(row[j])
            hs0 += hx * hx
            j += 1
        hn = sqrt((hs0 + hs1) + (hs2 + hs3))
        # A zero row stays zero (Caffe2 multiplied it by norm/eps, which is 0 unless it overflows).
        if (use_max_norm and hn <= <float> norm) or hn == 0:
            return
        hscale = <float> norm / (hn + <float> EPS)
        for j in range(block):
            row[j] = c2o_float_to_half(c2o_half_to_float(row[j]) * hscale)
    else:
        while j + 4 <= block:
            s0 += <double> row[j] * row[j]
            s1 += <double> row[j + 1] * row[j + 1]
            s2 += <double> row[j + 2] * row[j + 2]
            s3 += <double> row[j + 3] * row[j + 3]
            j += 4
        while j < block:
            s0 += <double> row[j] * row[j]
            j += 1
        n = sqrt((s0 + s1) + (s2 + s3))
        if (use_max_norm and n <= norm) or n == 0:
            return
        scale = norm / (n + EPS)
        for j in range(block):
            row[j] = <storage_t> (row[j] * scale)


def sparse_normalize_rows(storage_t[:, ::1] table, const index_t[::1] indices,
                          bint use_max_norm, double norm, int n_threads):
    """Normalise the rows ``table[indices]`` in place (each distinct row once).

    Every index is bounds-checked in the pass that collects the distinct
    rows, before any row is written.  Returns -1, or the position of the
    first index outside ``[0, n_rows)``, in which case the table is untouched.
    """
    cdef Py_ssize_t k = indices.shape[0], block = table.shape[1], n_rows = table.shape[0]
    cdef Py_ssize_t i, n_distinct, first_bad = -1
    cdef int64_t* rows
    cdef storage_t* base = &table[0, 0] if n_rows > 0 and block > 0 else NULL
    if k == 0:
        return -1
    rows = <int64_t*> malloc(k * sizeof(int64_t))
    if rows == NULL:
        raise MemoryError("SparseNormalize: cannot allocate the list of distinct rows")
    with nogil:
        n_distinct = _distinct_rows(indices, n_rows, rows, &first_bad)
        if n_distinct >= 0 and first_bad < 0 and block > 0:
            for i in prange(n_distinct, schedule="static", num_threads=n_threads,
                            use_threads_if=n_distinct * block > PARALLEL_MIN_WORK):
                if i + PREFETCH_ROWS < n_distinct:
                    _prefetch_row(base + rows[i + PREFETCH_ROWS] * block, block)
                _normalize_row(base + rows[i] * block, block, use_max_norm, norm)
    free(rows)
    if n_distinct < 0:
        raise MemoryError("SparseNormalize: cannot allocate the bitmap of seen rows")
    return first_bad
