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

Precision: float32 and float64 accumulate in float64; float16 (stored as its
uint16 bit pattern) accumulates in float32.  float64 data are scaled in
float64; float32 and float16 data are multiplied in float32 by the scale
rounded to float32 (float16 results rounded to nearest even), as Caffe2's
float kernels computed them: within one float32 ulp of the exact quotient.

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
from libc.math cimport sqrt, sqrtf
from libc.string cimport memset

from _typedefs cimport (
    c2o_float_to_half,
    c2o_half_to_float,
    index_t,
    int32_t,
    int64_t,
    uint16_t,
    uint32_t,
    uint64_t,
)

cdef double EPS = 1e-12

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

cdef inline double _scale(double sumsq, bint use_max_norm, double norm, bint additive_eps) noexcept nogil:
    """Scale of a vector whose squares sum to ``sumsq`` (1.0 means untouched)."""
    cdef double n = sqrt(sumsq)
    if use_max_norm and n <= norm:
        return 1.0
    if additive_eps:
        return 1.0 if n == 0 else norm / (n + EPS)
    # max(n, eps) that keeps a NaN norm NaN, as numpy.maximum does.
    return norm / (EPS if n < EPS else n)


cdef inline float _scale_f(float sumsq, bint use_max_norm, double norm, bint additive_eps) noexcept nogil:
    """``_scale`` in float32 arithmetic (float16 storage)."""
    cdef float n = sqrtf(sumsq), fnorm = <float> norm, feps = <float> EPS
    if use_max_norm and n <= fnorm:
        return 1.0
    if additive_eps:
        return 1.0 if n == 0 else fnorm / (n + feps)
    return fnorm / (feps if n < feps else n)


# ------------------------------------------------------- contiguous vectors

cdef inline double _sum_squares(const storage_t* x, Py_ssize_t n) noexcept nogil:
    """Sum of squares of ``x[0:n]``: float64 accumulation (float32 for float16 storage)."""
    cdef Py_ssize_t j = 0, t
    cdef double acc[8]
    cdef float h0 = 0, h1 = 0, h2 = 0, h3 = 0, hx
    if storage_t is uint16_t:
        # Four partial sums break the dependency chain of the reduction.
        while j + 4 <= n:
            hx = c2o_half_to_float(x[j])
            h0 += hx * hx
            hx = c2o_half_to_float(x[j + 1])
            h1 += hx * hx
            hx = c2o_half_to_float(x[j + 2])
            h2 += hx * hx
            hx = c2o_half_to_float(x[j + 3])
            h3 += hx * hx
            j += 4
        while j < n:
            hx = c2o_half_to_float(x[j])
            h0 += hx * hx
            j += 1
        return (h0 + h1) + (h2 + h3)
    else:
        # Eight independent sums, one per position modulo 8: a fixed-size inner loop the
        # compiler turns into vector code without reassociating any single sum.
        for t in range(8):
            acc[t] = 0
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
    """Scale of the contiguous vector ``x[0:n]`` (a float32 value for float16 storage)."""
    if storage_t is uint16_t:
        return _scale_f(<float> _sum_squares(x, n), use_max_norm, norm, additive_eps)
    else:
        return _scale(_sum_squares(x, n), use_max_norm, norm, additive_eps)


# ------------------------------------------------------------ dense columns

cdef void _normalize_columns(const storage_t* x, storage_t* y, Py_ssize_t n, Py_ssize_t stride, Py_ssize_t w,
                             double* acc, bint use_max_norm, double norm) noexcept nogil:
    """Normalise the ``w`` columns ``x[k * stride + i]`` (``k < n``, ``i < w``) along ``k``.

    ``acc`` holds ``2 * w`` float64 values: the accumulators (float32 ones for
    float16 storage), then the float32 scales of float32 data.
    """
    cdef float* facc = <float*> acc
    cdef float* fscale = <float*> (acc + w)
    cdef Py_ssize_t i, k
    cdef const storage_t* x0
    cdef const storage_t* x1
    cdef const storage_t* x2
    cdef const storage_t* x3
    cdef storage_t* yk
    cdef float hx
    if storage_t is uint16_t:
        for i in range(w):
            facc[i] = 0
        for k in range(n):
            x0 = x + k * stride
            for i in range(w):
                hx = c2o_half_to_float(x0[i])
                facc[i] += hx * hx
        for i in range(w):
            facc[i] = _scale_f(facc[i], use_max_norm, norm, False)
        for k in range(n):
            x0 = x + k * stride
            yk = y + k * stride
            for i in range(w):
                yk[i] = c2o_float_to_half(c2o_half_to_float(x0[i]) * facc[i])
    else:
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
            for i in range(w):
                acc[i] += ((<double> x0[i] * x0[i] + <double> x1[i] * x1[i])
                           + (<double> x2[i] * x2[i] + <double> x3[i] * x3[i]))
            k += 4
        while k < n:
            x0 = x + k * stride
            for i in range(w):
                acc[i] += <double> x0[i] * x0[i]
            k += 1
        for i in range(w):
            acc[i] = _scale(acc[i], use_max_norm, norm, False)
        if storage_t is float:
            for i in range(w):
                fscale[i] = <float> acc[i]
            for k in range(n):
                x0 = x + k * stride
                yk = y + k * stride
                for i in range(w):
                    yk[i] = x0[i] * fscale[i]
        else:
            for k in range(n):
                x0 = x + k * stride
                yk = y + k * stride
                for i in range(w):
                    yk[i] = x0[i] * acc[i]


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


