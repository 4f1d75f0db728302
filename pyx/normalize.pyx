# SPDX-License-Identifier: BSD-3-Clause
"""CPU kernels of Normalize and NormalizeGradient on dense arrays.

The caller (``caffe2op.ops.normalize``) has already checked dtypes, shapes
and contiguity; these kernels trust their arguments and run without the GIL.
The compressed sparse kernels are in ``normalize_sparse.pyx``; the scale
rules and the contiguous-vector helpers both use are in
``_normalize_vectors.pxi`` (precision and scale rules are described there).

Every vector is reduced by exactly one thread, in an order fixed by the
input's shape alone, so results never depend on the number of threads:

* ``axis`` last (``inner == 1``): each vector is a contiguous row.
  One thread sums its squares (eight partial sums, one per position modulo 8,
  combined in a fixed order), computes the scale and writes the row while it
  is still in cache: one pass over memory.
* Any other axis: the array is seen as ``(outer, n, inner)`` and a
  work item is one ``outer`` index and a block of at most ``COLUMN_BLOCK``
  consecutive ``inner`` positions.  The item accumulates the squares of its
  columns over ``k`` (four rows per sweep, in increasing ``k``) into
  per-thread accumulators (a contiguous, vectorisable inner loop), turns them
  into scales and scales the block row by row: two passes over memory, both
  sequential, and no transposed copy.  The block width depends on the thread
  count (for load balance); a column's sum never does.
"""

import numpy as np

from cython.parallel cimport prange, threadid
from libc.float cimport DBL_MAX
from libc.math cimport fabs, frexp, ldexp, sqrt

from _typedefs cimport c2o_float_to_half, c2o_half_to_float, uint16_t

include "_normalize_vectors.pxi"

# Marks a column without rescue in _rescue_columns (binary exponents lie in -1074..1024).
cdef double NO_RESCUE = -1e9

cdef enum:
    # Accumulators per dense column work item (on the item's stack).
    COLUMN_BLOCK = 8192
    # Narrowest column block: a whole 64-byte line of float32.
    COLUMN_MIN = 16


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
