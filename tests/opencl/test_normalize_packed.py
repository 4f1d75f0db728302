# SPDX-License-Identifier: BSD-3-Clause
"""Normalize's team launch shapes (issue 16 item 9): several vectors per work-group, one item per short vector.

The work-group kernels (dense last axis, sparse CSR/CSC segments) run teams
of P work items per vector, 256 / P vectors per work-group on GPU launch
shapes, and a single work item per vector under 64 elements.  Every shape
must give the bits of every other (the canonical order of
normalize_common.h) and match the float64 reference: lengths around the
chunk, slot and round sizes, aligned and unaligned (offset) views, in place
and out of place, overflowing and underflowing vectors (the rescue),
NormalizeGradient, and sparse matrices whose segment lengths vary (empty
segments, one long segment among short ones, int32 and int64 indices).
"""

import numpy as np
import pytest

import caffe2op
from caffe2op.devices import backend_for
from caffe2op.ops.normalize import dense_opencl as dense_opencl_module
from caffe2op.ops.normalize import sparse_opencl as sparse_opencl_module
from caffe2op.ops.normalize.dense import normalize_gradient_dense

from .._helpers import assert_allclose_dtype
from ._device_helpers import NORMALIZE_LIMIT_GROUPS, emulated_limits, skip_unless_accumulation_supported

sp = pytest.importorskip("scipy.sparse")

LENGTHS = [1, 3, 7, 8, 63, 64, 65, 1000, 2049]
# Magnitudes whose sums of squares leave the accumulator's safe range (the rescue); float16 values
# (at most 65504, summed in float or double) never need it.
HUGE = {np.float16: 1.0, np.float32: 1.0e30, np.float64: 1.0e200}
TINY = {np.float16: 1.0, np.float32: 1.0e-30, np.float64: 1.0e-200}


def _reference(x, dy, norm, use_max_norm):
    """(y, dx) in float64 for rows x, each norm measured on the row divided by its largest magnitude
    (so that 1e200 and 1e-200 rows neither overflow nor underflow)."""
    x = x.astype(np.float64)
    dy = dy.astype(np.float64)
    amax = np.abs(x).max(axis=-1, keepdims=True)
    amax = np.where(amax > 0, amax, 1.0)
    n = np.sqrt(((x / amax) ** 2).sum(axis=-1, keepdims=True)) * amax
    y = x * (norm / np.maximum(n, 1e-12))
    if use_max_norm:
        y = np.where(n <= norm, x, y)
    n = np.maximum(n, 1e-12)
    xn = x / n
    dot = (xn * dy).sum(axis=-1, keepdims=True)
    dx = dy / n - xn * dot / n
    # The size of dx's two terms: its rounding errors scale with them, not with dx (which cancels).
    dx_size = (np.abs(dy).max(axis=-1, keepdims=True) + np.abs(xn).max(axis=-1, keepdims=True) * np.abs(dot)) / n
    return y, dx, dx_size


