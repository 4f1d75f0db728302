# SPDX-License-Identifier: BSD-3-Clause
"""caffe2op.dask.sparse_normalize_zarr: in place on disk, one task per touched chunk, each chunk written whole."""

import os
import pathlib
import resource
import shutil
import time

import numpy as np
import pytest

from tests._helpers import assert_allclose_dtype, assert_bit_identical
from tests._reference import sparse_normalize_ref
from tests.dask._require import require_dask
from tests.dask.conftest import WORKER_MEMORY_LIMIT

require_dask()

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import zarr  # noqa: E402

import caffe2op.dask as cdask  # noqa: E402

DTYPES = [np.float16, np.float32, np.float64]


def zarr_table(path, data, chunk_rows, **kwargs):
    """``data`` as an uncompressed Zarr array on disk, chunked by ``chunk_rows`` whole rows."""
    z = zarr.create_array(
        store=str(path),
        shape=data.shape,
        chunks=(chunk_rows, *data.shape[1:]),
        dtype=data.dtype,
        compressors=None,
        **kwargs,
    )
    z[:] = data
    return z


def chunk_files(path):
    """{chunk file: (inode, mtime_ns)} of a Zarr v3 array: a chunk rewritten by rename gets a new inode."""
    root = pathlib.Path(path) / "c"
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def make_table(n_rows, width, dtype, seed=0):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((n_rows, width)) / np.sqrt(width) * rng.uniform(0.5, 1.5, (n_rows, 1))
    return table.astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_max_norm", [True, False])
def test_against_numpy_on_cluster(client, tmp_path, dtype, use_max_norm):
    data = make_table(50, 6, dtype)
    z = zarr_table(tmp_path / "t.zarr", data, 8)  # chunks of 8 rows, the last one 2
    indices = np.array([0, 7, 8, 8, 48, 49, 7])
    assert cdask.sparse_normalize_zarr(z, indices, use_max_norm=use_max_norm, norm=0.9) == 5
    assert_allclose_dtype(z[:], sparse_normalize_ref(data, indices, use_max_norm, 0.9), dtype)


def test_only_touched_chunks_are_rewritten(client, tmp_path):
    data = make_table(64, 4, np.float32)
    z = zarr_table(tmp_path / "t.zarr", data, 8)
    before = chunk_files(tmp_path / "t.zarr")
    assert len(before) == 8
    time.sleep(0.01)  # distinct mtimes on coarse clocks
    cdask.sparse_normalize_zarr(z, [1, 63, 62, 1])
    after = chunk_files(tmp_path / "t.zarr")
    changed = sorted(name for name in before if after[name] != before[name])
    assert changed == ["0/0", "7/0"]
    # Each rewritten chunk is a new file (written aside, then renamed into place): never half-written.
    assert all(after[name][0] != before[name][0] for name in changed)


