# SPDX-License-Identifier: BSD-3-Clause
"""CPU kernels of SparseNormalize and Float16SparseNormalize.

The caller (``caffe2op.ops.sparse_normalize``) has already checked dtypes,
contiguity and the norm; the kernel checks every index itself, reading each
one exactly once, so another thread writing the index array during the call
can change which rows are normalised but never make the kernel write outside
the table.

Duplicate indices: Caffe2 ran one serial loop, so a repeated row was
normalised twice.  Here the distinct rows are collected first, then
normalised in parallel, each by exactly one thread: no two threads ever touch
the same row, and the result does not depend on the thread count.

The de-duplication is sized by the indices, not by the table, and chooses
the cheaper of two ways:

- a bitmap of the table's rows, when it has at most ``BITMAP_WORDS_PER_INDEX``
  64-bit words per index: indices mark it (in parallel, with atomic ORs, only
  for more than ``PARALLEL_MIN_INDICES``), and the distinct rows are read back
  from it in ascending order, so the row pass walks memory forwards;
- otherwise (few indices into a large table) an open-addressing hash set of
  about two slots per index; the rows keep their first-occurrence order
  (they are far apart, so ascending order would buy no locality).

The row kernels (``caffe2op_rows.h``) are the same source in every CPU
variant of this module (see ``setup.py``) and give the same bits in each.
"""

from cython.parallel cimport prange
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

from _typedefs cimport (
    c2o_prefetch,
    index_t,
    int32_t,
    int64_t,
    uint16_t,
    uint64_t,
)

cdef extern from "caffe2op_rows.h" nogil:
    double c2o_sumsq_f32(const float* x, Py_ssize_t n)
    double c2o_sumsq_f64(const double* x, Py_ssize_t n)
    float c2o_sumsq_f16(const uint16_t* x, Py_ssize_t n)
    void c2o_finish_row_f32(float* x, Py_ssize_t n, double sumsq, int use_max_norm, double norm)
    void c2o_finish_row_f64(double* x, Py_ssize_t n, double sumsq, int use_max_norm, double norm)
    void c2o_finish_row_f16(uint16_t* x, Py_ssize_t n, float sumsq, int use_max_norm, double norm)
    void c2o_atomic_or_u64(uint64_t* word, uint64_t bits)
    int c2o_popcount_u64(uint64_t w)
    int c2o_ctz_u64(uint64_t w)
    int64_t c2o_load_once_i64(const int64_t* p)
    int64_t c2o_load_once_i32(const int32_t* p)
    int c2o_mark_rows_i64(const int64_t* indices, Py_ssize_t k, int64_t n_rows, uint64_t* seen)
    int c2o_mark_rows_i32(const int32_t* indices, Py_ssize_t k, int64_t n_rows, uint64_t* seen)
    Py_ssize_t c2o_list_bits(const uint64_t* seen, Py_ssize_t start, Py_ssize_t stop, int64_t* rows)

# Below this many table elements of row work the rows are normalised by one
# thread.  A parallel region costs microseconds on an idle machine but a whole
# scheduler slice (measured: 4-30 ms) whenever the second thread is
# descheduled, as on a busy machine; 2**18 elements (random float32 rows:
# ~0.8 ms serial) keeps a training step of a few thousand indices serial while
# large updates still use every core.  Measured with 1 vs 2 threads on a
# freshly written 100,000x64 table: at 512 indices (32,768 elements) serial
# 0.21-0.25 ms, two threads 25-31 ms on a loaded machine.
cdef Py_ssize_t PARALLEL_MIN_WORK = 1 << 18

# Below this many indices the bitmap is marked and read back by one thread, so
# that the call has a single parallel region (the row pass).  Every region
# waits for its slowest thread: on a busy machine each extra one cost a
# scheduler slice -- measured at 10**5 indices into 10**6x64 float32 with 2
# threads on a loaded machine: 312 ms with a parallel de-duplication (three
# regions more) against 71 ms with a serial one (C floor kernel: 37-91 ms).
# Serial marking costs ~2-4 ns per index, small beside the rows it selects.
cdef Py_ssize_t PARALLEL_MIN_INDICES = 1 << 22

