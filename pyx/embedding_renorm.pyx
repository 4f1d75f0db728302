# SPDX-License-Identifier: BSD-3-Clause
"""CPU kernel of ``caffe2op.torch.embedding_renorm_``: torch's max-norm rule, any p, in parallel.

torch's CPU ``embedding_renorm_`` sorts the indices, and for each distinct
row computes its p-norm ``n`` in the table's dtype (so float32 and float16
norms are rounded to their dtype), and when ``n > max_norm`` multiplies the
row by ``max_norm / (n + 1e-7)`` (computed in double, then rounded to float
for float32/float16 tables, whose products are taken in float).  The same
rule is applied here, each distinct row by exactly one thread, so the result
does not depend on the thread count.  The caller (``caffe2op.torch``) has
checked dtypes, shapes and arguments; indices are bounds-checked in the pass
that collects the distinct rows, before any row is written.
"""

from cython.parallel cimport prange
from libc.math cimport fabs, fma, fmaf, isnan, pow, sqrt, sqrtf
from libc.stdlib cimport calloc, free, malloc

from _typedefs cimport c2o_float_to_half, c2o_half_to_float, index_t, int64_t, uint16_t, uint64_t

# torch's eps in embedding_renorm_ (Caffe2's SparseNormalize used 1e-12).
cdef double EPS = 1e-7

cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 12

# Kinds of norm; P_GENERAL is (sum |x|^p)^(1/p) for any other p > 0.
P_TWO, P_ONE, P_INF, P_ZERO, P_GENERAL = 0, 1, 2, 3, 4

ctypedef fused storage_t:
    float
    double
    uint16_t


cdef inline double _value(storage_t* row, Py_ssize_t j) noexcept nogil:
    if storage_t is uint16_t:
        return c2o_half_to_float(row[j])
    else:
        return row[j]


cdef inline double _two_norm(storage_t* row, Py_ssize_t block) noexcept nogil:
    """The L2 norm summed as torch's CPU reduction sums it, so that it rounds the same way.

    float32: eight float lanes of rounded products, the lanes added in order,
    then the tail (groups of four rounded products, the rest fused with
    ``fmaf``), ``sqrtf``; float64: the same with four double lanes (a
    fused tail); float16: one float sum.
    """
    cdef Py_ssize_t j = 0, lane
    cdef float facc[8]
    cdef double dacc[4]
    cdef float fs = 0, hx
    cdef double ds = 0
    if storage_t is float:
        for lane in range(8):
            facc[lane] = 0
        while j + 8 <= block:
            for lane in range(8):
                facc[lane] = facc[lane] + row[j + lane] * row[j + lane]
            j += 8
        fs = facc[0]
        for lane in range(1, 8):
            fs = fs + facc[lane]
        while j + 4 <= block:  # torch's compiled tail: products of four, then fused
            for lane in range(4):
                fs = fs + row[j + lane] * row[j + lane]
            j += 4
        while j < block:
            fs = fmaf(row[j], row[j], fs)
            j += 1
        return sqrtf(fs)
    elif storage_t is double:
        for lane in range(4):
            dacc[lane] = 0
        while j + 4 <= block:
            for lane in range(4):
                dacc[lane] = dacc[lane] + row[j + lane] * row[j + lane]
            j += 4
        ds = dacc[0]
        for lane in range(1, 4):
            ds = ds + dacc[lane]
        while j < block:
            ds = fma(row[j], row[j], ds)
            j += 1
        return sqrt(ds)
    else:
        for j in range(block):
            hx = c2o_half_to_float(row[j])
            fs = fs + hx * hx
        return sqrtf(fs)


cdef inline double _row_norm(storage_t* row, Py_ssize_t block, int kind, double p) noexcept nogil:
    """The row's p-norm; sums are taken in float for float32/float16 tables (torch's accumulation type)."""
    cdef Py_ssize_t j
    cdef double s = 0, x
    cdef float fs = 0
    if kind == 0:  # P_TWO
        return _two_norm(row, block)
    if kind == 1:  # P_ONE: one sequential sum, as torch's reduction
        if storage_t is double:
            for j in range(block):
                s = s + fabs(row[j])
            return s
        for j in range(block):
            fs = fs + <float> fabs(_value(row, j))
        return fs
    if kind == 2:  # P_INF: NaN propagates, as in torch's max
        for j in range(block):
            x = fabs(_value(row, j))
            if isnan(x):
                return x
            if x > s:
                s = x
        return s
    if kind == 3:  # P_ZERO: number of non-zero entries
        for j in range(block):
            if _value(row, j) != 0:
                s += 1
        return s
    for j in range(block):
        s += pow(fabs(_value(row, j)), p)
    return pow(s, 1.0 / p)


cdef inline void _renorm_row(storage_t* row, Py_ssize_t block, double max_norm, int kind,
                             double p) noexcept nogil:
    cdef Py_ssize_t j
    cdef double n = _row_norm(row, block, kind, p), scale
    cdef float fscale
    # torch computes the norm in the table's dtype: round it there before comparing.
    if storage_t is float:
        n = <float> n
    elif storage_t is uint16_t:
        n = c2o_half_to_float(c2o_float_to_half(<float> n))
    if not (n > max_norm):
        return
    scale = max_norm / (n + EPS)
    if storage_t is double:
        for j in range(block):
            row[j] = row[j] * scale
    elif storage_t is float:
        fscale = <float> scale
        for j in range(block):
            row[j] = row[j] * fscale
    else:  # torch rounds the scale to the table's dtype (half), then multiplies in float
        fscale = c2o_half_to_float(c2o_float_to_half(<float> scale))
        for j in range(block):
            row[j] = c2o_float_to_half(c2o_half_to_float(row[j]) * fscale)


cdef Py_ssize_t _distinct_rows(const index_t[::1] indices, Py_ssize_t n_rows, int64_t* rows,
                               Py_ssize_t* first_bad) noexcept nogil:
    """The distinct indices in first-occurrence order (their number), stopping at the first bad one."""
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


def embedding_renorm_rows(storage_t[:, ::1] table, const index_t[::1] indices, double max_norm,
                          int kind, double p, int n_threads):
    """Apply torch's max-norm rule to the distinct rows ``table[indices]`` in place.

    Returns -1, or the position of the first index outside ``[0, n_rows)``
    (the table is then untouched).
    """
    cdef Py_ssize_t k = indices.shape[0], block = table.shape[1], n_rows = table.shape[0]
    cdef Py_ssize_t i, n_distinct, first_bad = -1
    cdef int64_t* rows
    cdef storage_t* base = &table[0, 0] if n_rows > 0 and block > 0 else NULL
    if k == 0:
        return -1
    rows = <int64_t*> malloc(k * sizeof(int64_t))
    if rows == NULL:
        raise MemoryError("embedding_renorm_: cannot allocate the list of distinct rows")
    with nogil:
        n_distinct = _distinct_rows(indices, n_rows, rows, &first_bad)
        if n_distinct >= 0 and first_bad < 0 and block > 0:
            for i in prange(n_distinct, schedule="static", num_threads=n_threads,
                            use_threads_if=n_distinct * block > PARALLEL_MIN_WORK):
                _renorm_row(base + rows[i] * block, block, max_norm, kind, p)
    free(rows)
    if n_distinct < 0:
        raise MemoryError("embedding_renorm_: cannot allocate the bitmap of seen rows")
    return first_bad
