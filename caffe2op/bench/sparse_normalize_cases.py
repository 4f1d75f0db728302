# SPDX-License-Identifier: BSD-3-Clause
"""SparseNormalize cases: the headline, the targets of issue 12, the sweeps, a training step, a busy machine.

Every case has caffe2op, its strongest peer (numba, ``@njit(parallel=True,
fastmath=True)``) and its measured limits: the C floor kernel (a complete
SparseNormalize written for speed alone, see ``floor.c``) and the time to
read each distinct row once.  NumPy and torch are timed on the headline and
the training step, where they are affordable.
"""

import contextlib
import subprocess
import sys
import time

import numpy as np

import caffe2op

from . import floor, peers
from .inputs import SEED, embedding_table, indices_with_duplicates, tolerance
from .timing import FLOOR, OURS, PEER, Case, Contender, Target

NUMBA, C_FLOOR, READ_LIMIT = "numba", "C floor kernel", "read distinct rows"


def _reference(table, indices, use_max_norm, norm):
    def reference():
        return peers.numpy_sparse_normalize(table.astype(np.float64), indices, use_max_norm, norm)

    return reference


def _rows_only(case, table, indices):
    """Check only the rows ``indices`` name (a 10,000,000-row table is too big to compare in float64)."""
    rows = np.unique(indices)
    case.reference = lambda: peers.numpy_sparse_normalize(table[rows].astype(np.float64), np.arange(rows.size))
    for contender in case.contenders:
        contender.result = lambda t, _: t.reshape(len(t), -1)[rows]
        if contender.expected is not None:
            contender.expected = lambda: table[rows]
    return case


def _lazy(build):
    """``prepare`` wrapper building an object once, on first use (a Missing then marks the contender missing)."""
    made = []

    def get():
        if not made:
            made.append(build())
        return made[0]

    return get


def _floor_contenders(table, indices, use_max_norm, norm, threads, fresh):
    kernel = _lazy(lambda: floor.SparseNormalizeFloor(len(table), indices.size, table.dtype, threads))
    distinct = np.unique(indices)

    def read_rows(t):
        return floor.read_rows(t, distinct, threads)

    return [
        Contender(
            C_FLOOR,
            lambda t: kernel()(t, indices, use_max_norm, norm),
            lambda: (kernel(), fresh())[1],
            FLOOR,
            note="C, -O3 -march=native -fopenmp: bitmap (or sort) de-duplication, distinct rows in ascending order, "
            "norms in 8 double lanes, prefetch 8 rows ahead (every cache line of the row)",
        ),
        Contender(
            READ_LIMIT,
            read_rows,
            fresh,
            FLOOR,
            note="C: read every byte of each distinct row once, in ascending order (no writes)",
            result=lambda t, _: t,
            expected=lambda: table,
        ),
    ]


def refill(table):
    """A ``prepare`` that copies ``table`` into one working array allocated once.

    Cheaper than ``table.copy()`` per repeat (no fresh pages to fault in),
    and it still evicts what the previous repeat left in the caches as far
    as the table's size allows.
    """
    work = []

    def fresh():
        if not work:
            work.append(np.empty_like(table))
        np.copyto(work[0], table)
        return work[0]

    return fresh


