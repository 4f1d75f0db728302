# SPDX-License-Identifier: BSD-3-Clause
"""caffe2op.dask.normalize: map_blocks inside chunks, a tree reduction of partial sums across them."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests._helpers import assert_allclose_dtype
from tests._reference import normalize_ref
from tests.dask._require import require_dask

require_dask()

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import caffe2op  # noqa: E402
import caffe2op.dask as cdask  # noqa: E402

DTYPES = [np.float16, np.float32, np.float64]


def dense(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("chunks", [(7, 5), (30, 5), (7, 13)], ids=["rows+cols", "cols", "rows"])
@pytest.mark.parametrize("use_max_norm", [False, True])
def test_dense_against_numpy_and_kernel(dtype, axis, chunks, use_max_norm):
    data = dense((30, 13), dtype)
    X = da.from_array(data, chunks=chunks)
    got = cdask.normalize(X, axis=axis, norm=2.0, use_max_norm=use_max_norm).compute(scheduler="threads")
    assert_allclose_dtype(got, normalize_ref(data, axis, 2.0, use_max_norm), dtype)
    assert_allclose_dtype(got, caffe2op.normalize(data, axis=axis, norm=2.0, use_max_norm=use_max_norm), dtype)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("chunks", [(7, 5), (7, 13)], ids=["rows+cols", "rows"])
def test_dense_on_cluster(client, axis, chunks):
    data = dense((30, 13), np.float32)
    got = client.compute(cdask.normalize(da.from_array(data, chunks=chunks), axis=axis)).result()
    assert_allclose_dtype(got, normalize_ref(data, axis), np.float32)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # scipy.sparse holds no float16
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("chunks", [(6, 9), (25, 4), (6, 4)], ids=["rows", "cols", "both"])
def test_sparse_chunks_keep_their_structure(fmt, dtype, axis, chunks, scheduler="threads"):
    matrix = sp.random(25, 9, density=0.3, format=fmt, dtype=np.float64, random_state=1).astype(dtype)
    matrix.data[:3] = 0  # explicit zeros are part of the structure
    X = da.from_array(matrix.toarray(), chunks=chunks).map_blocks(getattr(sp, f"{fmt}_matrix"), dtype=dtype)
    out = cdask.normalize(X, axis=axis)
    blocks = out.to_delayed().ravel()
    inputs = X.to_delayed().ravel()
    got_blocks, given_blocks = dask.compute(list(blocks), list(inputs), scheduler=scheduler)
    for got, given_block in zip(got_blocks, given_blocks, strict=True):
        assert got.format == fmt and got.dtype == dtype
        np.testing.assert_array_equal(got.indptr, given_block.indptr)
        np.testing.assert_array_equal(got.indices, given_block.indices)
    gathered = out.compute(scheduler=scheduler)
    assert sp.issparse(gathered)
    assert_allclose_dtype(gathered.toarray(), normalize_ref(matrix.toarray(), axis), dtype)
    assert_allclose_dtype(gathered.toarray(), caffe2op.normalize(matrix, axis=axis).toarray(), dtype)


def test_crossing_vectors_use_a_tree_reduction():
    """8 row chunks, fan-in 2: the partial sums are combined in 3 levels, then one scaling pass."""
    X = da.from_array(dense((64, 4), np.float32), chunks=(8, 4))
    out = cdask.normalize(X, axis=0, split_every=2)
    names = [name.split("-")[0] for name in out.dask.layers]
    assert names.count("_partial_sumsq") == 1 and names.count("_scale_block") == 1
    graph = dict(out.__dask_graph__())
    assert sum(key[0].startswith("_partial_sumsq") for key in graph) == 8
    # Dask's tree: 8 per-chunk sums, combined 2 by 2 into 4, then 2 (partial levels), then 1 (the aggregate).
    levels = sorted(sum(1 for key in graph if key[0] == name) for name in {key[0] for key in graph})
    combined = {name.rsplit("-", 1)[0] for name in {key[0] for key in graph}}
    assert {"sum-partial", "sum-aggregate"} <= combined
    assert sum(key[0].startswith("sum-partial-") for key in graph) == 4 + 2
    assert sum(key[0].startswith("sum-aggregate-") for key in graph) == 1
    assert levels[:3] == [1, 2, 4]
    assert_allclose_dtype(out.compute(scheduler="sync"), normalize_ref(X.compute(), 0))
    inside = cdask.normalize(X, axis=1)  # rows lie inside chunks: one kernel task per chunk, no reduction
    assert [name.split("-")[0] for name in inside.dask.layers][-1] == "_normalize_block"
    assert len(inside.dask.layers) == 2


@pytest.mark.parametrize("axis", [0, 1])
def test_sparse_on_cluster(client, axis):
    test_sparse_chunks_keep_their_structure("csr", np.float32, axis, (6, 4), scheduler=client)


@given(
    rows=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    cols=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    axis=st.sampled_from([0, 1]),
    use_max_norm=st.booleans(),
    norm=st.sampled_from([0.0, 0.5, 1.0, 4.0]),
)
def test_random_chunkings(rows, cols, axis, use_max_norm, norm):
    data = dense((sum(rows), sum(cols)), np.float64, seed=len(rows))
    data[0] = 0.0  # a zero row (and zero entries in every column)
    X = da.from_array(data, chunks=(tuple(rows), tuple(cols)))
    got = cdask.normalize(X, axis=axis, norm=norm, use_max_norm=use_max_norm).compute(scheduler="sync")
    assert_allclose_dtype(got, normalize_ref(data, axis, norm, use_max_norm))


def test_three_dimensions():
    data = dense((6, 4, 5), np.float32)
    X = da.from_array(data, chunks=(2, 3, 5))
    for axis in (0, 1, 2):
        assert_allclose_dtype(cdask.normalize(X, axis=axis).compute(scheduler="sync"), normalize_ref(data, axis))


@pytest.mark.parametrize(
    ("X", "kwargs", "error", "match"),
    [
        (np.ones((2, 2)), {}, TypeError, "X must be a dask.array.Array, got ndarray"),
        (da.ones((2, 2), dtype=np.int64), {}, TypeError, "X must be float16, float32 or float64, got int64"),
        (da.ones((2, 2)), dict(axis=2), ValueError, "axis 2 is out of range"),
        (da.ones((2, 2)), dict(norm=-1.0), ValueError, "'norm' must be finite and >= 0, got -1.0"),
        (da.ones((2, 2)), dict(kernel_threads=0), ValueError, "kernel_threads must be >= 1, got 0"),
        (
            da.ones((2, 2), chunks=1).map_blocks(sp.lil_matrix, meta=sp.lil_matrix((0, 0))),
            {},
            TypeError,
            "sparse chunks must be CSR or CSC, got LIL",
        ),
    ],
)
def test_bad_arguments(X, kwargs, error, match):
    with pytest.raises(error, match="caffe2op.dask.normalize: .*" + match):
        cdask.normalize(X, **{"axis": 0, **kwargs})


@pytest.mark.parametrize("axis", [0, 1])
def test_chunk_format_is_checked_when_the_meta_says_dense(axis):
    """Dask infers an ndarray meta for COO chunks: the tasks check each chunk's format themselves."""
    X = da.ones((4, 4), chunks=2).map_blocks(sp.coo_matrix)
    out = cdask.normalize(X, axis=axis)
    with pytest.raises(TypeError, match="caffe2op.dask.normalize: sparse chunks must be CSR or CSC, got COO"):
        out.compute(scheduler="sync")
