# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark cases of caffe2op.dask: SparseNormalize of a Zarr table on disk through a LocalCluster.

Rows per second with 1 and 2 worker processes (one thread each, one kernel
thread per task) against the in-memory kernel on the same table, and the
parts of a step measured on their own, so that their shares can be read off
the report: routing on the client, Zarr I/O of the touched chunks (no kernel,
no cluster), the same tasks with empty bodies on the cluster (scheduling),
and the kernel itself.  Needs the extra ``dask``; skipped without it.

The updates run in constant-norm mode: every repeat scales the same rows
again (by a factor within rounding of 1), so repeats do the same work
without resetting a table on disk.
"""

import atexit
import shutil
import tempfile

import numpy as np

import caffe2op

from .inputs import SEED, embedding_table
from .timing import FLOOR, OURS, PEER, Case, Contender

_CLUSTERS = {}
_TEMP_DIRS = []


def _client(n_workers):
    """A Client of a LocalCluster with ``n_workers`` single-threaded worker processes (kept for the run)."""
    if n_workers not in _CLUSTERS:
        from distributed import Client, LocalCluster

        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        )
        client = Client(cluster, set_as_default=False)
        client.run(_warm_up)  # imports out of the timings
        _CLUSTERS[n_workers] = (client, cluster)
    return _CLUSTERS[n_workers][0]


def _warm_up():
    import zarr  # noqa: F401

    import caffe2op.dask  # noqa: F401


@atexit.register
def _close():
    for client, cluster in _CLUSTERS.values():
        client.close()
        cluster.close()
    _CLUSTERS.clear()
    for path in _TEMP_DIRS:
        shutil.rmtree(path, ignore_errors=True)


def _zarr_table(data, chunk_rows):
    import zarr

    path = tempfile.mkdtemp(prefix="caffe2op-bench-", suffix=".zarr")
    _TEMP_DIRS.append(path)
    z = zarr.create_array(
        store=path, shape=data.shape, chunks=(chunk_rows, data.shape[1]), dtype=data.dtype, compressors=None
    )
    z[:] = data
    return z


def _io_only(z, touched, chunk_rows):
    """Read and write back every touched chunk from the client, serially: the I/O without kernel or cluster."""
    for chunk in touched:
        block = z[chunk * chunk_rows : (chunk + 1) * chunk_rows]
        z[chunk * chunk_rows : (chunk + 1) * chunk_rows] = block


def _empty_task(*args):
    return 0


def _scheduling_only(client, n_tasks):
    """``n_tasks`` empty tasks and their sum, as sparse_normalize_zarr submits them: the cluster's overhead."""
    import dask

    tasks = [dask.delayed(_empty_task, pure=False)(i) for i in range(n_tasks)]
    return dask.delayed(sum, pure=False)(tasks).compute(scheduler=client)


_NOTHING = dict(result=lambda inputs, output: np.zeros(1), expected=lambda: np.zeros(1))


def _zarr_case(group, name, rows, width, chunk_rows, indices, rng, *, in_memory=True):
    import caffe2op.dask as cdask

    data = embedding_table(rows, width, np.float32, rng)
    z = _zarr_table(data, chunk_rows)
    starts = np.arange(0, rows + chunk_rows, chunk_rows, dtype=np.int64)
    starts[-1] = rows
    touched = sorted(cdask.route(indices, starts))

    def update(n_workers):
        return lambda table: cdask.sparse_normalize_zarr(
            table, indices, use_max_norm=False, scheduler=_client(n_workers)
        )

    def reference():
        wide = data.astype(np.float64)
        rows_ = np.unique(indices)
        wide[rows_] *= 1.0 / (np.linalg.norm(wide[rows_], axis=1, keepdims=True) + 1e-12)
        return wide

    read_back = dict(result=lambda table, output: table[:])
    contenders = [
        Contender(
            "caffe2op.dask, 2 workers", update(2), lambda: z, OURS, note="Zarr on disk, 1 thread each", **read_back
        ),
        Contender("caffe2op.dask, 1 worker", update(1), lambda: z, PEER, note="same call, 1 worker", **read_back),
    ]
    if in_memory:
        contenders.append(
            Contender(
                "caffe2op.sparse_normalize in memory",
                lambda table: caffe2op.sparse_normalize(table, indices, use_max_norm=False),
                data.copy,
                PEER,
                note="the kernel alone, NumPy table, 1 thread",
            )
        )
    contenders += [
        Contender(
            "floor: Zarr read+write of touched chunks",
            lambda table: _io_only(table, touched, chunk_rows),
            lambda: z,
            FLOOR,
            note=f"{len(touched)} chunks, serial, on the client",
            **_NOTHING,
        ),
        Contender(
            "part: routing on the client",
            lambda _: cdask.route(indices, starts),
            lambda: None,
            FLOOR,
            note="unique + searchsorted",
            **_NOTHING,
        ),
        Contender(
            "part: empty tasks, 2 workers",
            lambda _: _scheduling_only(_client(2), len(touched)),
            lambda: None,
            FLOOR,
            note=f"{len(touched)} tasks + their sum",
            **_NOTHING,
        ),
    ]
    return Case(
        group,
        name,
        contenders,
        reference=reference,
        threads=1,
        params=dict(
            rows=rows,
            width=width,
            chunk_rows=chunk_rows,
            indices=int(indices.size),
            touched_chunks=len(touched),
            distinct_rows=int(np.unique(indices).size),
            mode="constant-norm",
        ),
    )


def dask_cases(quick):
    """Zarr tables through 1 and 2 workers: a 256 MB table in 4 MB chunks, and 1,000 chunks of 64 KB (overhead)."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
        import zarr  # noqa: F401
    except ImportError:
        return
    rng = np.random.default_rng(SEED + 14)
    yield _zarr_case(
        "Dask Zarr SparseNormalize",
        "1,000,000 x 64 float32 on disk, 64 chunks of 15,625 rows, 100,000 random indices",
        1_000_000,
        64,
        15_625,
        rng.integers(0, 1_000_000, 100_000),
        rng,
    )
    if not quick:
        yield _zarr_case(
            "Dask Zarr SparseNormalize",
            "1,000,000 x 64 float32 on disk, 64 chunks of 15,625 rows, 1,000 random indices (a training step)",
            1_000_000,
            64,
            15_625,
            rng.integers(0, 1_000_000, 1_000),
            rng,
        )
    yield _zarr_case(
        "Dask task overhead",
        "1,024,000 x 16 float32 on disk, 1,000 chunks of 1,024 rows, one index in each",
        1_024_000,
        16,
        1_024,
        np.arange(1_000) * 1_024 + rng.integers(0, 1_024, 1_000),
        rng,
        in_memory=not quick,
    )