def test_one_task_per_touched_chunk():
    z = zarr.create_array(store={}, shape=(100, 3), chunks=(10, 3), dtype="float32")
    z[:] = 1.0
    update = cdask.sparse_normalize_zarr(z, [5, 5, 15, 99, 98, 0], compute=False)
    graph = dict(update.__dask_graph__())
    writers = [task for task in graph.values() if "_update_rows" in repr(task)]
    assert len(writers) == 3  # chunks 0, 1 and 9
    assert update.compute(scheduler="sync") == 5
    np.testing.assert_allclose(np.linalg.norm(z[[0, 5, 15, 98, 99]], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(z[[1, 14, 97]], 1.0)


def test_empty_indices_submit_nothing(tmp_path):
    z = zarr_table(tmp_path / "t.zarr", make_table(10, 2, np.float32), 5)
    before = chunk_files(tmp_path / "t.zarr")
    assert cdask.sparse_normalize_zarr(z, np.empty(0, np.int64), scheduler="sync") == 0
    assert chunk_files(tmp_path / "t.zarr") == before


def test_max_norm_is_idempotent(client, tmp_path):
    """What a caller re-runs after a failure: max-norm gives the same bits, constant-norm the same within rounding."""
    data = make_table(40, 8, np.float32) * 3
    indices = np.arange(0, 40, 3)
    z = zarr_table(tmp_path / "t.zarr", data, 8)
    cdask.sparse_normalize_zarr(z, indices)
    once = z[:]
    cdask.sparse_normalize_zarr(z, indices)
    assert_bit_identical(z[:], once)
    c = zarr_table(tmp_path / "c.zarr", data, 8)
    cdask.sparse_normalize_zarr(c, indices, use_max_norm=False, norm=2.0)
    once = c[:]
    cdask.sparse_normalize_zarr(c, indices, use_max_norm=False, norm=2.0)
    np.testing.assert_allclose(c[:], once, rtol=2e-7, atol=0)


def test_dask_indices(client, tmp_path):
    data = make_table(30, 4, np.float64)
    z = zarr_table(tmp_path / "t.zarr", data, 7)
    cdask.sparse_normalize_zarr(z, da.from_array(np.array([29, 0, 14]), chunks=2))
    assert_allclose_dtype(z[:], sparse_normalize_ref(data, [29, 0, 14]))


@pytest.mark.parametrize("bad", [[3, 30], [-2]])
def test_out_of_range_raises_before_any_task(tmp_path, bad):
    data = make_table(30, 4, np.float32)
    z = zarr_table(tmp_path / "t.zarr", data, 7)
    before = chunk_files(tmp_path / "t.zarr")
    with dask.config.set(scheduler=_no_scheduler):
        with pytest.raises(IndexError, match=r"caffe2op.dask.sparse_normalize_zarr: SparseNormalize: index -?\d+"):
            cdask.sparse_normalize_zarr(z, bad)
    assert chunk_files(tmp_path / "t.zarr") == before
    assert_bit_identical(z[:], data)


def _no_scheduler(*args, **kwargs):
    raise AssertionError("a task was submitted")


def test_bad_arguments(tmp_path):
    func = "caffe2op.dask.sparse_normalize_zarr"
    z = zarr_table(tmp_path / "t.zarr", make_table(30, 4, np.float32), 7)
    with pytest.raises(TypeError, match=f"{func}: zarr_array must be a zarr.Array, got list"):
        cdask.sparse_normalize_zarr([[1.0]], [0])
    with pytest.raises(TypeError, match=f"{func}: .*must be float16, float32 or float64, got int32"):
        cdask.sparse_normalize_zarr(zarr.create_array(store={}, shape=(3, 2), chunks=(1, 2), dtype="int32"), [0])
    with pytest.raises(ValueError, match=f"{func}: .*'norm' must be finite and >= 0, got nan"):
        cdask.sparse_normalize_zarr(z, [0], norm=float("nan"))
    with pytest.raises(TypeError, match=f"{func}: indices must be integers"):
        cdask.sparse_normalize_zarr(z, da.ones(2, chunks=1))
    with pytest.raises(TypeError, match=f"{func}: .*indices must be integers"):
        cdask.sparse_normalize_zarr(z, [1.5])
    columns = zarr.create_array(store={}, shape=(8, 4), chunks=(4, 2), dtype="float32")
    with pytest.raises(ValueError, match=rf"{func}: zarr_array must be chunked along rows only .*\(4, 2\)"):
        cdask.sparse_normalize_zarr(columns, [0])
    read_only = zarr.open_array(str(tmp_path / "t.zarr"), mode="r")
    with pytest.raises(ValueError, match=f"{func}: zarr_array is read-only"):
        cdask.sparse_normalize_zarr(read_only, [0])


def test_sharded_table_is_written_by_shard(tmp_path):
    """With shards, the unit a store writes is the shard: one task per touched shard, never two per shard."""
    data = make_table(64, 4, np.float32)
    z = zarr.create_array(
        store=str(tmp_path / "s.zarr"), shape=data.shape, chunks=(4, 4), shards=(16, 4), dtype=data.dtype
    )
    z[:] = data
    update = cdask.sparse_normalize_zarr(z, [0, 5, 15, 16, 63], compute=False)
    assert sum("_update_rows" in repr(t) for t in dict(update.__dask_graph__()).values()) == 3
    update.compute(scheduler="threads")
    assert_allclose_dtype(z[:], sparse_normalize_ref(data, [0, 5, 15, 16, 63]))


# --- larger than memory, and a worker killed in the middle -------------------------------------------------

#: 1 GiB of float32 table (4x a worker's memory limit, 2x both workers'), in 8 MiB chunks of whole rows.
BIG_ROWS, BIG_WIDTH, BIG_CHUNK_ROWS = 2**21, 128, 2**14


def _peak_rss(dask_worker=None):
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, os.getpid()


@pytest.mark.slow  # writes, updates and reads back a 1 GiB table: about 15 s on 2 idle cores
def test_table_much_larger_than_worker_memory(client, tmp_path):
    table_bytes = BIG_ROWS * BIG_WIDTH * 4
    assert table_bytes >= 4 * WORKER_MEMORY_LIMIT
    path = tmp_path / "big.zarr"
    z = zarr.create_array(
        store=str(path),
        shape=(BIG_ROWS, BIG_WIDTH),
        chunks=(BIG_CHUNK_ROWS, BIG_WIDTH),
        dtype="float32",
        compressors=None,
    )
    base = make_table(BIG_CHUNK_ROWS, BIG_WIDTH, np.float32, seed=7)
    n_chunks = BIG_ROWS // BIG_CHUNK_ROWS
    for c in range(n_chunks):  # chunk c holds base * (1 + c % 3): different rows, cheap to make and to check
        z[c * BIG_CHUNK_ROWS : (c + 1) * BIG_CHUNK_ROWS] = base * np.float32(1 + c % 3)
    rng = np.random.default_rng(8)
    indices = rng.integers(0, BIG_ROWS, 64 * n_chunks)  # touches every chunk
    pids = {pid for _, pid in client.run(_peak_rss).values()}
    try:
        assert cdask.sparse_normalize_zarr(z, indices) == np.unique(indices).size
        peaks = client.run(_peak_rss)
        # Every chunk went through the workers, and none of them came near its memory limit (or was restarted).
        assert {pid for _, pid in peaks.values()} == pids
        assert all(peak < WORKER_MEMORY_LIMIT for peak, _ in peaks.values()), peaks
        rows = np.unique(indices)
        for c in range(n_chunks):
            block = z[c * BIG_CHUNK_ROWS : (c + 1) * BIG_CHUNK_ROWS]
            expected = base * np.float32(1 + c % 3)
            local = rows[(rows >= c * BIG_CHUNK_ROWS) & (rows < (c + 1) * BIG_CHUNK_ROWS)] - c * BIG_CHUNK_ROWS
            wide = expected[local].astype(np.float64)
            n = np.linalg.norm(wide, axis=1, keepdims=True)
            expected[local] = np.where(n > 1.0, wide / (n + 1e-12), wide)
            np.testing.assert_allclose(block, expected, rtol=1e-6, atol=1e-7)
    finally:
        shutil.rmtree(path)  # 1 GiB: not kept among pytest's last temporary directories


async def _die():
    """Run on a worker's event loop: the process exits at once, its running task with it."""
    os._exit(1)


def test_worker_killed_in_the_middle(client, tmp_path):
    """A worker dies (os._exit) while it runs update tasks: the cluster re-runs them, and the table is right."""
    from distributed import wait

    data = make_table(200 * 512, 64, np.float32, seed=3) * 2  # 200 chunks of 512 rows
    z = zarr_table(tmp_path / "t.zarr", data, 512)
    indices = np.random.default_rng(4).integers(0, len(data), 4000)
    future = client.compute(cdask.sparse_normalize_zarr(z, indices, compute=False))
    deadline = time.monotonic() + 60
    while not any(client.processing().values()):
        assert time.monotonic() < deadline and not future.done()
        time.sleep(0.005)
    victim = next(worker for worker, keys in client.processing().items() if keys)
    assert not future.done()
    client.run(_die, workers=[victim], wait=False)
    assert future.result(timeout=120) == np.unique(indices).size
    assert victim not in client.scheduler_info()["workers"]  # it did die (its nanny starts a new one)
    assert_allclose_dtype(z[:], sparse_normalize_ref(data, indices))
    client.wait_for_workers(2, timeout=60)
    wait(client.submit(int, 1))
