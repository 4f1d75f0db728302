# SPDX-License-Identifier: BSD-3-Clause
"""Normalize's split launches for a few very long vectors (issue 16 item 9, normalize_long.cl).

On GPU launch shapes a few long vectors along the last axis are each split
over many work-groups (2,048 chains, then a team per vector, then a
grid-wide scale).  They must give exactly the bits of the team kernel (CPU
and GPU launch shapes) in both accumulation modes: lengths around 2,048 x 8
elements (every slot busy), a long odd length, 1 to 4 vectors, offset views,
in place and out of place, max-norm rows at, below and above the norm, the
rescue (1e200 and 1e-200 float64 rows, a 3e25 value among ordinary float32
values), NaN and inf, and NormalizeGradient (also against the CPU path).
``CAFFE2OP_OPENCL_LIMITS=long_vectors=1`` forces the split for every length.
"""

import dataclasses

import numpy as np
import pytest

import caffe2op
from caffe2op.devices import backend_for
from caffe2op.ops.normalize import dense_opencl as dense_opencl_module
from caffe2op.ops.normalize import long_opencl as long_opencl_module

from .._helpers import assert_allclose_dtype
from ._device_helpers import assert_gradient_close, emulated_limits, skip_unless_accumulation_supported

CHUNKED = 2048 * 8  # the length from which all 2,048 chains of a vector hold elements
LENGTHS = [CHUNKED - 1, CHUNKED, CHUNKED + 1, CHUNKED * 3 + 5, 100_003]
SPLIT = "long_vectors=1"
# Per accumulation: the team kernel on the CPU and GPU launch shapes, then the split launches
# (also with small work-groups and little local memory: teams of 64 and 32 items in launch 2).
LIMIT_SETS = {
    "double": [
        "shape=cpu",
        "shape=gpu",
        f"shape=gpu,{SPLIT}",
        f"shape=gpu,work_group=64,{SPLIT}",
        f"shape=gpu,local_mem=2048,{SPLIT}",
    ],
    "compensated": [
        "shape=cpu,fast_fp64=0",
        "shape=gpu,fast_fp64=0",
        f"shape=gpu,fast_fp64=0,{SPLIT}",
        f"shape=gpu,fast_fp64=0,work_group=64,{SPLIT}",
        f"shape=gpu,fast_fp64=0,local_mem=2048,{SPLIT}",
    ],
}


def _plain_inputs(dtype):
    """(x, dy) per length, 1 to 4 vectors of varied magnitude."""
    rng = np.random.default_rng(9)
    for i, n in enumerate(LENGTHS):
        rows = i % 4 + 1
        x = rng.standard_normal((rows, n)) * rng.choice([0.01, 1.0, 30.0], (rows, 1))
        yield x.astype(dtype), rng.standard_normal((rows, n)).astype(dtype)


