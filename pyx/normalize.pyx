# SPDX-License-Identifier: BSD-3-Clause
"""CPU kernels of Normalize and NormalizeGradient, on dense arrays and on compressed sparse storage.

The caller (``caffe2op.ops.normalize``) has already checked dtypes, shapes,
contiguity and the index structure of sparse inputs; these kernels trust
their arguments and run without the GIL.

Every vector is reduced by exactly one thread, in an order fixed by the
input's shape alone, so results never depend on the number of threads:

* Dense, ``axis`` last (``inner == 1``): each vector is a contiguous row.
  One thread sums its squares (eight partial sums, one per position modulo 8,
  combined in a fixed order), computes the scale and writes the row while it
  is still in cache: one pass over memory.
* Dense, any other axis: the array is seen as ``(outer, n, inner)`` and a
  work item is one ``outer`` index and a block of at most ``COLUMN_BLOCK``
  consecutive ``inner`` positions.  The item accumulates the squares of its
  columns over ``k`` (four rows per sweep, in increasing ``k``) into
  per-thread accumulators (a contiguous, vectorisable inner loop), turns them
  into scales and scales the block row by row: two passes over memory, both
  sequential, and no transposed copy.  The block width depends on the thread
  count (for load balance); a column's sum never does.
* Compressed sparse, along the compressed direction (CSR rows, CSC columns):
  each stored segment ``data[indptr[i]:indptr[i + 1]]`` is a vector.
* Compressed sparse, across it (CSR columns, CSC rows): the stored values are
  cut into ``partial.shape[0]`` equal chunks (a number the caller derives
  from ``nnz`` and the number of vectors only); each chunk scatter-adds the
  squares of its values into its own row of partial sums, in parallel, and
  the rows are then added in chunk order.

Precision: every dtype accumulates its squares in float64 (a float16 square
is exact in float32 and is added to a float64 sum), so a norm stays accurate
at any length.  float64 sums that overflowed or fell into the range where
squares lose precision (outside ``[2**-960, DBL_MAX]``) are recomputed with
the vector scaled by a power of two (the ``nrm2`` remedy): only those rare
vectors pay a second pass, and a vector of 1e200 or 1e-200 values gets its
exact norm.  float32 and float16 squares cannot overflow or underflow a
float64 sum.  float64 data are scaled in float64; float32 and float16 data
are multiplied in float32 by the scale rounded to float32 (float16 results
rounded to nearest even), as Caffe2's float kernels computed them: within
one float32 ulp of the exact quotient.

Index arrays belong to the caller, who may write them from another thread
while a kernel runs.  The Python layer validates them first; the kernels
then read each index or index pointer exactly once (``read_once``), check it
against the bounds they were given and skip it when it is out of range,
returning how many they skipped, so that a concurrent writer can never make
them read or write outside their arrays (the caller turns a non-zero count
into a ValueError).  The check costs one compare on a value already loaded.

Scale of a vector with L2 norm ``n`` (``norm`` and ``use_max_norm`` as in
SparseNormalize; Normalize is ``norm=1``, ``use_max_norm=False``):

* ``use_max_norm and n <= norm``: untouched (scale 1);
* Normalize's rule: ``norm / max(n, 1e-12)``, so an all-zero vector stays
  zero and a NaN norm propagates;
* SparseNormalize's rule (``additive_eps``): ``norm / (n + 1e-12)``, and an
  all-zero vector is left alone.
"""

import numpy as np

from cython.parallel cimport prange, threadid
from libc.float cimport DBL_MAX
from libc.math cimport fabs, frexp, ldexp, sqrt
from libc.string cimport memset

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

cdef double EPS = 1e-12
# float64 sums of squares below this may have lost precision to underflowed squares
# (relative error below n * 2**-115); above DBL_MAX they overflowed.  Either way the
# vector's norm is recomputed with its values scaled by a power of two.
cdef double SUMSQ_TINY = ldexp(1.0, -960)
# Marks a column without rescue in _rescue_columns (binary exponents lie in -1074..1024).
cdef double NO_RESCUE = -1e9

# Below this many elements of work a parallel region costs more than it saves.
cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 15

