# SPDX-License-Identifier: BSD-3-Clause
"""The measured limits of ``caffe2op bench`` (``caffe2op/bench/floor.c``) compute what they claim.

The C kernels are built with the system compiler on first use; where there
is none the tests skip with that reason (CI has one).
"""

import numpy as np
import pytest

from caffe2op.bench import floor
from caffe2op.bench.inputs import embedding_table, indices_with_duplicates
from caffe2op.bench.peers import numpy_sparse_normalize
from caffe2op.bench.timing import Missing


@pytest.fixture(scope="module", autouse=True)
def _library():
    try:
        floor.library()
    except Missing as why:
        pytest.skip(str(why))


def _xor_fold_sum(words):
    """What floor_read returns: the sum (mod 2**64) of the XOR of each run of 8 words."""
    padded = np.zeros(-(-words.size // 8) * 8, np.uint64)
    padded[: words.size] = words
    return int(np.bitwise_xor.reduce(padded.reshape(-1, 8), axis=1).sum(dtype=np.uint64))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size", [1001, 100_001])  # serial, and parallel past 256 KiB
def test_read_touches_every_word(threads, size):
    words = np.random.default_rng(1).integers(0, 2**63, size, dtype=np.uint64)
    assert floor.read(words, threads) == _xor_fold_sum(words)


@pytest.mark.parametrize("non_temporal", [False, True])
@pytest.mark.parametrize("offset", [0, 1, 7])
@pytest.mark.parametrize("size", [100_003, 1_000_003])  # serial, and parallel past 256 KiB
def test_copy_is_exact_at_any_alignment_and_length(non_temporal, offset, size):
    src = np.random.default_rng(2).integers(0, 255, size, dtype=np.uint8)
    dst = np.zeros(src.size + offset, np.uint8)
    floor.copy(dst[offset:], src, 2, non_temporal=non_temporal)
    assert np.array_equal(dst[offset:], src)
    assert not dst[:offset].any()


def test_read_rows_reads_the_given_rows():
    table = np.random.default_rng(3).integers(0, 2**63, (50, 8), dtype=np.uint64)
    rows = np.array([3, 17, 42], np.int64)
    expected = sum(int(np.bitwise_xor.reduce(table[r])) for r in rows) % 2**64
    assert floor.read_rows(table, rows, 2) == expected


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("use_max_norm", [True, False])
@pytest.mark.parametrize(
    ("n_rows", "count", "share"),
    # sort path, bitmap path (serial, then parallel past 256 KiB of rows), one index
    [(100_000, 30, 0.5), (2_000, 1_500, 0.3), (20_000, 15_000, 0.3), (4_000, 1, 0.0)],
)
def test_sparse_normalize_floor_matches_the_reference(dtype, use_max_norm, n_rows, count, share):
    rng = np.random.default_rng(4)
    table = embedding_table(n_rows, 20, dtype, rng, norm=2.0)  # a width that is not a multiple of 8
    indices = indices_with_duplicates(n_rows, count, share, rng)
    kernel = floor.SparseNormalizeFloor(n_rows, count, dtype, 2)
    expected = numpy_sparse_normalize(table.astype(np.float64), indices, use_max_norm, 2.0)
    for _ in range(2):  # the bitmap is left all-zero, so a second call on fresh data is right too
        got = kernel(table.copy(), indices, use_max_norm, 2.0)
        tol = dict(rtol=2e-3, atol=2e-3) if dtype == np.float16 else dict(rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.astype(np.float64), expected, **tol)
    assert not kernel._bitmap.any()


def test_sparse_normalize_floor_refuses_other_dtypes():
    with pytest.raises(Missing, match="int32"):
        floor.SparseNormalizeFloor(10, 10, np.int32, 1)


def test_build_goes_to_the_cache_folder_not_the_source_tree():
    path = floor.library()._name
    assert "caffe2op-bench" in path
    assert not path.startswith(str(floor.SOURCE.parent))