cdef inline void _grad_factors_f(float sxx, float sxy, float* a, float* b) noexcept nogil:
    cdef float n = sqrtf(sxx), feps = <float> EPS
    n = feps if n < feps else n
    a[0] = 1.0 / n
    b[0] = sxy / (n * n * n)


cdef void _grad_vector(const storage_t* x, const storage_t* dy, storage_t* dx, Py_ssize_t n) noexcept nogil:
    """NormalizeGradient of one contiguous vector."""
    cdef Py_ssize_t j
    cdef double sxx0 = 0, sxx1 = 0, sxy0 = 0, sxy1 = 0, a, b
    cdef float hxx0 = 0, hxx1 = 0, hxy0 = 0, hxy1 = 0, hx, hy, ha, hb
    if storage_t is uint16_t:
        j = 0
        while j + 2 <= n:
            hx = c2o_half_to_float(x[j])
            hy = c2o_half_to_float(dy[j])
            hxx0 += hx * hx
            hxy0 += hx * hy
            hx = c2o_half_to_float(x[j + 1])
            hy = c2o_half_to_float(dy[j + 1])
            hxx1 += hx * hx
            hxy1 += hx * hy
            j += 2
        if j < n:
            hx = c2o_half_to_float(x[j])
            hy = c2o_half_to_float(dy[j])
            hxx0 += hx * hx
            hxy0 += hx * hy
        _grad_factors_f(hxx0 + hxx1, hxy0 + hxy1, &ha, &hb)
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
    cdef float* fxx = <float*> acc
    cdef float* fxy = (<float*> acc) + w
    cdef Py_ssize_t i, k, off
    cdef float hx
    if storage_t is uint16_t:
        for i in range(w):
            fxx[i] = 0
            fxy[i] = 0
        for k in range(n):
            off = k * stride
            for i in range(w):
                hx = c2o_half_to_float(x[off + i])
                fxx[i] += hx * hx
                fxy[i] += hx * c2o_half_to_float(dy[off + i])
        for i in range(w):
            _grad_factors_f(fxx[i], fxy[i], &fxx[i], &fxy[i])
        for k in range(n):
            off = k * stride
            for i in range(w):
                dx[off + i] = c2o_float_to_half(
                    c2o_half_to_float(dy[off + i]) * fxx[i] - c2o_half_to_float(x[off + i]) * fxy[i]
                )
    else:
        for i in range(w):
            axx[i] = 0
            axy[i] = 0
        for k in range(n):
            off = k * stride
            for i in range(w):
                axx[i] += <double> x[off + i] * x[off + i]
                axy[i] += <double> x[off + i] * dy[off + i]
        for i in range(w):
            _grad_factors(axx[i], axy[i], &axx[i], &axy[i])
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

    Returns ``(-1, 0)`` when ``indptr`` starts at 0, never decreases and ends
    within ``indices``, and every stored index lies in ``[0, n_minor)``;
    else ``(0, position)`` for the first bad ``indptr`` entry or
    ``(1, position)`` for the first bad index.
    """
    cdef Py_ssize_t i, n_major = indptr.shape[0] - 1, nnz, bad = 0
    cdef uint32_t limit32 = <uint32_t> (n_minor if n_minor < (<Py_ssize_t> 1 << 31) else (<Py_ssize_t> 1 << 31))
    cdef uint64_t limit64 = <uint64_t> n_minor
    if n_major < 0 or indptr[0] != 0:
        return 0, 0
    # Count first (branch-free loops the compiler vectorises), locate only on failure.
    with nogil:
        for i in range(n_major):
            bad += indptr[i + 1] < indptr[i]
    if bad:
        for i in range(n_major):
            if indptr[i + 1] < indptr[i]:
                return 0, i + 1
    nnz = indptr[n_major]
    if nnz > indices.shape[0]:
        return 0, n_major
    with nogil:
        # Negative indices become huge unsigned values: one comparison checks both bounds.
        if index_t is int32_t:
            for i in range(nnz):
                bad += (<uint32_t> indices[i]) >= limit32
        else:
            for i in range(nnz):
                bad += (<uint64_t> indices[i]) >= limit64
    if bad:
        for i in range(nnz):
            if indices[i] < 0 or indices[i] >= n_minor:
                return 1, i
    return -1, 0


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
    """
    cdef Py_ssize_t count = indptr.shape[0] - 1 if all_segments else segments.shape[0]
    cdef Py_ssize_t p, seg, begin, end
    cdef const storage_t* xp
    cdef storage_t* yp
    cdef double* sp = &scales[0] if scales.shape[0] > 0 else NULL
    cdef double unused = 0
    cdef bint threads
    if count <= 0 or src.shape[0] == 0:
        if mode == _SCALES and count > 0:
            for p in range(count):
                scales[p] = 1.0
        return
    xp = &src[0]
    yp = &dst[0]
    threads = count > 1 and (indptr[indptr.shape[0] - 1] > PARALLEL_MIN_WORK or count > PARALLEL_MIN_WORK)
    for p in prange(count, nogil=True, schedule="static", num_threads=n_threads, use_threads_if=threads):
        seg = p if all_segments else segments[p]
        begin = indptr[seg]
        end = indptr[seg + 1]
        _segment(xp + begin, yp + begin, end - begin, (sp + p) if mode != _NORMALIZE else &unused, mode,
                 use_max_norm, norm, additive_eps)


