# SPDX-License-Identifier: BSD-3-Clause
"""The benchmark cases of StopGradient, ConstantFill, Normalize, the backward pass and OpenCL.

Each builder yields :class:`~caffe2op.bench.timing.Case` objects; inputs are
generated once per case with a fixed seed.  SparseNormalize's cases are in
:mod:`caffe2op.bench.sparse_normalize_cases`; the registry of groups is
:mod:`caffe2op.bench.registry`.
"""

import numpy as np

import caffe2op

from . import floor, peers
from .inputs import SEED, embedding_table, last_level_cache_bytes, tolerance
from .sparse_normalize_cases import _reference as _sparse_normalize_reference
from .timing import FLOOR, OURS, PEER, Case, Contender, Target

NUMBA, COPY_NT = "numba", "C copy, non-temporal stores"


def stop_gradient_cases(quick):
    """StopGradient out of place above the last-level cache, against its peers and the copy limits, and in place."""
    # Twice the last-level cache (at least 256 MiB), so that the copy streams from and to memory.
    size = max(256 << 20, 2 * last_level_cache_bytes()) // (1 << 20) << 20
    x = np.random.default_rng(SEED + 2).standard_normal(size // 4, dtype=np.float32)
    out = np.empty_like(x)
    mib = f"{size >> 20} MiB float32"
    yield Case(
        "StopGradient",
        f"out of place, {mib}, into an existing array",
        [
            Contender(
                "caffe2op", lambda _: caffe2op.stop_gradient(x, out=out), lambda: None, OURS, result=lambda *_: out
            ),
            Contender("np.copyto", lambda _: np.copyto(out, x), lambda: None, PEER, result=lambda *_: out),
            Contender(
                "torch copy_",
                lambda _: peers.torch_copy(out, x, 2),
                lambda: None,
                PEER,
                result=lambda *_: out,
                note="torch.from_numpy(out).copy_(torch.from_numpy(x)), torch.set_num_threads(2)",
            ),
            Contender(
                NUMBA,
                lambda _: peers.numba_copy(out, x, 2),
                lambda: None,
                PEER,
                result=lambda *_: out,
                note="@njit(parallel=True, fastmath=True) prange copy loop",
            ),
            Contender(
                "C copy",
                lambda _: floor.copy(out, x, 2),
                lambda: None,
                FLOOR,
                result=lambda *_: out,
                note="C: memcpy of one half per thread",
            ),
            Contender(
                COPY_NT,
                lambda _: floor.copy(out, x, 2, non_temporal=True),
                lambda: None,
                FLOOR,
                result=lambda *_: out,
                note="C: streaming (non-temporal) stores, one half per thread",
            ),
        ],
        reference=lambda: x,
        rtol=0,
        atol=0,
        targets=[Target(COPY_NT, 0.9), Target("np.copyto", 0.9)],
        params=dict(bytes=x.nbytes, last_level_cache=last_level_cache_bytes()),
    )
    yield Case(
        "StopGradient",
        f"out of place, {mib}, new array",
        [
            Contender("caffe2op", lambda _: caffe2op.stop_gradient(x), lambda: None, OURS),
            Contender("ndarray.copy", lambda _: x.copy(), lambda: None, PEER),
        ],
        reference=lambda: x,
        rtol=0,
        atol=0,
        params=dict(bytes=x.nbytes),
    )
    yield Case(
        "StopGradient",
        f"streaming read of {mib} (the read limit, for scale)",
        [Contender("C read", lambda _: floor.read(x, 2), lambda: None, FLOOR, note="C: read every byte once")],
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
    """get_backward_pass on a chain and a fan-out of N operators, with the garbage collector as a user has it.

    Linearity is measured in the same run: N operators against N/1,000 runs
    of 1,000 operators (per-operator cost at N against at 1,000).
    """
    _register_bench_gradient()
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    for shape, build in (("chain", _chain), ("fan-out", _fan_out)):
        small_ops, small_ys = build(1_000)
        for n in sizes:
            ops, ys = build(n)
            contenders = [
                Contender("caffe2op", lambda _, ops=ops, ys=ys: caffe2op.get_backward_pass(ops, ys), lambda: None, OURS)
            ]
            targets = []
            if n > 1_000:
                runs = n // 1_000
                contenders.append(
                    Contender(
                        f"{runs} x 1,000 operators",
                        lambda _, runs=runs, ops=small_ops, ys=small_ys: [
                            caffe2op.get_backward_pass(ops, ys) for _ in range(runs)
                        ],
                        lambda: None,
                        PEER,
                        note="linear scaling gives the same time as N operators",
                    )
                )
                targets.append(Target(f"{runs} x 1,000 operators", 1.2, kind="within"))
            if n == 100_000:
                targets.append(Target(None, 2.0, kind="max_time"))
            yield Case(
                "Backward pass",
                f"{shape} of {n:,} operators, gc enabled",
                contenders,
                threads=1,
                series=f"operators ({shape})",
                x=n,
                targets=targets,
                keep_gc=True,
                params=dict(operators=n, shape=shape, gc="enabled"),
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
        **tolerance(table.dtype),
        targets=[Target("numpy", 1.0, ours="caffe2op OpenCL")],
        params=dict(device=info.name, dtype=str(table.dtype)),
    )


# --- Normalize ---------------------------------------------------------------------


def _copy_limit(values):
    """The C copy of ``values`` into an existing array: one read and one write of every value, a Normalize's least."""
    out = np.empty_like(values)
    return Contender(
        "C copy",
        lambda _: floor.copy(out, values, 2),
        lambda: None,
        FLOOR,
        result=lambda *_: out,
        expected=lambda: values,
        note="C: memcpy of the values into an existing array (one read, one write: the least a Normalize moves)",
    )


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
                    Contender(
                        NUMBA,
                        lambda _, d=dense, a=axis: peers.numba_normalize(d, a, 2),
                        lambda: None,
                        PEER,
                        note="@njit(parallel=True, fastmath=True): axis 1 a prange over rows; axis 0 column sums "
                        "over blocks of 64 columns, then a prange over rows; new output",
                    ),
                    _copy_limit(dense),
                ],
                reference=lambda d=dense, a=axis: peers.numpy_normalize(d.astype(np.float64), a),
                series=f"side (axis {axis})",
                x=side,
                targets=[Target("numpy", 2.0), Target(NUMBA, 1.3)] if headline else [],
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
                ]
                + (
                    [
                        Contender(
                            NUMBA,
                            lambda _, m=matrix, a=axis: peers.numba_csr_normalize(m, a, 2),
                            lambda: None,
                            PEER,
                            note="@njit(parallel=True, fastmath=True) on CSR data: axis 1 a prange over rows; "
                            "axis 0 a serial scatter-add of column sums, then a prange scale",
                        )
                    ]
                    if name == "CSR"
                    else []
                )
                + [_copy_limit(matrix.data)],
                reference=lambda m=matrix, a=axis: _normalize_sparse_reference(m, a),
                targets=(
                    ([Target("sklearn.preprocessing.normalize", 2.0)] if axis == 0 else []) + [Target(NUMBA, 1.3)]
                    if name == "CSR"
                    else []
                ),
                params=dict(format=name, shape=[100_000, 1_000], density=0.01, axis=axis),
            )