# The bitmap is used while it has at most this many words per index (its
# clearing and scanning then cost less than the hash set's probes, and the
# rows are close enough for ascending order to pay).  Measured into
# 1,000,000x64 float32 after the table was copied (caches cold), whole call:
# 1,000 indices 310 us with the hash set against 345 us with the bitmap,
# 3,000: 461 against 525, 10,000: alike, 30,000: 2.2 against 2.0 ms,
# 100,000: 5.2 against 3.7 ms.
cdef Py_ssize_t BITMAP_WORDS_PER_INDEX = 2

# Rows ahead whose first cache lines are prefetched, and how many bytes of each.
cdef Py_ssize_t PREFETCH_ROWS = 8
cdef Py_ssize_t PREFETCH_BYTES = 512

# Table storage: float32, float64, or float16 bit patterns computed in float32.
ctypedef fused storage_t:
    float
    double
    uint16_t


def tuning():
    """The size thresholds of this module, for benchmarks: a dict of name -> value."""
    return {
        "parallel_min_work": PARALLEL_MIN_WORK,
        "parallel_min_indices": PARALLEL_MIN_INDICES,
        "bitmap_words_per_index": BITMAP_WORDS_PER_INDEX,
        "prefetch_rows": PREFETCH_ROWS,
        "prefetch_bytes": PREFETCH_BYTES,
    }


def set_tuning(**values):
    """Change thresholds (names as in :func:`tuning`); for benchmarks that locate them, never for users."""
    global PARALLEL_MIN_WORK, PARALLEL_MIN_INDICES, BITMAP_WORDS_PER_INDEX, PREFETCH_ROWS, PREFETCH_BYTES
    unknown = set(values) - set(tuning())
    if unknown:
        raise KeyError(f"unknown tuning names: {sorted(unknown)}")
    PARALLEL_MIN_WORK = max(0, values.get("parallel_min_work", PARALLEL_MIN_WORK))
    PARALLEL_MIN_INDICES = max(1, values.get("parallel_min_indices", PARALLEL_MIN_INDICES))
    BITMAP_WORDS_PER_INDEX = max(0, values.get("bitmap_words_per_index", BITMAP_WORDS_PER_INDEX))
    PREFETCH_ROWS = max(1, values.get("prefetch_rows", PREFETCH_ROWS))
    PREFETCH_BYTES = max(0, values.get("prefetch_bytes", PREFETCH_BYTES))


def count_out_of_range(const index_t[::1] indices, Py_ssize_t n_rows, int n_threads):
    """Return how many indices fall outside ``[0, n_rows)``."""
    cdef Py_ssize_t i, n = indices.shape[0], bad = 0
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n > PARALLEL_MIN_INDICES):
        if indices[i] < 0 or indices[i] >= n_rows:
            bad += 1
    return bad


cdef inline int64_t _index(const index_t[::1] indices, Py_ssize_t i) noexcept nogil:
    """``indices[i]``, loaded once."""
    if index_t is int64_t:
        return c2o_load_once_i64(&indices[i])
    else:
        return c2o_load_once_i32(&indices[i])


cdef Py_ssize_t _count_bits(const uint64_t* seen, Py_ssize_t start, Py_ssize_t stop) noexcept nogil:
    cdef Py_ssize_t w, count = 0
    for w in range(start, stop):
        count += c2o_popcount_u64(seen[w])
    return count