def cross_partial_sums(const index_t[::1] indices, const storage_t[::1] data, double[:, ::1] partial,
                       int n_threads):
    """Sums of squares per minor index, one row of ``partial`` per chunk of the stored values.

    Chunk ``c`` of ``C = partial.shape[0]`` covers ``[c * nnz // C, (c + 1) * nnz // C)``
    with ``nnz = data.shape[0]``; it zeroes its row, then adds in storage
    order.  float16 sums are rounded to float32 at every step (float32
    accumulation held in a float64 buffer).
    """
    cdef Py_ssize_t n_chunks = partial.shape[0], n_minor = partial.shape[1], nnz = data.shape[0]
    cdef Py_ssize_t c, k, begin, end
    cdef double* row
    cdef float hx
    if n_chunks == 0 or n_minor == 0:
        return
    for c in prange(n_chunks, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_chunks > 1):
        row = &partial[c, 0]
        memset(row, 0, n_minor * sizeof(double))
        begin = c * nnz // n_chunks
        end = (c + 1) * nnz // n_chunks
        for k in range(begin, end):
            if storage_t is uint16_t:
                hx = c2o_half_to_float(data[k])
                row[indices[k]] = <float> (<float> row[indices[k]] + hx * hx)
            else:
                row[indices[k]] += <double> data[k] * data[k]


def cross_scales(double[:, ::1] partial, bint half, bint use_max_norm, double norm, bint additive_eps,
                 int n_threads):
    """Add the partial sums in chunk order and replace ``partial[0]`` by the scales of the vectors."""
    cdef Py_ssize_t n_chunks = partial.shape[0], n_minor = partial.shape[1]
    cdef Py_ssize_t j, c
    cdef double s
    cdef float hs
    if n_chunks == 0 or n_minor == 0:
        return
    for j in prange(n_minor, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_minor * n_chunks > PARALLEL_MIN_WORK):
        if half:
            hs = <float> partial[0, j]
            for c in range(1, n_chunks):
                hs = hs + <float> partial[c, j]
            partial[0, j] = _scale_f(hs, use_max_norm, norm, additive_eps)
        else:
            s = partial[0, j]
            for c in range(1, n_chunks):
                s = s + partial[c, j]
            partial[0, j] = _scale(s, use_max_norm, norm, additive_eps)


def cross_apply(const index_t[::1] indices, const storage_t[::1] src, storage_t[::1] dst,
                const double[::1] scales, int n_threads):
    """``dst[k] = src[k] * scales[indices[k]]`` for every stored value (``dst`` may be ``src``)."""
    cdef Py_ssize_t nnz = src.shape[0], k
    cdef double s
    cdef bint inplace
    if nnz == 0:
        return
    inplace = <const void*> &src[0] == <const void*> &dst[0]
    for k in prange(nnz, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=nnz > PARALLEL_MIN_WORK):
        s = scales[indices[k]]
        if inplace and s == 1.0:
            continue
        if storage_t is uint16_t:
            dst[k] = c2o_float_to_half(c2o_half_to_float(src[k]) * <float> s)
        elif storage_t is float:
            dst[k] = src[k] * <float> s
        else:
            dst[k] = src[k] * s


def distinct(const index_t[::1] indices, Py_ssize_t n_rows):
    """The distinct values of ``indices`` (all in ``[0, n_rows)``), int64, in first-occurrence order."""
    cdef Py_ssize_t i, count = 0, k = indices.shape[0]
    cdef int64_t row
    cdef uint64_t bit
    result = np.empty(k, dtype=np.int64)
    seen_array = np.zeros((n_rows + 63) // 64 + 1, dtype=np.uint64)
    cdef int64_t[::1] out = result
    cdef uint64_t[::1] seen = seen_array
    with nogil:
        for i in range(k):
            row = indices[i]
            bit = (<uint64_t> 1) << (row & 63)
            if not (seen[row >> 6] & bit):
                seen[row >> 6] |= bit
                out[count] = row
                count += 1
    return result[:count]
