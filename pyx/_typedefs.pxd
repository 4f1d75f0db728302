# SPDX-License-Identifier: BSD-3-Clause
"""C types shared by the caffe2op CPU kernels."""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

ctypedef float float32_t
ctypedef double float64_t

# Index arrays: Caffe2 dispatched SparseNormalize over int32 and int64.
ctypedef fused index_t:
    int32_t
    int64_t

# Tables computed in their own precision (float16 goes through uint16 storage).
ctypedef fused real_t:
    float
    double


cdef extern from "caffe2op_cpu.h" nogil:
    int CAFFE2OP_HAVE_OPENMP
    int omp_get_max_threads()
    void omp_set_num_threads(int n)
    int c2o_cpu_supports_variant(int variant)
    float c2o_half_to_float(uint16_t h)
    uint16_t c2o_float_to_half(float f)
    void c2o_prefetch(const void* p)