cdef enum:
    # Accumulators per dense column work item (on the item's stack).
    COLUMN_BLOCK = 8192
    # Narrowest column block: a whole 64-byte line of float32.
    COLUMN_MIN = 16

# Modes of the segment kernel.
SEGMENT_SCALES = 0      # compute each segment's scale into ``scales`` only
SEGMENT_NORMALIZE = 1   # compute each segment's scale and apply it
SEGMENT_APPLY = 2       # apply the scales given in ``scales``
cdef enum:
    _SCALES = 0
    _NORMALIZE = 1
    _APPLY = 2

# Storage: float32, float64, or float16 bit patterns computed in float32.
ctypedef fused storage_t:
    float
    double
    uint16_t


# ---------------------------------------------------------------- scale rules

cdef inline index_t _read_index(const index_t* p) noexcept nogil:
    """``*p`` read exactly once (see the module docstring)."""
    if index_t is int32_t:
        return c2o_normalize_read_i32(p)
    else:
        return c2o_normalize_read_i64(p)


cdef inline double _scale_of_norm(double n, bint use_max_norm, double norm, bint additive_eps) noexcept nogil:
    """Scale of a vector whose L2 norm is ``n`` (1.0 means untouched)."""
    if use_max_norm and n <= norm:
        return 1.0
    if additive_eps:
        return 1.0 if n == 0 else norm / (n + EPS)
    # max(n, eps) that keeps a NaN norm NaN, as numpy.maximum does.
    return norm / (EPS if n < EPS else n)


cdef inline double _scale(double sumsq, bint use_max_norm, double norm, bint additive_eps) noexcept nogil:
    """Scale of a vector whose squares sum to ``sumsq`` (1.0 means untouched)."""
    return _scale_of_norm(sqrt(sumsq), use_max_norm, norm, additive_eps)


cdef inline bint _needs_rescue(double sumsq) noexcept nogil:
    """Whether a float64 sum of squares may have overflowed or lost precision (NaN: no)."""
    return sumsq < SUMSQ_TINY or sumsq > DBL_MAX


cdef double _scale_of_split_norm(double mantissa, int exponent, bint use_max_norm, double norm,
                                 bint additive_eps) noexcept nogil:
    """``_scale_of_norm`` of the norm ``mantissa * 2**exponent``, which may exceed DBL_MAX."""
    cdef double n = ldexp(mantissa, exponent)
    if n > DBL_MAX:
        # Beyond every representable norm (``norm`` and eps are finite): the scale is norm / n, taken apart.
        return ldexp(norm / mantissa, -exponent)
    return _scale_of_norm(n, use_max_norm, norm, additive_eps)


cdef double _rescued_scale(const double* x, Py_ssize_t n, Py_ssize_t stride, bint use_max_norm, double norm,
                           bint additive_eps) noexcept nogil:
    """Scale of the float64 vector ``x[0], x[stride], ...`` (``n`` values) computed without overflow or underflow.

    The values are multiplied by ``2**-e``, where ``2**e`` bounds the largest
    magnitude (an exact scaling), before they are squared.
    """
    cdef Py_ssize_t j
    cdef double amax = 0, a, t, sumsq = 0
    cdef int e
    for j in range(n):
        a = fabs(x[j * stride])
        if a > amax:
            amax = a
    if amax == 0 or amax > DBL_MAX:
        return _scale_of_norm(amax, use_max_norm, norm, additive_eps)  # all zero, or an infinity
    frexp(amax, &e)
    for j in range(n):
        t = ldexp(x[j * stride], -e)
        sumsq += t * t
    return _scale_of_split_norm(sqrt(sumsq), e, use_max_norm, norm, additive_eps)


# ------------------------------------------------------- contiguous vectors

