# SPDX-License-Identifier: BSD-3-Clause
"""caffe2op.dask.sparse_normalize: routing to row chunks, aliased untouched chunks, errors before any task."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests._helpers import assert_allclose_dtype, assert_bit_identical
from tests._reference import sparse_normalize_ref
from tests.dask._require import require_dask

require_dask()

import dask  # noqa: E402
import dask.array as da  # noqa: E402

import caffe2op  # noqa: E402
import caffe2op.dask as cdask  # noqa: E402

DTYPES = [np.float16, np.float32, np.float64]


def make_table(n_rows, width, dtype, seed=0):
    """Rows with norms around 1 (about half above): both branches of max-norm are taken."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((n_rows, width)) / np.sqrt(width) * rng.uniform(0.5, 1.5, (n_rows, 1))
    return table.astype(dtype)


# (name, indices) on a 40-row table chunked (7, 7, 7, 7, 7, 5): chunk boundaries at 7, 14, 21, 28, 35.
CASES = {
    "duplicates": [3, 3, 17, 3, 17, 39],
    "empty": [],
    "chunk boundaries": [6, 7, 13, 14, 34, 35],
    "first and last chunk only": [0, 2, 6, 35, 39],
    "every row": list(range(40)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("use_max_norm", [True, False])
def test_against_numpy_on_cluster(client, dtype, case, use_max_norm):
    data = make_table(40, 5, dtype)
    table = da.from_array(data, chunks=(7, 5))
    indices = np.array(CASES[case], dtype=np.int64)
    out = cdask.sparse_normalize(table, indices, use_max_norm=use_max_norm, norm=1.0)
    got = client.compute(out).result()
    assert_allclose_dtype(got, sparse_normalize_ref(data, indices, use_max_norm, 1.0), dtype)
    assert_bit_identical(table.compute(), data)  # the input is not modified


@pytest.mark.parametrize("dtype", DTYPES)
def test_equals_the_in_memory_kernel(client, dtype):
    """Each chunk goes through the same kernel: bit-identical to caffe2op.sparse_normalize on the whole table."""
    data = make_table(1000, 16, dtype, seed=1)
    indices = np.random.default_rng(2).integers(0, 1000, 300)
    got = client.compute(cdask.sparse_normalize(da.from_array(data, chunks=(64, 16)), indices)).result()
    assert_bit_identical(got, caffe2op.sparse_normalize(data.copy(), indices))


@given(
    chunks=st.lists(st.integers(1, 9), min_size=1, max_size=6),
    width=st.integers(0, 4),
    data=st.data(),
    use_max_norm=st.booleans(),
    norm=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
)
def test_random_chunks_and_indices(chunks, width, data, use_max_norm, norm):
    n_rows = sum(chunks)
    table = make_table(n_rows, width, np.float64, seed=n_rows)
    indices = data.draw(st.lists(st.integers(0, n_rows - 1), max_size=20))
    out = cdask.sparse_normalize(
        da.from_array(table, chunks=(tuple(chunks), width or 1)), indices, use_max_norm=use_max_norm, norm=norm
    )
    got = out.compute(scheduler="sync")
    assert_allclose_dtype(got, sparse_normalize_ref(table, indices, use_max_norm, norm))


def _kernel_tasks(out):
    """{output key: task} of the output layer whose task runs the kernel (not aliases)."""
    layer = dict(out.dask.layers[out.name])
    aliases = {k: v for k, v in layer.items() if isinstance(v, tuple) and v and isinstance(v[0], str)}
    return {k: v for k, v in layer.items() if k not in aliases}, aliases


def test_untouched_chunks_are_aliases_in_the_graph():
    table = da.from_array(make_table(40, 5, np.float32), chunks=(7, 5))
    out = cdask.sparse_normalize(table, [0, 2, 36, 2])  # chunks 0 and 5
    kernels, aliases = _kernel_tasks(out)
    assert sorted(k[1] for k in kernels) == [0, 5]
    # Chunks 1..4 of the output are the input's chunks: a key pointing at the input key, no task, no copy.
    assert aliases == {(out.name, c, 0): (table.name, c, 0) for c in (1, 2, 3, 4)}
    # Dask's task spec agrees: converted, they are Alias nodes whose only dependency is the input chunk.
    from dask._task_spec import Alias, convert_legacy_graph

    converted = convert_legacy_graph(dict(out.__dask_graph__()))  # the whole graph: it knows the input keys
    for key, target in aliases.items():
        assert isinstance(converted[key], Alias) and converted[key].dependencies == {target}
    # Each kernel task depends on its own input chunk only, and gets that chunk's local, distinct rows.
    local_rows = {k[1]: v[2].tolist() for k, v in kernels.items()}
    assert local_rows == {0: [0, 2], 5: [1]}


def test_untouched_chunks_are_not_recomputed(client):
    """On the cluster, a persisted table's chunks are not recomputed, and an untouched output chunk is the very
    object of the input chunk in the worker's memory (no copy); a touched one is a new array."""
    from distributed import get_task_stream, wait

    table = da.from_array(make_table(40, 5, np.float32), chunks=(7, 5)).persist()
    wait(table)
    with get_task_stream(client) as stream:
        out = cdask.sparse_normalize(table, [9]).persist()  # chunk 1
        wait(out)
    assert {task["key"][0] for task in stream.data} == {out.name}, "an input chunk was recomputed"

    def same_objects(dask_worker, pairs):
        return {c: dask_worker.data[o] is dask_worker.data[i] for c, o, i in pairs if o in dask_worker.data}

    pairs = [(c, (out.name, c, 0), (table.name, c, 0)) for c in range(6)]
    identical = {}
    for result in client.run(same_objects, pairs=pairs).values():
        identical.update(result)
    assert identical == {0: True, 1: False, 2: True, 3: True, 4: True, 5: True}
    np.testing.assert_allclose(out.compute(), sparse_normalize_ref(table.compute(), [9]), rtol=1e-6)


def test_dask_indices(client):
    data = make_table(40, 5, np.float32)
    table = da.from_array(data, chunks=(7, 5))
    indices = da.from_array(np.array([[39, 0], [14, 14]]), chunks=1)
    out = cdask.sparse_normalize(table, indices, use_max_norm=False, norm=2.0)
    got = client.compute(out).result()
    assert_allclose_dtype(got, sparse_normalize_ref(data, [39, 0, 14], False, 2.0))
    empty = cdask.sparse_normalize(table, da.zeros(0, dtype=np.int32, chunks=1)).compute(scheduler="sync")
    assert_bit_identical(empty, data)


def test_dask_indices_out_of_range_fail_before_any_kernel_task():
    table = da.from_array(make_table(40, 5, np.float32), chunks=(7, 5))
    out = cdask.sparse_normalize(table, da.from_array(np.array([1, 40]), chunks=1))
    with pytest.raises(IndexError, match=r"caffe2op.dask.sparse_normalize: .*index 40 at position 1"):
        out.compute(scheduler="sync")
    with pytest.raises(TypeError, match="caffe2op.dask.sparse_normalize: indices must be integers.*float64"):
        cdask.sparse_normalize(table, da.ones(3, chunks=1))


@pytest.mark.parametrize("bad", [[0, 40], [-1], [[5], [99]]])
def test_out_of_range_raises_before_any_task(bad):
    table = da.from_array(make_table(40, 5, np.float32), chunks=(7, 5))
    with dask.config.set(scheduler=_no_scheduler):  # building the graph must not run anything
        with pytest.raises(IndexError, match=r"caffe2op.dask.sparse_normalize: SparseNormalize: index -?\d+ at"):
            cdask.sparse_normalize(table, bad)


def _no_scheduler(*args, **kwargs):
    raise AssertionError("a task was submitted")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(table=np.zeros((3, 2))), TypeError, "table must be a dask.array.Array, got ndarray"),
        (dict(table=da.zeros((3, 2), dtype=np.int32)), TypeError, "param must be float16, float32 or float64"),
        (dict(table=da.zeros((), dtype=np.float32)), ValueError, "at least 1 dimension"),
        (dict(indices=[0.5]), TypeError, "indices must be integers"),
        (dict(indices=["a"]), TypeError, "indices must be integers"),
        (dict(norm=-1.0), ValueError, "'norm' must be finite and >= 0, got -1.0"),
        (dict(norm="1"), TypeError, "norm"),
        (dict(use_max_norm="yes"), TypeError, "use_max_norm"),
        (dict(kernel_threads=0), ValueError, "kernel_threads must be >= 1, got 0"),
        (dict(kernel_threads=1.5), TypeError, "kernel_threads must be an int, got float"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = dict(table=da.zeros((4, 2), chunks=2), indices=[0])
    args.update(kwargs)
    with pytest.raises(error, match="caffe2op.dask.sparse_normalize: .*" + match):
        cdask.sparse_normalize(args.pop("table"), args.pop("indices"), **args)


def test_unknown_chunk_sizes():
    table = da.from_array(np.ones((6, 2)), chunks=3)
    table = table[table[:, 0] > 0]
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        cdask.sparse_normalize(table, [0])


def test_column_chunks_are_rechunked_with_a_warning():
    data = make_table(20, 6, np.float32).reshape(20, 3, 2)
    table = da.from_array(data, chunks=(5, 2, 1))
    with pytest.warns(UserWarning, match="chunked along columns too .*rechunking to whole rows"):
        out = cdask.sparse_normalize(table, [1, 19])
    assert out.chunks == ((5, 5, 5, 5), (3,), (2,))
    assert_allclose_dtype(out.compute(scheduler="sync"), sparse_normalize_ref(data, [1, 19]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # whole rows: no warning
        cdask.sparse_normalize(table.rechunk((5, 3, 2)), [1])


def test_kernels_run_with_kernel_threads(monkeypatch):
    """Each task runs its kernel with ``kernel_threads`` threads, whatever set_num_threads says."""
    seen = []
    real = cdask._sparse_normalize

    def recording(param, indices, **kwargs):
        if param.size:
            seen.append(caffe2op.get_num_threads())
        return real(param, indices, **kwargs)

    monkeypatch.setattr(cdask, "_sparse_normalize", recording)
    caffe2op.set_num_threads(2)
    table = da.from_array(make_table(40, 5, np.float32), chunks=(7, 5))
    cdask.sparse_normalize(table, [0, 39]).compute(scheduler="threads")
    cdask.sparse_normalize(table, [8], kernel_threads=3).compute(scheduler="sync")
    assert seen == [1, 1, 3] and caffe2op.get_num_threads() == 2
