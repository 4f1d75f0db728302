# SPDX-License-Identifier: BSD-3-Clause
# Included by normalize.pyx (dense) and normalize_sparse.pyx (compressed sparse): the scale
# rules and the contiguous-vector helpers of Normalize, compiled into both modules.
#
# Precision: every dtype accumulates its squares in float64 (a float16 square
# is exact in float32 and is added to a float64 sum), so a norm stays accurate
# at any length.  float64 sums that overflowed or fell into the range where
# squares lose precision (outside ``[2**-960, DBL_MAX]``) are recomputed with
# the vector scaled by a power of two (the ``nrm2`` remedy): only those rare
# vectors pay a second pass, and a vector of 1e200 or 1e-200 values gets its
# exact norm.  float32 and float16 squares cannot overflow or underflow a
# float64 sum.  float64 data are scaled in float64; float32 and float16 data
# are multiplied in float32 by the scale rounded to float32 (float16 results
# rounded to nearest even), as Caffe2's float kernels computed them: within
# one float32 ulp of the exact quotient.
#
# Scale of a vector with L2 norm ``n`` (``norm`` and ``use_max_norm`` as in
# SparseNormalize; Normalize is ``norm=1``, ``use_max_norm=False``):
#
# * ``use_max_norm and n <= norm``: untouched (scale 1);
# * Normalize's rule: ``norm / max(n, 1e-12)``, so an all-zero vector stays
#   zero and a NaN norm propagates;
# * SparseNormalize's rule (``additive_eps``): ``norm / (n + 1e-12)``, and an
#   all-zero vector is left alone.
#
# The including module cimports: DBL_MAX, fabs, frexp, ldexp, sqrt,
# c2o_float_to_half, c2o_half_to_float, uint16_t.

cdef double EPS = 1e-12
# float64 sums of squares below this may have lost precision to underflowed squares
# (relative error below n * 2**-115); above DBL_MAX they overflowed.  Either way the
# vector's norm is recomputed with its values scaled by a power of two.
cdef double SUMSQ_TINY = ldexp(1.0, -960)

# Below this many elements of work a parallel region costs more than it saves.
cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 15

cdef extern from "caffe2op_normalize.h":
    double c2o_normalize_sumsq_f32(const float* x, Py_ssize_t n) noexcept nogil
    double c2o_normalize_sumsq_f64(const double* x, Py_ssize_t n) noexcept nogil
    double c2o_normalize_sumsq_f16(const uint16_t* x, Py_ssize_t n) noexcept nogil
    void c2o_normalize_scale_f32(const float* x, float* y, Py_ssize_t n, float s) noexcept nogil
    void c2o_normalize_scale_f64(const double* x, double* y, Py_ssize_t n, double s) noexcept nogil
    void c2o_normalize_scale_f16(const uint16_t* x, uint16_t* y, Py_ssize_t n, float s) noexcept nogil

# Storage: float32, float64, or float16 bit patterns computed in float32.
ctypedef fused storage_t:
    float
    double
    uint16_t


# ---------------------------------------------------------------- scale rules

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
    """Sum of squares of ``x[0:n]`` in float64 (a float16 square is exact in float32).

    The order is fixed (pyx/caffe2op_normalize.h): lane ``t`` of 8 adds the
    elements ``8c + t`` of the full chunks, the tail adds to lane 0, then a
    fixed tree; float32 and float64 run that header's kernels.
    """
    if storage_t is float:
        return c2o_normalize_sumsq_f32(x, n)
    elif storage_t is double:
        return c2o_normalize_sumsq_f64(x, n)
    else:
        return c2o_normalize_sumsq_f16(x, n)


cdef inline void _scale_into(const storage_t* x, storage_t* y, Py_ssize_t n, double scale) noexcept nogil:
    """``y[0:n] = x[0:n] * scale``; nothing to do in place when ``scale == 1``.

    float32 and float16 data are multiplied in float32 by the scale rounded to
    float32 (as Caffe2 computed them); float64 data in float64.
    """
    cdef float fscale = <float> scale
    if scale == 1.0 and <const void*> x == <const void*> y:
        return
    if storage_t is uint16_t:
        c2o_normalize_scale_f16(x, y, n, fscale)
    elif storage_t is float:
        c2o_normalize_scale_f32(x, y, n, fscale)
    else:
        c2o_normalize_scale_f64(x, y, n, scale)


cdef inline double _vector_scale(const storage_t* x, Py_ssize_t n, bint use_max_norm, double norm,
                                 bint additive_eps) noexcept nogil:
    """Scale of the contiguous vector ``x[0:n]``."""
    return _scale_of_sum(x, n, _sum_squares(x, n), use_max_norm, norm, additive_eps)


cdef inline double _scale_of_sum(const storage_t* x, Py_ssize_t n, double sumsq, bint use_max_norm, double norm,
                                 bint additive_eps) noexcept nogil:
    """Scale of the contiguous vector ``x[0:n]`` whose squares sum to ``sumsq`` (``_sum_squares``)."""
    if storage_t is double:
        if _needs_rescue(sumsq):
            return _rescued_scale(x, n, 1, use_max_norm, norm, additive_eps)
    return _scale(sumsq, use_max_norm, norm, additive_eps)