cdef inline double _sum_squares(const storage_t* x, Py_ssize_t n) noexcept nogil:
    """Sum of squares of ``x[0:n]`` in float64 (a float16 square is exact in float32)."""
    cdef Py_ssize_t j = 0, t
    cdef double acc[8]
    cdef float hx
    # Eight independent sums, one per position modulo 8: a fixed-size inner loop the
    # compiler turns into vector code without reassociating any single sum.
    for t in range(8):
        acc[t] = 0
    if storage_t is uint16_t:
        while j + 8 <= n:
            for t in range(8):
                hx = c2o_half_to_float(x[j + t])
                acc[t] += <double> (hx * hx)
            j += 8
        while j < n:
            hx = c2o_half_to_float(x[j])
            acc[0] += <double> (hx * hx)
            j += 1
    else:
        while j + 8 <= n:
            for t in range(8):
                acc[t] += <double> x[j + t] * x[j + t]
            j += 8
        while j < n:
            acc[0] += <double> x[j] * x[j]
            j += 1
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline void _scale_into(const storage_t* x, storage_t* y, Py_ssize_t n, double scale) noexcept nogil:
    """``y[0:n] = x[0:n] * scale``; nothing to do in place when ``scale == 1``.

    float32 and float16 data are multiplied in float32 by the scale rounded to
    float32 (as Caffe2 computed them); float64 data in float64.
    """
    cdef Py_ssize_t j
    cdef float fscale = <float> scale
    if scale == 1.0 and <const void*> x == <const void*> y:
        return
    if storage_t is uint16_t:
        for j in range(n):
            y[j] = c2o_float_to_half(c2o_half_to_float(x[j]) * fscale)
    elif storage_t is float:
        for j in range(n):
            y[j] = x[j] * fscale
    else:
        for j in range(n):
            y[j] = x[j] * scale


cdef inline double _vector_scale(const storage_t* x, Py_ssize_t n, bint use_max_norm, double norm,
                                 bint additive_eps) noexcept nogil:
    """Scale of the contiguous vector ``x[0:n]``."""
    cdef double sumsq = _sum_squares(x, n)
    if storage_t is double:
        if _needs_rescue(sumsq):
            return _rescued_scale(x, n, 1, use_max_norm, norm, additive_eps)
    return _scale(sumsq, use_max_norm, norm, additive_eps)


# ------------------------------------------------------------ dense columns

cdef void _rescue_columns(const double* x, Py_ssize_t n, Py_ssize_t stride, Py_ssize_t w, double* acc,
                          double* amax, bint use_max_norm, double norm) noexcept nogil:
    """Replace the sums ``acc[i]`` that ``_needs_rescue`` by scales computed with scaled values.

    ``amax`` holds ``w`` float64 values of scratch.  Runs only for blocks with
    such a column: one pass for the largest magnitudes, one for the scaled sums.
    """
    cdef Py_ssize_t i, k
    cdef const double* xk
    cdef double a, t
    cdef int e
    for i in range(w):
        amax[i] = 0
    for k in range(n):
        xk = x + k * stride
        for i in range(w):
            a = fabs(xk[i])
            amax[i] = a if a > amax[i] else amax[i]
    # amax[i] becomes the exponent of the column's scaling, or NO_RESCUE for columns that keep their sum.
    for i in range(w):
        if _needs_rescue(acc[i]) and 0 < amax[i] <= DBL_MAX:
            frexp(amax[i], &e)
            amax[i] = e
            acc[i] = 0
        else:
            amax[i] = NO_RESCUE
    for k in range(n):
        xk = x + k * stride
        for i in range(w):
            if amax[i] != NO_RESCUE:
                t = ldexp(xk[i], -<int> amax[i])
                acc[i] += t * t
    for i in range(w):
        if amax[i] != NO_RESCUE:
            acc[i] = _scale_of_split_norm(sqrt(acc[i]), <int> amax[i], use_max_norm, norm, False)
        elif _needs_rescue(acc[i]):
            acc[i] = _scale_of_norm(sqrt(acc[i]), use_max_norm, norm, False)  # zero or infinite: exact
        else:
            acc[i] = _scale(acc[i], use_max_norm, norm, False)


