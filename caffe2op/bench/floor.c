/* SPDX-License-Identifier: BSD-3-Clause
 *
 * Measured limits for `python -m caffe2op bench`: the memory floors each case
 * is reported against.  Built at bench time with the system C compiler
 * (-O3 -march=native -fopenmp) and loaded with ctypes, so the limits are those
 * of the machine the benchmarks run on.  Nothing here is part of caffe2op.
 *
 *   floor_read        streaming read of n bytes (sum of every 64-bit word)
 *   floor_copy        streaming copy, ordinary stores
 *   floor_copy_nt     streaming copy, non-temporal stores (x86; else ordinary)
 *   floor_read_rows   read every byte of the given rows, in the given order
 *   floor_sparse_normalize_{f16,f32,f64}
 *                     a complete SparseNormalize: de-duplicate the indices
 *                     (bitmap, or sort when that is cheaper), walk the distinct
 *                     rows in ascending order, norms in 8 double lanes,
 *                     prefetch 8 rows ahead (every cache line a row touches:
 *                     NumPy's large arrays start 16 bytes past a line), rescale
 *                     the rows that need it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

/* Small work stays serial, as a good kernel keeps it: waking a second thread costs more. */
#define SERIAL_BYTES (256 << 10)

int floor_threads(void) { return omp_get_max_threads(); }

uint64_t floor_read(const uint64_t *data, int64_t words, int threads)
{
    uint64_t total = 0;
#pragma omp parallel for num_threads(threads) reduction(+ : total) schedule(static) if (words * 8 > SERIAL_BYTES)
    for (int64_t i = 0; i < words; i += 8) {
        uint64_t lanes = 0;
        int64_t end = i + 8 < words ? i + 8 : words;
        for (int64_t j = i; j < end; j++)
            lanes ^= data[j];
        total += lanes;
    }
    return total;
}

static void chunk(int64_t n, int64_t *begin, int64_t *end)
{
    int t = omp_get_thread_num(), count = omp_get_num_threads();
    int64_t per = (n / count + 63) & ~(int64_t)63;
    *begin = per * t < n ? per * t : n;
    *end = per * (t + 1) < n ? per * (t + 1) : n;
}

void floor_copy(char *dst, const char *src, int64_t n, int threads)
{
#pragma omp parallel num_threads(threads) if (n > SERIAL_BYTES)
    {
        int64_t begin, end;
        chunk(n, &begin, &end);
        if (end > begin)
            memcpy(dst + begin, src + begin, end - begin);
    }
}

void floor_copy_nt(char *dst, const char *src, int64_t n, int threads)
{
#pragma omp parallel num_threads(threads) if (n > SERIAL_BYTES)
    {
        int64_t begin, end;
        chunk(n, &begin, &end);
        char *d = dst + begin;
        const char *s = src + begin;
        int64_t len = end - begin;
#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
        /* Ordinary stores up to a 64-byte aligned destination, streaming stores after. */
        int64_t head = (int64_t)((64 - ((uintptr_t)d & 63)) & 63);
        if (head > len)
            head = len;
        memcpy(d, s, head);
        d += head, s += head, len -= head;
        int64_t body = len & ~(int64_t)63;
        for (int64_t i = 0; i < body; i += 64) {
#if defined(__AVX512F__)
            _mm512_stream_si512((__m512i *)(d + i), _mm512_loadu_si512((const void *)(s + i)));
#elif defined(__AVX__)
            _mm256_stream_si256((__m256i *)(d + i), _mm256_loadu_si256((const __m256i *)(s + i)));
            _mm256_stream_si256((__m256i *)(d + i + 32), _mm256_loadu_si256((const __m256i *)(s + i + 32)));
#else
            for (int k = 0; k < 64; k += 16)
                _mm_stream_si128((__m128i *)(d + i + k), _mm_loadu_si128((const __m128i *)(s + i + k)));
#endif
        }
        memcpy(d + body, s + body, len - body);
        _mm_sfence();
#else
        memcpy(d, s, len);
#endif
    }
}

uint64_t floor_read_rows(const char *table, int64_t row_bytes, const int64_t *rows, int64_t count, int threads)
{
    uint64_t total = 0;
    int64_t words = row_bytes / 8;
#pragma omp parallel for num_threads(threads) reduction(+ : total) schedule(static) if (count * row_bytes > SERIAL_BYTES)
    for (int64_t i = 0; i < count; i++) {
        if (i + 8 < count)
            __builtin_prefetch(table + rows[i + 8] * row_bytes);
        const uint64_t *row = (const uint64_t *)(table + rows[i] * row_bytes);
        uint64_t lanes = 0;
        for (int64_t j = 0; j < words; j++)
            lanes ^= row[j];
        total += lanes;
    }
    return total;
}

/* The distinct indices in ascending order, into `rows`; returns how many.  A bitmap of the
 * table's rows when the indices are many against the rows (scanning n_rows/64 words is then
 * cheaper than sorting), else a sort; the bitmap (kept all-zero between calls) is cleared
 * word by word as it is scanned. */