cdef Py_ssize_t _distinct_by_bitmap(const index_t[::1] indices, Py_ssize_t n_rows, int64_t* rows,
                                    int n_threads) noexcept nogil:
    """Distinct indices in ascending order; -1 if one is out of range, -2 without memory."""
    cdef Py_ssize_t i, c, k = indices.shape[0], n_words = (n_rows + 63) >> 6, bad = 0
    cdef Py_ssize_t n_chunks, chunk, total
    cdef int64_t row
    cdef uint64_t* seen = <uint64_t*> calloc(<size_t> n_words + 1, sizeof(uint64_t))
    cdef Py_ssize_t* offsets
    if seen == NULL:
        return -2
    if k >= PARALLEL_MIN_INDICES and n_threads > 1:
        for i in prange(k, schedule="static", num_threads=n_threads):
            row = _index(indices, i)  # read once: checked and used as the same value
            if row < 0 or row >= n_rows:
                bad += 1
            else:
                c2o_atomic_or_u64(&seen[row >> 6], (<uint64_t> 1) << (row & 63))
    elif k > 0:
        if index_t is int64_t:
            bad = c2o_mark_rows_i64(&indices[0], k, n_rows, seen)
        else:
            bad = c2o_mark_rows_i32(&indices[0], k, n_rows, seen)
    if bad:
        free(seen)
        return -1
    n_chunks = n_threads if k >= PARALLEL_MIN_INDICES and n_threads > 1 else 1
    if n_chunks == 1:
        total = c2o_list_bits(seen, 0, n_words, rows)  # rows has room for min(k, n_rows)
        free(seen)
        return total
    offsets = <Py_ssize_t*> malloc((n_chunks + 1) * sizeof(Py_ssize_t))
    if offsets == NULL:
        free(seen)
        return -2
    chunk = (n_words + n_chunks - 1) // n_chunks
    for c in prange(n_chunks, schedule="static", num_threads=n_threads):
        offsets[c + 1] = _count_bits(seen, min(c * chunk, n_words), min((c + 1) * chunk, n_words))
    offsets[0] = 0
    for c in range(n_chunks):
        offsets[c + 1] += offsets[c]
    for c in prange(n_chunks, schedule="static", num_threads=n_threads):
        c2o_list_bits(seen, min(c * chunk, n_words), min((c + 1) * chunk, n_words), rows + offsets[c])
    total = offsets[n_chunks]
    free(offsets)
    free(seen)
    return total


cdef Py_ssize_t _distinct_by_hash(const index_t[::1] indices, Py_ssize_t n_rows, int64_t* rows) noexcept nogil:
    """Distinct indices in first-occurrence order; -1 if one is out of range, -2 without memory."""
    cdef Py_ssize_t i, k = indices.shape[0], count = 0
    cdef int shift = 64
    cdef uint64_t capacity = 16, mask, slot
    cdef int64_t row
    cdef int64_t* slots
    while capacity < <uint64_t> (2 * k):
        capacity <<= 1
    while (<uint64_t> 1 << (64 - shift)) < capacity:
        shift -= 1
    mask = capacity - 1
    slots = <int64_t*> malloc(capacity * sizeof(int64_t))
    if slots == NULL:
        return -2
    memset(slots, 0xFF, capacity * sizeof(int64_t))  # -1: empty
    for i in range(k):
        row = _index(indices, i)
        if row < 0 or row >= n_rows:
            free(slots)
            return -1
        # Fibonacci hashing spreads consecutive rows over the slots.
        slot = ((<uint64_t> row) * <uint64_t> 0x9E3779B97F4A7C15) >> shift
        while slots[slot] != -1 and slots[slot] != row:
            slot = (slot + 1) & mask
        if slots[slot] == -1:
            slots[slot] = row
            rows[count] = row
            count += 1
    free(slots)
    return count


cdef inline void _prefetch_row(storage_t* row, Py_ssize_t block) noexcept nogil:
    """Prefetch the cache lines of a row's first bytes (the hardware prefetcher follows the rest).

    Counted from the line the row starts in: a row that does not start on a
    line boundary spans one line more, and NumPy's large arrays start 16
    bytes past one (glibc's mmap chunk header), so a 256-byte row covers 5
    lines.  Prefetching only 4 of them left one demand miss per row:
    measured on 95,188 random rows of a 16-byte-offset 1,000,000x64 float32
    table, 2 threads, 5.2-5.7 ms against 3.9-4.2 ms.
    """
    cdef Py_ssize_t misalignment = (<size_t> row) & 63
    cdef char* start = <char*> row - misalignment
    cdef Py_ssize_t offset, size = block * sizeof(storage_t)
    if size > PREFETCH_BYTES:
        size = PREFETCH_BYTES
    for offset in range(0, size + misalignment, 64):
        c2o_prefetch(start + offset)


