# SPDX-License-Identifier: BSD-3-Clause
"""Build facts of the compiled kernels, and the float16 conversions exposed for tests."""

from cython.parallel cimport prange

from _typedefs cimport (
    CAFFE2OP_HAVE_OPENMP,
    c2o_cpu_supports_variant,
    c2o_float_to_half,
    c2o_half_to_float,
    omp_get_max_threads,
    omp_set_num_threads,
    uint16_t,
)


def openmp_enabled():
    """Whether the kernels were compiled with OpenMP."""
    return bool(CAFFE2OP_HAVE_OPENMP)


def omp_max_threads():
    """OpenMP's default team size (1 in a serial build)."""
    return omp_get_max_threads()


# CPU variants of the kernel modules, best first, with their code in caffe2op_cpu.h.
_VARIANT_CODES = {"avx512": 2, "avx2": 1}


def cpu_supports(str variant):
    """Whether this CPU (and OS) runs the kernels built for ``variant`` ("avx2" or "avx512")."""
    return bool(c2o_cpu_supports_variant(_VARIANT_CODES.get(variant, 0)))


def set_default_threads(int n):
    """Set OpenMP's default team size (used by regions that do not name one)."""
    omp_set_num_threads(n)


def half_to_float(const uint16_t[::1] bits, float[::1] out):
    """Convert float16 bit patterns to float32 with the kernels' own conversion."""
    cdef Py_ssize_t i
    for i in prange(bits.shape[0], nogil=True, schedule="static"):
        out[i] = c2o_half_to_float(bits[i])


def float_to_half(const float[::1] values, uint16_t[::1] out):
    """Round float32 values to float16 bit patterns with the kernels' own conversion."""
    cdef Py_ssize_t i
    for i in prange(values.shape[0], nogil=True, schedule="static"):
        out[i] = c2o_float_to_half(values[i])