def _dense_inputs(dtype, rescue):
    rng = np.random.default_rng(16)
    for n in LENGTHS:
        rows = 5 if n < 1500 else 3
        x = rng.standard_normal((rows + 1, n)) * rng.choice([0.01, 1.0, 30.0], (rows + 1, 1))
        if rescue:
            x[1] *= HUGE[dtype]
            x[2] *= TINY[dtype]
        if n > 1:
            x[-1, n // 2] = 0.0
        yield x.astype(dtype), rng.standard_normal((rows + 1, n)).astype(dtype)


def _dense_battery(device, dtype, rescue):
    """[(label, host result, x, dy, norm, use_max_norm, op)] for every length, view and operation."""
    backend = backend_for(device)
    results = []
    for x, dy in _dense_inputs(dtype, rescue):
        for view in ("aligned", "offset"):
            xd, dyd = backend.from_host(x), backend.from_host(dy)
            xh, dyh = x, dy
            if view == "offset":  # starts one row in: unaligned for every length not a multiple of 8
                xd, dyd, xh, dyh = xd[1:], dyd[1:], x[1:], dy[1:]
            label = (x.shape[1], view)
            for norm, use_max_norm in [(1.0, False), (1.5, True)]:
                y = caffe2op.normalize(xd, axis=1, norm=norm, use_max_norm=use_max_norm).get()
                results.append((label + ("forward", norm), y, xh, dyh, norm, use_max_norm, "y"))
            inplace = xd.copy()
            caffe2op.normalize(inplace, axis=1, out=inplace)
            results.append((label + ("in place",), inplace.get(), xh, dyh, 1.0, False, "y"))
            dx = dense_opencl_module.normalize_gradient_opencl("G", xd, dyd, 1).get()
            results.append((label + ("gradient",), dx, xh, dyh, 1.0, False, "dx"))
    return results


def _check_reference(results, dtype):
    for label, got, x, dy, norm, use_max_norm, what in results:
        y_ref, dx_ref, dx_size = _reference(x, dy, norm, use_max_norm)
        ref = y_ref if what == "y" else dx_ref
        if what == "dx" and dtype == np.float64:
            # float64 gradients are summed in double without rescue, as on the CPU (normalize_common.h):
            # a 1e200 row's dx is 0 there; compare with the CPU kernel.
            ref = normalize_gradient_dense("G", x, dy, 1).astype(np.float64)
        scale = np.abs(ref).max(axis=-1, keepdims=True) if what == "y" else dx_size
        scale = np.where(scale > 0, scale, 1.0)
        try:
            # Relative to each row's largest value (for dx, its terms' size).
            assert_allclose_dtype(got.astype(np.float64) / scale, ref / scale, np.float64, **_tolerance(dtype))
        except AssertionError as err:
            raise AssertionError(f"{label}: {err}") from None


def _tolerance(dtype):
    return {"rtol": 0, "atol": {np.float16: 4e-3, np.float32: 2e-6, np.float64: 1e-13}[dtype]}


@pytest.mark.parametrize("rescue", [False, True], ids=["plain", "rescue"])
@pytest.mark.parametrize("accumulation", sorted(NORMALIZE_LIMIT_GROUPS))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dense_rows_same_bits_on_every_shape(opencl_device, accumulation, dtype, rescue):
    reference = None
    for limits in NORMALIZE_LIMIT_GROUPS[accumulation]:
        with emulated_limits(limits):
            skip_unless_accumulation_supported(opencl_device, dtype, accumulation)
            results = _dense_battery(opencl_device, dtype, rescue)
        if reference is None:
            reference = (limits, results)
            _check_reference(results, dtype)
            continue
        for (label, got, *_), (_, want, *_) in zip(results, reference[1], strict=True):
            assert got.tobytes() == want.tobytes(), f"{limits!r} differs from {reference[0]!r} at {label}"


def _varied_csr(dtype, index_dtype, seed=3):
    """A CSR matrix of 300 rows of 0-19 entries, some empty, one of 3,000 and one of 100 entries."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 20, 300)
    lengths[[5, 6, 200]] = 0
    lengths[17] = 3000
    lengths[40] = 100
    n_cols = 4000
    indices = np.concatenate([np.sort(rng.choice(n_cols, k, replace=False)) for k in lengths])
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    data = rng.standard_normal(indices.shape[0]) * rng.choice([0.01, 1.0, 30.0], indices.shape[0])
    data[indptr[60] : indptr[61]] *= HUGE[dtype]
    data[indptr[61] : indptr[62]] *= TINY[dtype]
    return sp.csr_matrix(
        (data.astype(dtype), indices.astype(index_dtype), indptr.astype(index_dtype)), shape=(300, n_cols)
    )


def _sparse_reference(m, norm, use_max_norm):
    """The stored values of m normalised along its rows, in float64 (rows taken apart by powers of two)."""
    out = np.empty(m.data.shape[0], dtype=np.float64)
    for r in range(m.shape[0]):
        seg = slice(m.indptr[r], m.indptr[r + 1])
        if m.indptr[r] == m.indptr[r + 1]:
            continue
        y, _, _ = _reference(m.data[seg][None, :], np.zeros((1, m.indptr[r + 1] - m.indptr[r])), norm, use_max_norm)
        out[seg] = y[0]
    return out


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("accumulation", sorted(NORMALIZE_LIMIT_GROUPS))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sparse_segments_same_bits_on_every_shape(opencl_device, accumulation, dtype, index_dtype):
    m = _varied_csr(dtype, index_dtype)
    reference = None
    for limits in NORMALIZE_LIMIT_GROUPS[accumulation]:
        with emulated_limits(limits):
            skip_unless_accumulation_supported(opencl_device, dtype, accumulation)
            results = []
            for norm, use_max_norm in [(1.0, False), (1.5, True)]:
                d = caffe2op.DeviceSparseMatrix.from_scipy(m, opencl_device)
                results.append(caffe2op.normalize(d, axis=1, norm=norm, use_max_norm=use_max_norm).data.get())
                caffe2op.normalize(d, axis=1, norm=norm, use_max_norm=use_max_norm, out=d)
                results.append(d.data.get())
        if reference is None:
            reference = (limits, results)
            for i, (norm, use_max_norm) in enumerate([(1.0, False), (1.5, True)]):
                want = _sparse_reference(m, norm, use_max_norm)
                for got in results[2 * i : 2 * i + 2]:
                    assert_allclose_dtype(got.astype(np.float64), want, np.float64, **_tolerance(dtype))
            continue
        for i, (got, want) in enumerate(zip(results, reference[1], strict=True)):
            assert got.tobytes() == want.tobytes(), f"{limits!r} differs from {reference[0]!r} in result {i}"


# --- the launch shapes themselves ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("typical", "longest", "cap", "expected"),
    [
        (1, 1, 256, (1, 1)),
        (63, 63, 256, (1, 8)),  # under 64 elements: one item per vector, its 8 slots in registers
        (64, 64, 256, (8, 1)),  # 32 vectors per 256-item work-group
        (65, 65, 256, (16, 1)),
        (2048, 2048, 256, (256, 1)),
        (10**6, 10**6, 256, (256, 1)),
        (10**6, 10**6, 64, (64, 4)),  # a capped work-group: items hold several slots (rounds of 256 chunks)
        (10**6, 10**6, 32, (32, 8)),
        (10, 3000, 256, (32, 8)),  # one long segment: teams grow until 8 slots per item cover it
        (10, 100, 256, (2, 8)),
        (0, 0, 256, (1, 1)),
    ],
)
def test_team_shape(typical, longest, cap, expected):
    team, slots = dense_opencl_module._team_shape(typical, longest, cap)
    assert (team, slots) == expected
    assert team * slots >= min(-(-max(longest, 1) // 8), 256) or team * slots == 256


def test_gpu_shape_packs_short_rows(opencl_device):
    """GPU shape: a 64-element last axis runs 256-item work-groups of 8-item teams, a 32-element one solo items."""
    seen = []
    real = dense_opencl_module._group_kernel

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        seen.append((result[3], result[5]))
        return result

    with emulated_limits("shape=gpu"), pytest.MonkeyPatch.context() as patch:
        patch.setattr(dense_opencl_module, "_group_kernel", spy)
        patch.setattr(sparse_opencl_module, "_group_kernel", spy)
        backend = backend_for(opencl_device)
        for n in (64, 32):
            caffe2op.normalize(backend.from_host(np.ones((40, n), np.float32)), axis=1)
        m = _varied_csr(np.float32, np.int32)
        caffe2op.normalize(caffe2op.DeviceSparseMatrix.from_scipy(m, opencl_device), axis=1)
    wg = seen[0][0]
    assert wg > 8 and seen[0] == (wg, 8)
    assert seen[1] == (wg, 1)
    assert seen[2][1] > 1 and seen[2][0] == wg


def test_segment_lengths_are_cached(opencl_device):
    m = _varied_csr(np.float32, np.int64)
    d = caffe2op.DeviceSparseMatrix.from_scipy(m, opencl_device)
    typical, longest = sparse_opencl_module._segment_lengths(d)
    lengths = np.diff(m.indptr)
    assert longest == 3000
    assert typical == np.sort(lengths)[(lengths.shape[0] * 9) // 10]
    assert d._cache["segment_lengths"] == (typical, longest)


# --- a small battery for the simulator (.ci/oclgrind runs it under the GPU launch shapes) ---------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_battery_matches_the_cpu(opencl_device, dtype):
    """Forward out of place and in place, the gradient, offset (unaligned) views, packed and solo teams,
    rescued rows, and a CSR matrix with empty and long segments: small enough for Oclgrind."""
    backend = backend_for(opencl_device)
    if np.dtype(dtype) == np.float64 and not backend.info.fp64:
        pytest.skip("device without fp64")
    rng = np.random.default_rng(9)
    for n in (5, 64, 70):
        x = rng.standard_normal((4, n)).astype(dtype)
        x[1] *= HUGE[dtype]
        dy = rng.standard_normal((4, n)).astype(dtype)
        for first in (0, 1):  # row 1 on: unaligned unless n is a multiple of 8
            xd, dyd = backend.from_host(x)[first:], backend.from_host(dy)[first:]
            xh, dyh = x[first:], dy[first:]
            y_ref, _, _ = _reference(xh, dyh, 1.0, False)
            assert_allclose_dtype(caffe2op.normalize(xd, axis=1).get(), y_ref, dtype)
            caffe2op.normalize(xd, axis=1, out=xd)
            assert_allclose_dtype(xd.get(), y_ref, dtype)
            xd = backend.from_host(x)[first:]
            dx = dense_opencl_module.normalize_gradient_opencl("G", xd, dyd, 1).get()
            assert_allclose_dtype(dx, normalize_gradient_dense("G", xh, dyh, 1), dtype, atol=1e-5)
    m = sp.csr_matrix(
        (rng.standard_normal(215).astype(dtype), np.arange(215) % 300, np.array([0, 0, 3, 203, 203, 210, 215])),
        shape=(6, 300),
    )
    got = caffe2op.normalize(caffe2op.DeviceSparseMatrix.from_scipy(m, opencl_device), axis=1).data.get()
    assert_allclose_dtype(got, _sparse_reference(m, 1.0, False), dtype)