def contenders(table, indices, use_max_norm=True, norm=1.0, threads=2, *, numpy=False, torch=False, fresh=None):
    """caffe2op, numba, the two limits, and optionally NumPy and torch, on fresh copies of ``table``."""
    fresh = fresh or refill(table)
    result = [
        Contender(
            "caffe2op",
            lambda t: caffe2op.sparse_normalize(t, indices, use_max_norm=use_max_norm, norm=norm),
            fresh,
            OURS,
        ),
        Contender(
            NUMBA,
            lambda t: peers.numba_sparse_normalize(t, indices, use_max_norm, norm, threads),
            fresh,
            PEER,
            note="@njit(parallel=True, fastmath=True): np.unique, then a prange over the distinct rows",
        ),
    ]
    if numpy:
        result.append(
            Contender("numpy", lambda t: peers.numpy_sparse_normalize(t, indices, use_max_norm, norm), fresh, PEER)
        )
    if torch and use_max_norm:
        result.append(
            Contender(
                "torch.embedding_renorm_",
                lambda wt: peers.torch_renorm(wt[0], wt[1], norm),
                lambda: peers.torch_renorm_prepare(fresh(), indices, threads),
                PEER,
                result=lambda wt, _: wt[0].numpy(),
                note="serial loop, run with torch.set_num_threads(1); eps 1e-7",
            )
        )
    return result + _floor_contenders(table, indices, use_max_norm, norm, threads, fresh)


def _case(group, name, table, indices, *, series=None, x=None, threads=2, targets=(), fresh=None, **extra):
    return Case(
        group,
        name,
        contenders(table, indices, True, 1.0, threads, fresh=fresh, **extra),
        reference=_reference(table, indices, True, 1.0),
        threads=threads,
        series=series,
        x=x,
        targets=list(targets),
        **tolerance(table.dtype),
        params=dict(rows=len(table), width=table[0].size, indices=indices.size, dtype=str(table.dtype)),
    )


def _goal_floor(value=1.1):
    return Target(C_FLOOR, value, kind="within")


def headline_cases(quick):
    """1,000,000 x 64 float32 with 100,000 random indices: both modes, 1 and 2 threads."""
    rng = np.random.default_rng(SEED)
    table = embedding_table(1_000_000, 64, np.float32, rng)
    indices = rng.integers(0, len(table), 100_000)
    for threads in (1, 2):
        for use_max_norm in (True, False):
            mode = "max-norm" if use_max_norm else "constant-norm"
            case = Case(
                "SparseNormalize",
                f"1,000,000 x 64 float32, 100,000 random indices, {mode}",
                contenders(table, indices, use_max_norm, 1.0, threads, numpy=True, torch=threads == 2 or not quick),
                reference=_reference(table, indices, use_max_norm, 1.0),
                threads=threads,
                series="threads" if use_max_norm else None,
                x=threads if use_max_norm else None,
                params=dict(rows=1_000_000, width=64, indices=100_000, mode=mode),
            )
            if threads == 2:
                case.targets = [_goal_floor(), Target(NUMBA, 1.3), Target("numpy", 3.0)]
                if use_max_norm:
                    case.targets.append(Target("torch.embedding_renorm_", 20.0))
            yield case


def _restoring(table, indices):
    """A ``prepare`` that restores only the rows ``indices`` touch in one working copy (for huge tables)."""
    work = table.copy()
    rows = np.unique(indices)
    original = table[rows]

    def fresh():
        work[rows] = original
        return work

    return fresh