cdef void _normalize_columns(const storage_t* x, storage_t* y, Py_ssize_t n, Py_ssize_t stride, Py_ssize_t w,
                             double* acc, bint use_max_norm, double norm) noexcept nogil:
    """Normalise the ``w`` columns ``x[k * stride + i]`` (``k < n``, ``i < w``) along ``k``.

    ``acc`` holds ``2 * w`` float64 values: the accumulators, then the
    float32 scales of float32 and float16 data (scratch for float64 rescues).
    """
    cdef float* fscale = <float*> (acc + w)
    cdef Py_ssize_t i, k, rescues = 0
    cdef const storage_t* x0
    cdef const storage_t* x1
    cdef const storage_t* x2
    cdef const storage_t* x3
    cdef storage_t* yk
    cdef float h0, h1, h2, h3
    for i in range(w):
        acc[i] = 0
    # Four rows per sweep: a quarter of the accumulator traffic.  Each column is
    # still summed in one fixed order, whatever the block width and thread count.
    k = 0
    while k + 4 <= n:
        x0 = x + k * stride
        x1 = x0 + stride
        x2 = x1 + stride
        x3 = x2 + stride
        if storage_t is uint16_t:
            for i in range(w):
                h0 = c2o_half_to_float(x0[i])
                h1 = c2o_half_to_float(x1[i])
                h2 = c2o_half_to_float(x2[i])
                h3 = c2o_half_to_float(x3[i])
                acc[i] += (<double> (h0 * h0) + <double> (h1 * h1)) + (<double> (h2 * h2) + <double> (h3 * h3))
        else:
            for i in range(w):
                acc[i] += ((<double> x0[i] * x0[i] + <double> x1[i] * x1[i])
                           + (<double> x2[i] * x2[i] + <double> x3[i] * x3[i]))
        k += 4
    while k < n:
        x0 = x + k * stride
        if storage_t is uint16_t:
            for i in range(w):
                h0 = c2o_half_to_float(x0[i])
                acc[i] += <double> (h0 * h0)
        else:
            for i in range(w):
                acc[i] += <double> x0[i] * x0[i]
        k += 1
    if storage_t is double:
        for i in range(w):
            rescues += _needs_rescue(acc[i])
        if rescues:
            _rescue_columns(x, n, stride, w, acc, acc + w, use_max_norm, norm)
        else:
            for i in range(w):
                acc[i] = _scale(acc[i], use_max_norm, norm, False)
        for k in range(n):
            x0 = x + k * stride
            yk = y + k * stride
            for i in range(w):
                yk[i] = x0[i] * acc[i]
    else:
        for i in range(w):
            fscale[i] = <float> _scale(acc[i], use_max_norm, norm, False)
        for k in range(n):
            x0 = x + k * stride
            yk = y + k * stride
            if storage_t is uint16_t:
                for i in range(w):
                    yk[i] = c2o_float_to_half(c2o_half_to_float(x0[i]) * fscale[i])
            else:
                for i in range(w):
                    yk[i] = x0[i] * fscale[i]