cdef inline double _sum_squares(storage_t* row, Py_ssize_t block) noexcept nogil:
    if storage_t is float:
        return c2o_sumsq_f32(row, block)
    elif storage_t is double:
        return c2o_sumsq_f64(row, block)
    else:
        return c2o_sumsq_f16(row, block)  # a float: exact in a double and back


cdef inline void _finish_row(storage_t* row, Py_ssize_t block, double sumsq, bint use_max_norm,
                             double norm) noexcept nogil:
    if storage_t is float:
        c2o_finish_row_f32(row, block, sumsq, use_max_norm, norm)
    elif storage_t is double:
        c2o_finish_row_f64(row, block, sumsq, use_max_norm, norm)
    else:
        c2o_finish_row_f16(row, block, <float> sumsq, use_max_norm, norm)


cdef inline void _normalize_row(storage_t* base, const int64_t* rows, Py_ssize_t i, Py_ssize_t n_distinct,
                                Py_ssize_t block, bint use_max_norm, double norm) noexcept nogil:
    """Normalise the row ``rows[i]``, after prefetching the one PREFETCH_ROWS ahead of it.

    A row at a time, inlined into the parallel loop.  Stop 21 summed blocks of
    up to 64 rows first and scaled them after (no data-dependent branch between
    the loads); once whole rows were prefetched (see _prefetch_row) that order
    cost more than it saved: 100,000 indices into 1,000,000x64 float32 after a
    table copy, against the C floor kernel in the same rounds, 1.12-1.19 with
    blocks (also with one-row blocks, through the block function) and
    1.03-1.04 a row at a time, 1 and 2 threads.
    """
    cdef storage_t* row = base + rows[i] * block
    if i + PREFETCH_ROWS < n_distinct:
        _prefetch_row(base + rows[i + PREFETCH_ROWS] * block, block)
    _finish_row(row, block, _sum_squares(row, block), use_max_norm, norm)


def sparse_normalize_rows(storage_t[:, ::1] table, const index_t[::1] indices,
                          bint use_max_norm, double norm, int n_threads):
    """Normalise the rows ``table[indices]`` in place (each distinct row once).

    Every index is bounds-checked in the pass that collects the distinct
    rows, before any row is written.  Returns -1, or 0 when an index lies
    outside ``[0, n_rows)``, in which case the table is untouched.
    """
    cdef Py_ssize_t k = indices.shape[0], block = table.shape[1], n_rows = table.shape[0]
    cdef Py_ssize_t i, n_distinct
    cdef int64_t* rows
    cdef storage_t* base = &table[0, 0] if n_rows > 0 and block > 0 else NULL
    if k == 0:
        return -1
    rows = <int64_t*> malloc(max(1, min(k, n_rows)) * sizeof(int64_t))
    if rows == NULL:
        raise MemoryError("SparseNormalize: cannot allocate the list of distinct rows")
    with nogil:
        if (n_rows + 63) >> 6 <= BITMAP_WORDS_PER_INDEX * k:
            n_distinct = _distinct_by_bitmap(indices, n_rows, rows, n_threads)
        else:
            n_distinct = _distinct_by_hash(indices, n_rows, rows)
        if n_distinct > 0 and block > 0:
            for i in prange(n_distinct, schedule="static", num_threads=n_threads,
                            use_threads_if=n_distinct * block >= PARALLEL_MIN_WORK):
                _normalize_row(base, rows, i, n_distinct, block, use_max_norm, norm)
    free(rows)
    if n_distinct == -2:
        raise MemoryError("SparseNormalize: cannot allocate the de-duplication set")
    return 0 if n_distinct == -1 else -1
