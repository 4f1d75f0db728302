# SPDX-License-Identifier: BSD-3-Clause
"""The benchmark cases: SparseNormalize (headline, sweeps, small batch, façade), StopGradient, ConstantFill.

Each builder yields :class:`~caffe2op.bench.timing.Case` objects; inputs are
generated once per case with a fixed seed and copied before every repeat.
Groups that need optional parts of caffe2op (Normalize, the backward pass,
OpenCL) live in their own builders and are skipped when the part is absent.
"""

import numpy as np

import caffe2op

from . import peers
from .timing import FLOOR, OURS, PEER, Case, Contender, Target

SEED = 20261121


def embedding_table(n_rows, width, dtype, rng, norm=1.0):
    """Rows with L2 norms uniform in [0.5, 1.5] * norm: about half exceed ``norm``."""
    table = rng.standard_normal((n_rows, width), dtype=np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    table *= rng.uniform(0.5, 1.5, (n_rows, 1)).astype(np.float32) * norm
    return table.astype(dtype, copy=False)


def indices_with_duplicates(n_rows, count, duplicate_share, rng):
    """``count`` indices of which ``duplicate_share`` repeat earlier ones."""
    distinct = max(1, int(round(count * (1 - duplicate_share))))
    pool = rng.choice(n_rows, size=distinct, replace=False)
    extra = rng.choice(pool, size=count - distinct, replace=True)
    return rng.permutation(np.concatenate([pool, extra])).astype(np.int64)


def _sparse_normalize_contenders(table, indices, use_max_norm, norm, threads, *, torch=True, floor=True):
    buffer = np.empty((indices.size, table[0].size), table.dtype)
    contenders = [
        Contender(
            "caffe2op",
            lambda t: caffe2op.sparse_normalize(t, indices, use_max_norm=use_max_norm, norm=norm),
            table.copy,
            OURS,
        ),
        Contender("numpy", lambda t: peers.numpy_sparse_normalize(t, indices, use_max_norm, norm), table.copy, PEER),
    ]
    if torch and use_max_norm:
        contenders.append(
            Contender(
                "torch.embedding_renorm_",
                lambda wt: peers.torch_renorm(wt[0], wt[1], norm),
                lambda: peers.torch_renorm_prepare(table.copy(), indices, threads),
                PEER,
                result=lambda wt, _: wt[0].numpy(),
                note="serial loop, run with torch.set_num_threads(1); eps 1e-7",
            )
        )
    if floor:
        contenders.append(
            Contender(
                "floor: take+scatter",
                lambda t: peers.gather_scatter_floor(t, indices, buffer),
                table.copy,
                FLOOR,
                note="gather into a buffer and scatter back",
                expected=lambda: table,  # moves the rows, changes nothing
            )
        )
    return contenders


def _sparse_normalize_reference(table, indices, use_max_norm, norm):
    def reference():
        return peers.numpy_sparse_normalize(table.astype(np.float64), indices, use_max_norm, norm)

    return reference


def _tolerance(dtype):
    return dict(rtol=1e-2, atol=1e-3) if dtype == np.float16 else dict(rtol=1e-5, atol=1e-6)


def sparse_normalize_cases(quick):
    """Headline case (both modes, 1 and 2 threads) and the sweeps."""
    rng = np.random.default_rng(SEED)
    table = embedding_table(1_000_000, 64, np.float32, rng)
    indices = rng.integers(0, len(table), 100_000)
    for threads in (1, 2):
        for use_max_norm in (True, False):
            mode = "max-norm" if use_max_norm else "constant-norm"
            case = Case(
                "SparseNormalize",
                f"1,000,000 x 64 float32, 100,000 random indices, {mode}",
                # torch runs serially whatever the thread count: --quick times it where its target is.
                _sparse_normalize_contenders(
                    table, indices, use_max_norm, 1.0, threads, torch=threads == 2 or not quick
                ),
                reference=_sparse_normalize_reference(table, indices, use_max_norm, 1.0),
                threads=threads,
                params=dict(rows=1_000_000, width=64, indices=100_000, mode=mode),
            )
            if threads == 2:
                case.targets = [Target("numpy", 3.0), Target("floor: take+scatter", 1.5, kind="within")]
                if use_max_norm:
                    case.targets.append(Target("torch.embedding_renorm_", 20.0))
            yield case
    yield from _sparse_normalize_sweeps(rng, table, quick)


def _sweep_case(series, x, name, table, indices, dtype=np.float32, torch=True):
    return Case(
        "SparseNormalize sweeps",
        name,
        _sparse_normalize_contenders(table, indices, True, 1.0, 2, torch=torch),
        reference=_sparse_normalize_reference(table, indices, True, 1.0),
        series=series,
        x=x,
        **_tolerance(dtype),
        params=dict(rows=len(table), width=table[0].size, indices=indices.size, dtype=str(np.dtype(dtype))),
    )


def _sparse_normalize_sweeps(rng, table, quick):
    counts = [100, 1_000, 10_000] if quick else [100, 1_000, 10_000, 100_000, 1_000_000]
    for count in counts:
        idx = rng.integers(0, len(table), count)
        yield _sweep_case("index count", count, f"1,000,000 x 64 float32, {count:,} indices", table, idx)
    if quick:
        return
    for width in (16, 64, 256, 1024):
        n_rows = (1 << 26) // width
        wide = embedding_table(n_rows, width, np.float32, rng)
        idx = rng.integers(0, n_rows, min(100_000, n_rows // 2))
        yield _sweep_case("row width", width, f"{n_rows:,} x {width} float32, {idx.size:,} indices", wide, idx)
    for share in (0.0, 0.3, 0.6, 0.9):
        idx = indices_with_duplicates(len(table), 100_000, share, rng)
        yield _sweep_case(
            "duplicate share", share, f"1,000,000 x 64 float32, 100,000 indices, {share:.0%} repeats", table, idx
        )
    idx = rng.integers(0, len(table), 100_000)
    for dtype in (np.float16, np.float32, np.float64):
        typed = table.astype(dtype)
        yield _sweep_case(
            "bytes per element (dtype)",
            np.dtype(dtype).itemsize,
            f"1,000,000 x 64 {np.dtype(dtype)}, 100,000 indices",
            typed,
            idx,
            dtype=dtype,
        )


def small_batch_cases(quick):
    """A training step's batch (512 indices into 100,000 x 64): call overhead and the façade."""
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
    contenders = _sparse_normalize_contenders(table, indices, True, 1.0, 2, floor=False)
    contenders[1:1] = [
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
        contenders,
        reference=_sparse_normalize_reference(table, indices, True, 1.0),
        targets=[Target("numpy", 3.0)],
        params=dict(rows=100_000, width=64, indices=512),
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


def stop_gradient_cases(quick):
    """StopGradient out of place on 256 MB against np.copyto, and in place."""
    x = np.random.default_rng(SEED + 2).standard_normal(64 << 20, dtype=np.float32)  # 256 MiB
    out = np.empty_like(x)
    yield Case(
        "StopGradient",
        "out of place, 256 MiB float32, into an existing array",
        [
            Contender(
                "caffe2op", lambda _: caffe2op.stop_gradient(x, out=out), lambda: None, OURS, result=lambda *_: out
            ),
            Contender("np.copyto", lambda _: np.copyto(out, x), lambda: None, PEER, result=lambda *_: out),
        ],
        reference=lambda: x,
        rtol=0,
        atol=0,
        targets=[Target("np.copyto", 0.9)],
        params=dict(bytes=x.nbytes),
    )
    yield Case(
        "StopGradient",
        "out of place, 256 MiB float32, new array",
        [
            Contender("caffe2op", lambda _: caffe2op.stop_gradient(x), lambda: None, OURS),
            Contender("ndarray.copy", lambda _: x.copy(), lambda: None, PEER),
        ],
        reference=lambda: x,
        rtol=0,
        atol=0,
        params=dict(bytes=x.nbytes),
    )
    small = np.ones(1000, np.float32)
    ws = caffe2op.Workspace()
    ws.feed_blob("x", small)
    in_place = caffe2op.create_operator("StopGradient", "x", "x")
    yield Case(
        "StopGradient",
        "in place",
        [
            Contender("caffe2op", lambda _: caffe2op.stop_gradient(x, out=x), lambda: None, OURS, result=lambda *_: x),
            Contender(
                "Workspace.run_operator_once",
                lambda _: ws.run_operator_once(in_place),
                lambda: None,
                OURS,
                result=lambda *_: x,
            ),
        ],
        targets=[Target(None, 2e-6, kind="max_time")],
        params=dict(bytes=x.nbytes),
    )


def constant_fill_cases(quick):
    """ConstantFill through a workspace against np.full and np.zeros."""
    for n, value in ((1_000, 1.5), (16 << 20, 1.5), (16 << 20, 0.0)):
        ws = caffe2op.Workspace()
        op = caffe2op.create_operator("ConstantFill", [], "y", shape=[n], value=value)
        if value == 0:
            peer = ("np.zeros", lambda _, n=n: np.zeros(n, np.float32))
        else:
            peer = ("np.full", lambda _, n=n, value=value: np.full(n, value, np.float32))

        def fresh(ws=ws):
            if ws.has_blob("y"):
                ws.remove_blob("y")  # a new blob each time, as np.full allocates each time
            return ws

        yield Case(
            "ConstantFill",
            f"{n:,} float32, value {value}",
            [
                Contender(
                    "Workspace.run_operator_once",
                    lambda w, op=op: w.run_operator_once(op),
                    fresh,
                    OURS,
                    result=lambda w, _: w.fetch_blob("y"),
                ),
                Contender(peer[0], peer[1], lambda: None, PEER),
            ],
            reference=lambda n=n, value=value: np.full(n, value, np.float32),
            params=dict(elements=n, value=value),
        )


CASE_BUILDERS = [sparse_normalize_cases, small_batch_cases, stop_gradient_cases, constant_fill_cases]


# --- backward pass -------------------------------------------------------------

_BENCH_OP = "BenchUnary"


def _register_bench_gradient():
    """A gradient maker for a forward type that needs no schema or implementation (as in Caffe2's tests)."""
    from ..gradient import GradientMakerBase, register_gradient, registered_gradients

    if _BENCH_OP in registered_gradients():
        return

    @register_gradient(_BENCH_OP)
    class GetBenchUnaryGradient(GradientMakerBase):
        def get_gradient_defs(self):
            return self.single_gradient_def(_BENCH_OP + "Gradient", "", [self.I(0), self.GO(0)], [self.GI(0)])


def _chain(n):
    return [caffe2op.OperatorDef(type=_BENCH_OP, inputs=[f"x{i}"], outputs=[f"x{i + 1}"]) for i in range(n)], [f"x{n}"]


def _fan_out(n):
    ops = [caffe2op.OperatorDef(type=_BENCH_OP, inputs=["x"], outputs=[f"y{i}"]) for i in range(n)]
    ops.append(caffe2op.OperatorDef(type="Sum", inputs=[f"y{i}" for i in range(n)], outputs=["loss"]))
    return ops, ["loss"]


def backward_cases(quick):
    """get_backward_pass on a chain and on a wide fan-out of N operators: time and linearity."""
    _register_bench_gradient()
    sizes = [1_000, 10_000] if quick else [100, 1_000, 10_000]
    for shape, build in (("chain", _chain), ("fan-out", _fan_out)):
        for n in sizes:
            ops, ys = build(n)
            contenders = [
                Contender("caffe2op", lambda _, ops=ops, ys=ys: caffe2op.get_backward_pass(ops, ys), lambda: None, OURS)
            ]
            targets = []
            if n >= 1_000:
                # Linearity, measured in the same run: N operators against 10 runs of N/10.
                small_ops, small_ys = build(n // 10)
                contenders.append(
                    Contender(
                        "10 x (N/10 operators)",
                        lambda _, ops=small_ops, ys=small_ys: [caffe2op.get_backward_pass(ops, ys) for _ in range(10)],
                        lambda: None,
                        PEER,
                        note="linear scaling gives the same time as N operators",
                    )
                )
                targets.append(Target("10 x (N/10 operators)", 1.5, kind="within"))
            if n == 10_000:
                targets.append(Target(None, 1.0, kind="max_time"))
            yield Case(
                "Backward pass",
                f"{shape} of {n:,} operators",
                contenders,
                threads=1,
                series=shape,
                x=n,
                targets=targets,
                params=dict(operators=n, shape=shape),
            )


# --- OpenCL ----------------------------------------------------------------------


def opencl_cases(quick):
    """SparseNormalize and StopGradient on each OpenCL device (PoCL on a CPU-only machine)."""
    for info in caffe2op.opencl_devices():
        yield from _opencl_device_cases(info, quick)


def _opencl_device_cases(info, quick):
    from .. import opencl

    backend = opencl.backend_for(caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, info.index))
    queue = backend.queue
    rng = np.random.default_rng(SEED + 3)
    for dtype in (np.float32,) if quick else (np.float32, np.float16):
        yield _opencl_sparse_normalize_case(
            info, backend, queue, embedding_table(1_000_000, 64, dtype, rng), rng.integers(0, 1_000_000, 100_000)
        )
    x = backend.from_host(np.ones(64 << 20, np.float32))
    out = backend.empty(x.shape, x.dtype)

    def device_copy(_):
        caffe2op.stop_gradient(x, out=out)
        queue.finish()

    yield Case(
        f"OpenCL: {info.name}",
        "StopGradient 256 MiB float32 device-to-device",
        [Contender("caffe2op OpenCL", device_copy, lambda: None, OURS, note="includes queue.finish()")],
        params=dict(device=info.name, bytes=x.nbytes),
    )


def _opencl_sparse_normalize_case(info, backend, queue, table, indices):
    template = backend.from_host(table)
    device_indices = backend.from_host(indices)

    def fresh():
        copy = backend.copy(template)
        queue.finish()
        return copy

    def run_device(t):
        caffe2op.sparse_normalize(t, device_indices, use_max_norm=True, norm=1.0)
        queue.finish()

    return Case(
        f"OpenCL: {info.name}",
        f"SparseNormalize 1,000,000 x 64 {table.dtype}, 100,000 indices on the device, max-norm",
        [
            Contender(
                "caffe2op OpenCL",
                run_device,
                fresh,
                OURS,
                result=lambda t, _: t.get(),
                note="device arrays; includes queue.finish()",
            ),
            Contender(
                "caffe2op",
                lambda t: caffe2op.sparse_normalize(t, indices),
                table.copy,
                PEER,
                note="the CPU kernels, 2 threads",
            ),
            Contender("numpy", lambda t: peers.numpy_sparse_normalize(t, indices), table.copy, PEER),
        ],
        reference=_sparse_normalize_reference(table, indices, True, 1.0),
        **_tolerance(table.dtype),
        targets=[Target("numpy", 1.0, ours="caffe2op OpenCL")],
        params=dict(device=info.name, dtype=str(table.dtype)),
    )


# --- Normalize ---------------------------------------------------------------------


def _normalize_sparse_reference(matrix, axis):
    """Normalize of a scipy.sparse matrix in float64, without densifying (a 100,000 x 1,000 one is 800 MB dense)."""
    wide = matrix.astype(np.float64).tocsr()
    norms = np.sqrt(np.asarray(wide.multiply(wide).sum(axis=axis)).ravel())
    scale = 1.0 / np.maximum(norms, 1e-12)
    return wide.multiply(scale[np.newaxis, :] if axis == 0 else scale[:, np.newaxis]).tocsr()


def normalize_cases(quick):
    """Normalize against NumPy (dense, each axis) and scikit-learn (CSR and CSC, each axis)."""
    rng = np.random.default_rng(SEED + 4)
    sides = [4096] if quick else [1024, 2048, 4096]
    for side in sides:
        dense = rng.standard_normal((side, side), dtype=np.float32)
        for axis in (0, 1):
            headline = side == 4096
            yield Case(
                "Normalize dense",
                f"{side} x {side} float32, axis {axis}",
                [
                    Contender("caffe2op", lambda _, d=dense, a=axis: caffe2op.normalize(d, axis=a), lambda: None, OURS),
                    Contender(
                        "numpy",
                        lambda _, d=dense, a=axis: peers.numpy_normalize(d, a),
                        lambda: None,
                        PEER,
                        note="W / np.maximum(np.linalg.norm(W, axis=a, keepdims=True), 1e-12)",
                    ),
                ],
                reference=lambda d=dense, a=axis: peers.numpy_normalize(d.astype(np.float64), a),
                series=f"dense side, axis {axis}",
                x=side,
                targets=[Target("numpy", 2.0)] if headline else [],
                params=dict(shape=[side, side], axis=axis),
            )
    try:
        import scipy.sparse as sp
    except ImportError:
        return
    csr = sp.random(100_000, 1_000, density=0.01, format="csr", dtype=np.float32, random_state=SEED)
    formats = [("CSR", csr)] if quick else [("CSR", csr), ("CSC", csr.tocsc())]
    for name, matrix in formats:
        for axis in (0, 1):
            yield Case(
                "Normalize sparse",
                f"{name} 100,000 x 1,000 float32 at 1% density, axis {axis}",
                [
                    Contender(
                        "caffe2op", lambda _, m=matrix, a=axis: caffe2op.normalize(m, axis=a), lambda: None, OURS
                    ),
                    Contender(
                        "sklearn.preprocessing.normalize",
                        lambda _, m=matrix, a=axis: peers.sklearn_normalize(m, a),
                        lambda: None,
                        PEER,
                        note="returns CSC for CSR input along axis 0",
                    ),
                ],
                reference=lambda m=matrix, a=axis: _normalize_sparse_reference(m, a),
                targets=[Target("sklearn.preprocessing.normalize", 2.0)] if (name, axis) == ("CSR", 0) else [],
                params=dict(format=name, shape=[100_000, 1_000], density=0.01, axis=axis),
            )


CASE_BUILDERS += [backward_cases, opencl_cases, normalize_cases]

# caffe2op.dask (its own module; it yields nothing without the extra "dask").
from .dask_cases import dask_cases  # noqa: E402

CASE_BUILDERS.append(dask_cases)