cdef Py_ssize_t _column_block_width(Py_ssize_t outer, Py_ssize_t inner, int n_threads,
                                    Py_ssize_t max_width) noexcept nogil:
    """Columns per work item: at most ``max_width``, and enough items to keep every thread busy."""
    cdef Py_ssize_t blocks = (inner + max_width - 1) // max_width
    cdef Py_ssize_t width
    if outer * blocks < n_threads:
        blocks = (n_threads + outer - 1) // outer
        if blocks > (inner + COLUMN_MIN - 1) // COLUMN_MIN:
            blocks = (inner + COLUMN_MIN - 1) // COLUMN_MIN
    width = (inner + blocks - 1) // blocks
    width = ((width + COLUMN_MIN - 1) // COLUMN_MIN) * COLUMN_MIN
    return max_width if width > max_width else width


def normalize_dense(const storage_t[:, :, ::1] x, storage_t[:, :, ::1] y, bint use_max_norm, double norm,
                    int n_threads):
    """Normalise ``x`` (seen as ``(outer, n, inner)``) along axis 1 into ``y`` (may be ``x``)."""
    cdef Py_ssize_t outer = x.shape[0], n = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t o, item, width, n_blocks, start, w
    cdef const storage_t* xp
    cdef storage_t* yp
    cdef double* acc
    cdef double[:, ::1] buffers
    cdef bint threads = outer * n * inner > PARALLEL_MIN_WORK
    if outer == 0 or n == 0 or inner == 0:
        return
    xp = &x[0, 0, 0]
    yp = &y[0, 0, 0]
    if inner == 1:
        for o in prange(outer, nogil=True, schedule="static", num_threads=n_threads, use_threads_if=threads):
            _scale_into(xp + o * n, yp + o * n, n, _vector_scale(xp + o * n, n, use_max_norm, norm, False))
        return
    width = _column_block_width(outer, inner, n_threads if threads else 1, COLUMN_BLOCK)
    n_blocks = (inner + width - 1) // width
    # One row of accumulators (and float32 scales) per thread.
    buffers = np.empty((n_threads if threads else 1, 2 * width), dtype=np.float64)
    for item in prange(outer * n_blocks, nogil=True, schedule="static", num_threads=n_threads,
                       use_threads_if=threads):
        acc = &buffers[threadid(), 0]
        o = item // n_blocks
        start = (item % n_blocks) * width
        w = inner - start
        if w > width:
            w = width
        _normalize_columns(xp + o * n * inner + start, yp + o * n * inner + start, n, inner, w, acc,
                           use_max_norm, norm)


# ------------------------------------------------------------ dense gradient

cdef inline void _grad_factors(double sxx, double sxy, double* a, double* b) noexcept nogil:
    """``dX = dY * a - X * b`` with ``a = 1/n``, ``b = <x, dy>/n**3``, ``n = max(||x||, eps)``."""
    cdef double n = sqrt(sxx)
    n = EPS if n < EPS else n
    a[0] = 1.0 / n
    b[0] = sxy / (n * n * n)


cdef void _grad_vector(const storage_t* x, const storage_t* dy, storage_t* dx, Py_ssize_t n) noexcept nogil:
    """NormalizeGradient of one contiguous vector (float64 sums; float16 products are exact in float32)."""
    cdef Py_ssize_t j
    cdef double sxx0 = 0, sxx1 = 0, sxy0 = 0, sxy1 = 0, a, b
    cdef float hx, hy, ha, hb
    if storage_t is uint16_t:
        j = 0
        while j + 2 <= n:
            hx = c2o_half_to_float(x[j])
            hy = c2o_half_to_float(dy[j])
            sxx0 += <double> (hx * hx)
            sxy0 += <double> (hx * hy)
            hx = c2o_half_to_float(x[j + 1])
            hy = c2o_half_to_float(dy[j + 1])
            sxx1 += <double> (hx * hx)
            sxy1 += <double> (hx * hy)
            j += 2
        if j < n:
            hx = c2o_half_to_float(x[j])
            hy = c2o_half_to_float(dy[j])
            sxx0 += <double> (hx * hx)
            sxy0 += <double> (hx * hy)
        _grad_factors(sxx0 + sxx1, sxy0 + sxy1, &a, &b)
        ha = <float> a
        hb = <float> b
        for j in range(n):
            dx[j] = c2o_float_to_half(c2o_half_to_float(dy[j]) * ha - c2o_half_to_float(x[j]) * hb)
    else:
        j = 0
        while j + 2 <= n:
            sxx0 += <double> x[j] * x[j]
            sxy0 += <double> x[j] * dy[j]
            sxx1 += <double> x[j + 1] * x[j + 1]
            sxy1 += <double> x[j + 1] * dy[j + 1]
            j += 2
        if j < n:
            sxx0 += <double> x[j] * x[j]
            sxy0 += <double> x[j] * dy[j]
        _grad_factors(sxx0 + sxx1, sxy0 + sxy1, &a, &b)
        for j in range(n):
            dx[j] = <storage_t> (dy[j] * a - x[j] * b)


cdef void _grad_columns(const storage_t* x, const storage_t* dy, storage_t* dx, Py_ssize_t n, Py_ssize_t stride,
                        Py_ssize_t w, double* acc) noexcept nogil:
    """NormalizeGradient of ``w`` strided columns (see ``_normalize_columns``); ``acc`` holds ``2 * w``."""
    cdef double* axx = acc
    cdef double* axy = acc + w
    cdef Py_ssize_t i, k, off
    cdef float hx
    for i in range(w):
        axx[i] = 0
        axy[i] = 0
    for k in range(n):
        off = k * stride
        if storage_t is uint16_t:
            for i in range(w):
                hx = c2o_half_to_float(x[off + i])
                axx[i] += <double> (hx * hx)
                axy[i] += <double> (hx * c2o_half_to_float(dy[off + i]))
        else:
            for i in range(w):
                axx[i] += <double> x[off + i] * x[off + i]
                axy[i] += <double> x[off + i] * dy[off + i]
    for i in range(w):
        _grad_factors(axx[i], axy[i], &axx[i], &axy[i])
    if storage_t is uint16_t:
        for k in range(n):
            off = k * stride
            for i in range(w):
                dx[off + i] = c2o_float_to_half(
                    c2o_half_to_float(dy[off + i]) * <float> axx[i] - c2o_half_to_float(x[off + i]) * <float> axy[i]
                )
    else:
        for k in range(n):
            off = k * stride
            for i in range(w):
                dx[off + i] = <storage_t> (dy[off + i] * axx[i] - x[off + i] * axy[i])


def normalize_gradient_dense(const storage_t[:, :, ::1] x, const storage_t[:, :, ::1] dy, storage_t[:, :, ::1] dx,
                             int n_threads):
    """NormalizeGradient along axis 1 of ``(outer, n, inner)`` arrays: ``dx = dy/n - x <x, dy>/n**3``."""
    cdef Py_ssize_t outer = x.shape[0], n = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t o, item, width, n_blocks, start, w, off
    cdef const storage_t* xp
    cdef const storage_t* dyp
    cdef storage_t* dxp
    cdef double[:, ::1] buffers
    cdef bint threads = outer * n * inner > PARALLEL_MIN_WORK
    if outer == 0 or n == 0 or inner == 0:
        return
    xp = &x[0, 0, 0]
    dyp = &dy[0, 0, 0]
    dxp = &dx[0, 0, 0]
    if inner == 1:
        for o in prange(outer, nogil=True, schedule="static", num_threads=n_threads, use_threads_if=threads):
            _grad_vector(xp + o * n, dyp + o * n, dxp + o * n, n)
        return
    width = _column_block_width(outer, inner, n_threads if threads else 1, COLUMN_BLOCK)
    n_blocks = (inner + width - 1) // width
    buffers = np.empty((n_threads if threads else 1, 2 * width), dtype=np.float64)
    for item in prange(outer * n_blocks, nogil=True, schedule="static", num_threads=n_threads,
                       use_threads_if=threads):
        o = item // n_blocks
        start = (item % n_blocks) * width
        w = inner - start
        if w > width:
            w = width
        off = o * n * inner + start
        _grad_columns(xp + off, dyp + off, dxp + off, n, inner, w, &buffers[threadid(), 0])


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


cdef void _segment(const storage_t* x, storage_t* y, Py_ssize_t n, double* scale, int mode,
                   bint use_max_norm, double norm, bint additive_eps) noexcept nogil:
    """One segment of the segment kernel (see ``segment_normalize``)."""
    cdef double s
    if mode == _APPLY:
        s = scale[0]
    else:
        s = _vector_scale(x, n, use_max_norm, norm, additive_eps)
        if mode == _SCALES:
            scale[0] = s
            return
    _scale_into(x, y, n, s)


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
    cdef Py_ssize_t p, seg, begin, end, skipped = 0
    cdef const storage_t* xp
    cdef storage_t* yp
    cdef double* sp
    cdef double unused = 0
    cdef bint threads
    if dst.shape[0] != nnz or (mode != _NORMALIZE and scales.shape[0] < count):
        raise ValueError("segment_normalize: dst must have the length of src, and scales one value per segment")
    if count <= 0 or nnz == 0:
        if mode == _SCALES and count > 0:
            for p in range(count):
                scales[p] = 1.0
        return 0
    xp = &src[0]
    yp = &dst[0]
    sp = &scales[0] if scales.shape[0] > 0 else &unused
    threads = count > 1 and (nnz > PARALLEL_MIN_WORK or count > PARALLEL_MIN_WORK)
    for p in prange(count, nogil=True, schedule="static", num_threads=n_threads, use_threads_if=threads):
        seg = p if all_segments else segments[p]
        if seg < 0 or seg >= n_major:
            skipped += 1
            continue
        begin = _read_index(&indptr[seg])
        end = _read_index(&indptr[seg + 1])
        if begin < 0 or end < begin or end > nnz:
            skipped += 1
            if mode == _SCALES:
                sp[p] = 1.0
            continue
        _segment(xp + begin, yp + begin, end - begin, (sp + p) if mode != _NORMALIZE else &unused, mode,
                 use_max_norm, norm, additive_eps)
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