def pair_cases(quick):
    """Issue 12's relative targets, each timed as one case so that both sides share the run.

    float16 against float32 on the headline shape, and one index into
    10,000,000 rows against one index into 10,000 rows.
    """
    rng = np.random.default_rng(SEED + 5)
    table = embedding_table(1_000_000, 64, np.float32, rng)
    indices = rng.integers(0, len(table), 100_000)
    half = table.astype(np.float16)
    yield Case(
        "SparseNormalize pairs",
        "float16 against float32: 1,000,000 x 64, 100,000 indices",
        [
            Contender("caffe2op", lambda t: caffe2op.sparse_normalize(t, indices), refill(half), OURS),
            Contender(
                "caffe2op float32",
                lambda t: caffe2op.sparse_normalize(t, indices),
                refill(table),
                PEER,
                expected=_reference(table, indices, True, 1.0),
            ),
        ],
        reference=_reference(half, indices, True, 1.0),
        targets=[Target("caffe2op float32", 1.3, kind="within")],
        **tolerance(np.float16),
        params=dict(rows=1_000_000, width=64, indices=100_000, dtype="float16"),
    )
    del table, half
    big_rows = 1_000_000 if quick else 10_000_000
    big = embedding_table(big_rows, 64, np.float32, rng)
    small = big[:10_000].copy()
    one_big, one_small = rng.integers(0, big_rows, 1), rng.integers(0, 10_000, 1)
    pair = Case(
        "SparseNormalize pairs",
        f"one index into {big_rows:,} rows against one into 10,000 rows (x 64 float32)",
        [
            Contender("caffe2op", lambda t: caffe2op.sparse_normalize(t, one_big), _restoring(big, one_big), OURS),
            Contender(
                "caffe2op, 10,000 rows",
                lambda t: caffe2op.sparse_normalize(t, one_small),
                _restoring(small, one_small),
                PEER,
                expected=_reference(small, one_small, True, 1.0),
            ),
        ],
        targets=[Target("caffe2op, 10,000 rows", 2.0, kind="within")],
        params=dict(rows=big_rows, width=64, indices=1, note="only the touched rows are restored (and compared)"),
    )
    _rows_only(pair, big, one_big)
    pair.contenders[1].result = lambda t, _: t[one_small]
    pair.contenders[1].expected = lambda: peers.numpy_sparse_normalize(small[one_small].astype(np.float64), [0])
    yield pair


