# SPDX-License-Identifier: BSD-3-Clause
"""CPU kernel of StopGradient's out-of-place copy: a memcpy split across threads.

One thread rarely saturates memory bandwidth on a server; large copies are cut
into contiguous slices, one per thread.  Copies of at least ``stream_min_bytes``
(the caller passes the last-level cache size) use non-temporal stores, which
skip reading the destination into the cache.  The caller checks sizes and dtypes.
"""

from cython.parallel cimport prange
from libc.string cimport memcpy

from _typedefs cimport uint8_t

cdef extern from "caffe2op_copy.h" nogil:
    void c2o_copy_streaming(void* dst, const void* src, size_t n)

# Below this many bytes a single memcpy beats starting a team of threads.
cdef Py_ssize_t PARALLEL_MIN_BYTES = 1 << 22


cdef inline void _copy(uint8_t* dst, const uint8_t* src, Py_ssize_t n, bint streaming) noexcept nogil:
    if streaming:
        c2o_copy_streaming(dst, src, n)
    else:
        memcpy(dst, src, n)


def copy_bytes(const uint8_t[::1] src, uint8_t[::1] dst, int n_threads, Py_ssize_t stream_min_bytes=-1):
    """Copy ``src`` into ``dst`` (same length, not overlapping); stream stores from ``stream_min_bytes`` (-1: never)."""
    cdef Py_ssize_t n = src.shape[0], n_slices, slice_bytes, i, start, stop
    cdef bint streaming = 0 <= stream_min_bytes <= n
    if n == 0:
        return
    if n < PARALLEL_MIN_BYTES or n_threads <= 1:
        with nogil:
            _copy(&dst[0], &src[0], n, streaming)
        return
    n_slices = n_threads
    # Slices start on 4 KiB boundaries so that threads never share a page.
    slice_bytes = ((n + n_slices - 1) // n_slices + 4095) & ~(<Py_ssize_t> 4095)
    for i in prange(n_slices, nogil=True, schedule="static", num_threads=n_threads):
        start = i * slice_bytes
        stop = start + slice_bytes
        if stop > n:
            stop = n
        if start < stop:
            _copy(&dst[start], &src[start], stop - start, streaming)