static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t distinct_ascending(const int64_t *idx, int64_t n_idx, int64_t n_rows, uint64_t *bitmap, int64_t *rows)
{
    int64_t words = (n_rows + 63) / 64;
    double sort_cost = (double)n_idx * (log2((double)n_idx + 2) + 4);
    if (sort_cost < (double)words) {
        memcpy(rows, idx, n_idx * sizeof(int64_t));
        qsort(rows, n_idx, sizeof(int64_t), cmp_i64);
        int64_t count = 0;
        for (int64_t i = 0; i < n_idx; i++)
            if (count == 0 || rows[count - 1] != rows[i])
                rows[count++] = rows[i];
        return count;
    }
    for (int64_t i = 0; i < n_idx; i++)
        bitmap[idx[i] >> 6] |= (uint64_t)1 << (idx[i] & 63);
    int64_t count = 0;
    for (int64_t w = 0; w < words; w++) {
        uint64_t bits = bitmap[w];
        if (!bits)
            continue;
        bitmap[w] = 0;
        while (bits) {
            rows[count++] = w * 64 + __builtin_ctzll(bits);
            bits &= bits - 1;
        }
    }
    return count;
}

#define LOAD_F32(p) ((double)(p))
#define LOAD_F64(p) (p)
#if defined(__F16C__)
#define LOAD_F16(p) ((double)_cvtsh_ss(p))
#define STORE_F16(p, v) ((p) = _cvtss_sh((float)(v), _MM_FROUND_TO_NEAREST_INT))
#else
static double half_to_double(uint16_t h)
{
    int exponent = (h >> 10) & 31, mantissa = h & 1023;
    double value = exponent == 0 ? ldexp(mantissa, -24)
                 : exponent == 31 ? (mantissa ? NAN : INFINITY)
                                  : ldexp(mantissa + 1024, exponent - 25);
    return (h & 0x8000) ? -value : value;
}
static uint16_t float_to_half(float f)
{
    /* Round to nearest even via the usual bit manipulation (finite values in range). */
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exponent = ((x >> 23) & 255) - 127 + 15;
    uint32_t mantissa = x & 0x7fffff;
    if (exponent <= 0) {
        if (exponent < -10)
            return sign;
        mantissa |= 0x800000;
        int shift = 14 - exponent;
        uint32_t half = mantissa >> shift, rest = mantissa & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rest > mid || (rest == mid && (half & 1)))
            half++;
        return sign | half;
    }
    if (exponent >= 31)
        return sign | 0x7c00;
    uint32_t half = (exponent << 10) | (mantissa >> 13), rest = mantissa & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (half & 1)))
        half++;
    return sign | half;
}
#define LOAD_F16(p) half_to_double(p)
#define STORE_F16(p, v) ((p) = float_to_half((float)(v)))
#endif
#define STORE_F32(p, v) ((p) = (float)(v))
#define STORE_F64(p, v) ((p) = (v))

#define SPARSE_NORMALIZE(SUFFIX, T, LOAD, STORE)                                                                 \
    int64_t floor_sparse_normalize_##SUFFIX(T *table, int64_t n_rows, int64_t width, const int64_t *idx,         \
                                            int64_t n_idx, int use_max_norm, double norm, uint64_t *bitmap,      \
                                            int64_t *rows, int threads)                                          \
    {                                                                                                            \
        int64_t count = distinct_ascending(idx, n_idx, n_rows, bitmap, rows);                                    \
        int64_t changed = 0, bytes = count * width * (int64_t)sizeof(T);                                         \
        _Pragma("omp parallel for num_threads(threads) schedule(static) reduction(+ : changed) if (bytes > SERIAL_BYTES)") \
        for (int64_t i = 0; i < count; i++) {                                                                    \
            if (i + 8 < count) { /* every line of the row, from the line it starts in */                         \
                const char *ahead = (const char *)(table + rows[i + 8] * width);                                 \
                const int64_t skew = (int64_t)((uintptr_t)ahead & 63);                                           \
                for (int64_t b = 0; b < width * (int64_t)sizeof(T) + skew; b += 64)                              \
                    __builtin_prefetch(ahead - skew + b);                                                        \
            }                                                                                                    \
            T *row = table + rows[i] * width;                                                                    \
            double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                          \
            int64_t j = 0;                                                                                       \
            for (; j + 8 <= width; j += 8)                                                                       \
                for (int k = 0; k < 8; k++) {                                                                    \
                    double v = LOAD(row[j + k]);                                                                 \
                    lanes[k] += v * v;                                                                           \
                }                                                                                                \
            for (; j < width; j++) {                                                                             \
                double v = LOAD(row[j]);                                                                         \
                lanes[0] += v * v;                                                                               \
            }                                                                                                    \
            double n = sqrt(((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) +                                    \
                            ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])));                                    \
            if (use_max_norm && n <= norm)                                                                       \
                continue;                                                                                        \
            double scale = norm / (n + 1e-12);                                                                   \
            for (j = 0; j < width; j++)                                                                          \
                STORE(row[j], LOAD(row[j]) * scale);                                                             \
            changed++;                                                                                           \
        }                                                                                                        \
        return changed;                                                                                          \
    }

SPARSE_NORMALIZE(f16, uint16_t, LOAD_F16, STORE_F16)
SPARSE_NORMALIZE(f32, float, LOAD_F32, STORE_F32)
SPARSE_NORMALIZE(f64, double, LOAD_F64, STORE_F64)