def sweep_cases(quick):
    """Time against index count, table rows, row width, duplicate share, dtype (threads: see the headline)."""
    group = "SparseNormalize sweeps"
    rng = np.random.default_rng(SEED + 6)
    table = embedding_table(1_000_000, 64, np.float32, rng)
    counts = [1, 100, 10_000, 1_000_000] if quick else [1, 100, 1_000, 10_000, 100_000, 1_000_000]
    for count in counts:
        idx = rng.integers(0, len(table), count)
        targets = [Target(NUMBA, 1.3)] if count >= 100 else []
        if count == 1_000_000:
            targets.append(_goal_floor())
        yield _case(
            group, f"1,000,000 x 64 float32, {count:,} indices", table, idx, series="indices", x=count, targets=targets
        )
    for share in (0.0, 0.9) if quick else (0.0, 0.3, 0.6, 0.9):
        idx = indices_with_duplicates(len(table), 100_000, share, rng)
        yield _case(
            group,
            f"1,000,000 x 64 float32, 100,000 indices, {share:.0%} repeats",
            table,
            idx,
            series="duplicate share",
            x=share,
        )
    idx = rng.integers(0, len(table), 100_000)
    for dtype in (np.float16, np.float32, np.float64):
        yield _case(
            group,
            f"1,000,000 x 64 {np.dtype(dtype)}, 100,000 indices",
            table.astype(dtype),
            idx,
            series="bytes per element",
            x=np.dtype(dtype).itemsize,
        )
    del table
    for width in (8, 64, 256, 1024) if quick else (8, 16, 32, 64, 128, 256, 512, 1024):
        n_rows = (1 << 26) // width  # 256 MiB of float32 whatever the width
        wide = embedding_table(n_rows, width, np.float32, rng)
        idx = rng.integers(0, n_rows, min(100_000, n_rows // 2))
        targets = [Target(NUMBA, 1.3)] + ([_goal_floor()] if width in (256, 1024) else [])
        yield _case(
            group,
            f"{n_rows:,} x {width} float32, {idx.size:,} indices",
            wide,
            idx,
            series="row width",
            x=width,
            targets=targets,
        )
    del wide
    for n_rows in (10_000, 100_000, 1_000_000) if quick else (10_000, 100_000, 1_000_000, 10_000_000):
        tall = embedding_table(n_rows, 64, np.float32, rng)
        idx = rng.integers(0, n_rows, 1_000)
        case = _case(
            group,
            f"{n_rows:,} x 64 float32, 1,000 indices",
            tall,
            idx,
            series="table rows",
            x=n_rows,
            fresh=_restoring(tall, idx),
        )
        case.params["note"] = "only the touched rows are restored (and compared) between repeats"
        yield _rows_only(case, tall, idx)


@contextlib.contextmanager
def _busy_core():
    """Another process spinning on one core for the duration (the machine of a user running something else)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.2)  # let it get going
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def small_batch_cases(quick):
    """A training step's batch (512 indices into 100,000 x 64): call overhead, the façade, a busy machine."""
    rng = np.random.default_rng(SEED + 1)
    table = embedding_table(100_000, 64, np.float32, rng)
    indices = rng.integers(0, len(table), 512)

    # One workspace for all repeats, as in a training loop; each repeat feeds it a fresh copy of the table.
    persistent = caffe2op.Workspace()
    persistent.feed_blob("idx", indices)

    def workspace():
        persistent.feed_blob("w", table)
        return persistent

    op = caffe2op.create_operator("SparseNormalize", ["w", "idx"], ["w"])
    net = caffe2op.Net("step")
    net.SparseNormalize(["w", "idx"], ["w"])
    step = contenders(table, indices, numpy=True, torch=True)
    step[1:1] = [
        Contender(
            "Workspace.run_operator_once",
            lambda ws: ws.run_operator_once(op),
            workspace,
            OURS,
            result=lambda ws, _: ws.fetch_blob("w"),
        ),
        Contender(
            "Workspace.run_net", lambda ws: ws.run_net(net), workspace, OURS, result=lambda ws, _: ws.fetch_blob("w")
        ),
    ]
    yield Case(
        "SparseNormalize small batch",
        "512 random indices into 100,000 x 64 float32, max-norm",
        step,
        reference=_reference(table, indices, True, 1.0),
        targets=[Target("numpy", 3.0)],
        params=dict(rows=100_000, width=64, indices=512),
    )
    yield Case(
        "SparseNormalize small batch",
        "the same step while another process spins on one core",
        [
            Contender("caffe2op", lambda t: caffe2op.sparse_normalize(t, indices), table.copy, OURS),
            Contender("numpy", lambda t: peers.numpy_sparse_normalize(t, indices), table.copy, PEER),
        ],
        reference=_reference(table, indices, True, 1.0),
        context=_busy_core,
        targets=[Target("numpy", 1.0, statistic="q3_s")],
        params=dict(rows=100_000, width=64, indices=512, load="one process spinning"),
    )
    yield _facade_case(table, indices)


def _facade_case(table, indices):
    """What the workspace and the net add to the functional call, on warm, unchanging inputs.

    Max-norm on rows already within the norm changes nothing, so the same
    inputs serve every repeat and only the Python layers differ.
    """
    unit = caffe2op.sparse_normalize(table.copy(), indices)  # selected rows now within norm: idempotent
    ws = caffe2op.Workspace()
    ws.feed_blob("w", unit)
    ws.feed_blob("idx", indices)
    blob = ws._blobs["w"]
    op = caffe2op.create_operator("SparseNormalize", ["w", "idx"], ["w"])
    net = caffe2op.Net("step")
    net.SparseNormalize(["w", "idx"], ["w"])
    return Case(
        "SparseNormalize small batch",
        "façade overhead: the same call on warm rows already within norm",
        [
            Contender(
                "caffe2op",
                lambda _: caffe2op.sparse_normalize(blob, indices),
                lambda: None,
                OURS,
                result=lambda *_: blob,
            ),
            Contender(
                "Workspace.run_operator_once",
                lambda _: ws.run_operator_once(op),
                lambda: None,
                OURS,
                result=lambda *_: blob,
            ),
            Contender("Workspace.run_net", lambda _: ws.run_net(net), lambda: None, OURS, result=lambda *_: blob),
        ],
        reference=lambda: unit,
        targets=[Target("caffe2op", 10e-6, kind="max_extra", ours="Workspace.run_operator_once")],
        params=dict(rows=100_000, width=64, indices=512),
    )