def _special_inputs(dtype):
    """Rows of CHUNKED + 3 elements: max-norm at (3-4-5), below and above 5; the rescue; NaN; inf."""
    n = CHUNKED + 3
    rng = np.random.default_rng(10)
    rows = []
    at = np.zeros(n)
    at[0], at[-1] = 3.0, 4.0  # norm exactly 5
    below = rng.standard_normal(n)
    above = below * (9.0 / np.linalg.norm(below))
    below *= 2.0 / np.linalg.norm(below)
    rows += [at, below, above]
    if dtype == np.float64:
        rows += [rng.standard_normal(n) * 1e200, rng.standard_normal(n) * 1e-200]
    if dtype != np.float16:
        big = rng.standard_normal(n)
        big[n // 3] = 3e25  # its square overflows float: the compensated sum needs the rescue
        rows.append(big)
    nan = rng.standard_normal(n)
    nan[n // 2] = np.nan
    inf = rng.standard_normal(n)
    inf[7] = np.inf
    rows += [nan, inf]
    x = np.stack(rows).astype(dtype)
    return x, rng.standard_normal(x.shape).astype(dtype)


def _offset_view(backend, host):
    """``host`` on the device as a view starting one element into its buffer (odd: unaligned)."""
    flat = backend.from_host(np.concatenate([np.zeros(1, host.dtype), host.ravel()]))
    view = flat[1:].reshape(host.shape)
    assert view.offset == host.dtype.itemsize
    return view


def _battery(device, dtype):
    """[(label, result, x, dy, op, norm, use_max_norm)] of every input, view and operation."""
    backend = backend_for(device)
    results = []
    inputs = [*_plain_inputs(dtype), _special_inputs(dtype)]
    for x, dy in inputs:
        for view in ("aligned", "offset"):
            if view == "aligned":
                xd, dyd = backend.from_host(x), backend.from_host(dy)
            else:
                xd, dyd = _offset_view(backend, x), _offset_view(backend, dy)
            label = (x.shape, view)
            for norm, use_max_norm in [(1.0, False), (5.0, True)]:
                y = caffe2op.normalize(xd, axis=1, norm=norm, use_max_norm=use_max_norm).get()
                results.append((label + ("forward", norm), y, x, dy, "y", norm, use_max_norm))
                inplace = xd.copy() if view == "aligned" else _offset_view(backend, x)
                caffe2op.normalize(inplace, axis=1, norm=norm, use_max_norm=use_max_norm, out=inplace)
                results.append((label + ("in place", norm), inplace.get(), x, dy, "y", norm, use_max_norm))
            dx = dense_opencl_module.normalize_gradient_opencl("G", xd, dyd, 1).get()
            results.append((label + ("gradient",), dx, x, dy, "dx", 1.0, False))
            into_dy = dyd.copy()
            dense_opencl_module.normalize_gradient_opencl("G", xd, into_dy, 1, out=into_dy)
            results.append((label + ("gradient into dy",), into_dy.get(), x, dy, "dx", 1.0, False))
    return results


def _check_against_cpu(results):
    """Each result within its dtype's tolerance of the CPU path (NaN and inf where the CPU has them)."""
    for label, got, x, dy, what, norm, use_max_norm in results:
        if what == "dx":
            assert_gradient_close(got, x, dy, 1)
            continue
        want = caffe2op.normalize(x, axis=1, norm=norm, use_max_norm=use_max_norm).astype(np.float64)
        scale = np.max(np.abs(np.where(np.isfinite(want), want, 0)), axis=1, keepdims=True)
        scale = np.where(scale > 0, scale, 1.0)
        tol = {np.float16: 4e-3, np.float32: 2e-6, np.float64: 1e-13}[x.dtype.type]
        try:
            assert_allclose_dtype(got.astype(np.float64) / scale, want / scale, np.float64, rtol=0, atol=tol)
        except AssertionError as err:
            raise AssertionError(f"{label}: {err}") from None


def _assert_same_bits(got, want, message):
    """The same bytes, but for the sign and payload of NaNs.

    Which operand's NaN an operation passes on (and the sign of a NaN made
    by inf / inf) depends on the instructions the compiler picks: the team
    kernel itself gives NaNs of either sign on the CPU and GPU launch shapes
    (vector and scalar code), and so does the split.  Every other bit must
    agree.
    """
    nan = np.isnan(got.astype(np.float64))
    assert np.array_equal(nan, np.isnan(want.astype(np.float64))), message
    assert got[~nan].tobytes() == want[~nan].tobytes(), message


class _SplitCounter:
    """Counts the calls of long_opencl.enqueue_long (the split launches) while installed."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = long_opencl_module.enqueue_long

        def counting(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(long_opencl_module, "enqueue_long", counting)


@pytest.mark.parametrize("accumulation", sorted(LIMIT_SETS))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_split_gives_the_team_kernels_bits(opencl_device, accumulation, dtype, monkeypatch):
    counter = _SplitCounter(monkeypatch)
    reference = None
    for limits in LIMIT_SETS[accumulation]:
        before = counter.calls
        with emulated_limits(limits):
            skip_unless_accumulation_supported(opencl_device, dtype, accumulation)
            results = _battery(opencl_device, dtype)
        split = SPLIT in limits
        # Every forward and backward call splits under the forced limit, none otherwise.
        assert counter.calls - before == (len(results) if split else 0), limits
        if reference is None:
            reference = (limits, results)
            _check_against_cpu(results)
        for (label, got, *_), (_, want, *_) in zip(results, reference[1], strict=True):
            _assert_same_bits(got, want, f"{limits!r} differs from {reference[0]!r} at {label}")


def test_cpu_shape_never_splits(opencl_device, monkeypatch):
    counter = _SplitCounter(monkeypatch)
    x = np.random.default_rng(1).standard_normal((2, CHUNKED + 1)).astype(np.float32)
    with emulated_limits(f"shape=cpu,{SPLIT}"):
        backend = backend_for(opencl_device)
        y = caffe2op.normalize(backend.from_host(x), axis=1).get()
    assert counter.calls == 0
    assert_allclose_dtype(y, x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True))


def _info(**changes):
    base = caffe2op.OpenCLDeviceInfo(
        index=0, cuda_index=None, platform="p", name="gpu", vendor="v", version="OpenCL 3.0", driver_version="1",
        fp64=True, fp16=False, global_mem_bytes=1 << 34, max_alloc_bytes=1 << 32, compute_units=132,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("info", "n", "n_vectors", "expected"),
    [
        (_info(), 10_000_000, 8, True),  # (8, 10M): 8 work-groups on 132 compute units
        (_info(), 1 << 18, 263, True),
        (_info(), 1 << 18, 264, False),  # the team launch fills 2 work-groups per compute unit
        (_info(), (1 << 18) - 1, 8, False),  # too short to pay for two more launches
        (_info(compute_units=4), 10_000_000, 8, False),
        (_info(long_vectors=1), 1, 1000, True),  # forced
        (_info(long_vectors=1000), 999, 1, False),
        (_info(long_vectors=1), 1 << 20, 1025, False),  # the scratch buffer's bound
    ],
)
def test_when_the_split_runs(info, n, n_vectors, expected):
    assert long_opencl_module.use_split(info, n, n_vectors) is expected


def test_long_vectors_limit_needs_a_positive_length():
    from caffe2op.opencl import devices

    assert devices._parse_limits("shape=gpu,long_vectors=16384") == {"shape": "gpu", "long_vectors": 16384}
    with pytest.raises(ValueError, match="positive integer"):
        devices._parse_limits("long_vectors=0")


def test_scratch_is_reused_and_grows(opencl_device):
    """One scratch buffer per queue: kept for smaller calls, replaced by a larger one when needed."""
    rng = np.random.default_rng(4)
    with emulated_limits(f"shape=gpu,{SPLIT}"):
        backend = backend_for(opencl_device)
        queue = backend.queue
        results = []
        buffers = []
        for rows in (2, 1, 4):
            x = rng.standard_normal((rows, 3000)).astype(np.float32)
            results.append((x, caffe2op.normalize(backend.from_host(x), axis=1)))
            with long_opencl_module._SCRATCH.lock:
                buffers.append(long_opencl_module._SCRATCH.entry(queue, buffer=0).buffer)
        for x, y in results:  # read only now: the calls were queued back to back on one scratch buffer
            assert_allclose_dtype(y.get(), x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True))
    assert buffers[0] is buffers[1]
    assert buffers[2] is not buffers[1]


def test_small_split_forward_and_gradient(opencl_device, monkeypatch):
    """A cheap split case (two odd rows of an offset view, every operation), also run on Oclgrind (.ci/oclgrind)."""
    counter = _SplitCounter(monkeypatch)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2051)).astype(np.float32)
    dy = rng.standard_normal((2, 2051)).astype(np.float32)
    x[0] *= 0.3  # norm ~14: under the max norm 30; row 1 (~45) above it
    with emulated_limits(f"shape=gpu,{SPLIT}"):
        backend = backend_for(opencl_device)
        xd, dyd = _offset_view(backend, x), _offset_view(backend, dy)
        y = caffe2op.normalize(xd, axis=1, norm=30.0, use_max_norm=True).get()
        inplace = _offset_view(backend, x)
        caffe2op.normalize(inplace, axis=1, norm=30.0, use_max_norm=True, out=inplace)
        dx = dense_opencl_module.normalize_gradient_opencl("G", xd, dyd, 1).get()
    assert counter.calls == 3
    want = caffe2op.normalize(x, axis=1, norm=30.0, use_max_norm=True)
    assert_allclose_dtype(y, want)
    np.testing.assert_array_equal(y[0], x[0])  # under the max norm: kept as it is
    assert inplace.get().tobytes() == y.tobytes()
    assert_gradient_close(dx, x, dy, 1)


@pytest.mark.parametrize(("limits", "team"), [("", 256), ("work_group=64", 64), ("local_mem=2048", 32)])
def test_launch_two_teams_follow_the_limits(opencl_device, monkeypatch, limits, team):
    """Launch 2's team shrinks under a smaller work-group or local memory (the limit sets above run those)."""
    seen = []
    real = long_opencl_module._factors_kernel

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        seen.append(result[-1])
        return result

    monkeypatch.setattr(long_opencl_module, "_factors_kernel", spy)
    x = np.random.default_rng(6).standard_normal((1, 3000)).astype(np.float32)
    own = backend_for(opencl_device).info.max_work_group_size
    if own and own < 256:
        pytest.skip(f"the device's work-groups hold at most {own} items")
    with emulated_limits(",".join(filter(None, ["shape=gpu", SPLIT, limits]))):
        backend = backend_for(opencl_device)
        y = caffe2op.normalize(backend.from_host(x), axis=1).get()
    # local_mem=2048: 2048 bytes / 64 per item (8 doubles, or 8 compensated float pairs) = 32 items
    assert seen == [team]
    assert_allclose_dtype(y, x / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True))
