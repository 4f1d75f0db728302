/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Large copies with non-temporal (streaming) stores.  A copy larger than the
 * last-level cache evicts everything anyway; ordinary stores also read each
 * destination line before writing it (write-allocate), a third of the
 * traffic.  Streaming stores skip that read.  The widest stores the variant
 * was compiled for are used (SSE2 is part of baseline x86-64); other
 * architectures fall back to memcpy.
 */
#ifndef CAFFE2OP_COPY_H
#define CAFFE2OP_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

static inline void c2o_copy_streaming(void *dst, const void *src, size_t n) {
#if defined(__SSE2__)
    char *d = (char *)dst;
    const char *s = (const char *)src;
    size_t head = (64 - ((uintptr_t)d & 63)) & 63;
    if (head > n) head = n;
    memcpy(d, s, head); /* up to the first 64-byte boundary of the destination */
    d += head;
    s += head;
    n -= head;
    const size_t body = n & ~(size_t)63;
    for (size_t i = 0; i < body; i += 64) {
#if defined(__AVX512F__)
        _mm512_stream_si512((__m512i *)(d + i), _mm512_loadu_si512((const void *)(s + i)));
#elif defined(__AVX__)
        _mm256_stream_si256((__m256i *)(d + i), _mm256_loadu_si256((const __m256i *)(s + i)));
        _mm256_stream_si256((__m256i *)(d + i + 32), _mm256_loadu_si256((const __m256i *)(s + i + 32)));
#else
        _mm_stream_si128((__m128i *)(d + i), _mm_loadu_si128((const __m128i *)(s + i)));
        _mm_stream_si128((__m128i *)(d + i + 16), _mm_loadu_si128((const __m128i *)(s + i + 16)));
        _mm_stream_si128((__m128i *)(d + i + 32), _mm_loadu_si128((const __m128i *)(s + i + 32)));
        _mm_stream_si128((__m128i *)(d + i + 48), _mm_loadu_si128((const __m128i *)(s + i + 48)));
#endif
    }
    _mm_sfence(); /* streaming stores are weakly ordered: publish them before returning */
    memcpy(d + body, s + body, n - body);
#else
    memcpy(dst, src, n);
#endif
}

#endif /* CAFFE2OP_COPY_H */
