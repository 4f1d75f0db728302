# SPDX-License-Identifier: BSD-3-Clause
"""Normalize along every axis but the last on OpenCL devices: long columns (issue 16 item 9).

Columns of more than 16 blocks of rows (65,536 rows; the test-only limits
key ``long_column_block`` lowers the block) are summed block by block on
many work-groups and reduced in a second deterministic pass
(``opencl_kernels/normalize_long_columns.cl``): the float64 bits are that
order's, the same under every emulated limit set and launch shape, and
equal to the CPU path within the usual tolerances, forward and backward.
"""

import numpy as np
import pytest

import caffe2op
from caffe2op.devices import backend_for
from caffe2op.ops.normalize import dense_opencl, long_columns_opencl

from .._helpers import assert_allclose_dtype
from ._device_helpers import NORMALIZE_LIMIT_GROUPS, assert_gradient_close, emulated_limits, set_emulated_limits
from .test_normalize_columns import _canonical_column_sum

SMALL_BLOCK = 64  # long_column_block for the small batteries: threshold 1,024 rows
RESCUE = {np.float64: (1e200, 1e-200), np.float32: (3e25, 3e-25), np.float16: (6e4, 6e-8)}


def _two_sum(a, b):
    s = a + b
    v = s - a
    return s, (a - (s - v)) + (b - v)


def _two_product(a, b):
    """(p, e) with p + e == a * b exactly (Dekker's split; no overflow in the tests' magnitudes)."""

    def split(v):
        c = 134217729.0 * v
        hi = c - (c - v)
        return hi, v - hi

    p = a * b
    ah, al = split(a)
    bh, bl = split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _fma(a, b, c):
    """a * b + c rounded once, elementwise (Boldo and Melquiond's sum of three with a round-to-odd step)."""
    p, e = _two_product(a, b)
    uh, ul = _two_sum(e, c)
    th, tl = _two_sum(p, uh)
    v, err = _two_sum(tl, ul)
    even = (v.view(np.int64) & 1) == 0
    inexact = err != 0
    v = np.where(inexact & even, np.nextafter(v, np.where(err > 0, np.inf, -np.inf)), v)
    return th + v


def _long_order_sums(x, block, y=None, fused=False):
    """The long-column order in float64, for every column of the 2-D ``x`` at once.

    Rows in blocks of ``block``: partial r of block b adds its rows k = r (mod 8)
    in increasing k; lane by lane, block b into slot b mod 32 (increasing b),
    the interleaved tree over the slots; then the 8 lanes' halving tree.  With
    ``y``, the sums of x * y instead of x * x; ``fused``: each product added
    by a fused multiply-add (as compilers may contract it).
    """
    y = x if y is None else y
    n, width = x.shape
    nb = -(-n // block)
    padded_x, padded_y = np.zeros((2, nb * block, width))
    padded_x[:n], padded_y[:n] = x, y  # the zero padding adds nothing
    steps_x = padded_x.reshape(nb, block // 8, 8, width)
    steps_y = padded_y.reshape(nb, block // 8, 8, width)
    partials = np.zeros((nb, 8, width))
    for step in range(block // 8):
        a, b = steps_x[:, step], steps_y[:, step]
        partials = _fma(a, b, partials) if fused else partials + a * b
    slots = min(nb, 32)
    slot = [partials[j].copy() for j in range(slots)]
    for j in range(slots):
        for b in range(j + 32, nb, 32):
            slot[j] = slot[j] + partials[b]
    half = 16
    while half >= 1:
        for g in range(half):
            if g + half < slots:
                slot[g] = slot[g] + slot[g + half]
        half //= 2
    p = slot[0]
    return ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]))


def test_threshold_and_block():
    info = caffe2op.opencl_devices()[0] if caffe2op.opencl_devices() else None
    if info is None:
        pytest.skip("no OpenCL device")
    assert long_columns_opencl.long_column_threshold(info) == 16 * long_columns_opencl.long_column_block(info)
    with pytest.raises(ValueError, match="long_column_block needs a multiple of 8"):
        from caffe2op.opencl import devices

        devices._parse_limits("long_column_block=12")


@pytest.mark.parametrize(
    "limits_text, n",
    [
        ("", 65537),
        ("shape=gpu", 4096 * 35 + 100),
        ("shape=gpu,work_group=64", 65537),
        (f"long_column_block={SMALL_BLOCK}", 1025),
        (f"long_column_block={SMALL_BLOCK},shape=gpu,work_group=64", SMALL_BLOCK * 70 + 13),
        (f"long_column_block={SMALL_BLOCK},shape=cpu", SMALL_BLOCK * 33),
    ],
)
def test_float64_bits_are_the_long_order(opencl_device, restore_limits, limits_text, n):
    """float64 columns above the threshold give exactly the order above (forward and the backward's sums)."""
    set_emulated_limits(limits_text)
    backend = backend_for(opencl_device)
    if not backend.info.fp64:
        pytest.skip("device without fp64")
    block = long_columns_opencl.long_column_block(backend.info)
    assert n > long_columns_opencl.long_column_threshold(backend.info)
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 5)) * np.exp(rng.uniform(-5, 5, (n, 5)))
    y = caffe2op.normalize(backend.from_host(x), axis=0).get()
    dy = rng.standard_normal((n, 5))
    dx = dense_opencl.normalize_gradient_opencl("G", backend.from_host(x), backend.from_host(dy), 0).get()
    matches = []
    for fused in (False, True):  # with or without a fused multiply-add per product
        sums = _long_order_sums(x, block, fused=fused)
        norms = np.maximum(np.sqrt(sums), 1e-12)
        a = 1.0 / norms
        b = _long_order_sums(x, block, dy, fused=fused) / (norms * norms * norms)
        # dx = dy a - x b, maybe contracted either way
        a_full, b_full = np.broadcast_to(a, dy.shape), np.broadcast_to(b, x.shape)
        candidates = [dy * a - x * b, _fma(dy, a_full, -(x * b)), _fma(-x, b_full, dy * a)]
        matches.append((x * a).tobytes() == y.tobytes() and any(c.tobytes() == dx.tobytes() for c in candidates))
    assert any(matches)


@pytest.mark.parametrize("limits_text", ["", f"long_column_block={SMALL_BLOCK}"])
def test_columns_at_the_threshold_keep_the_short_order(opencl_device, restore_limits, limits_text):
    set_emulated_limits(limits_text)
    backend = backend_for(opencl_device)
    if not backend.info.fp64:
        pytest.skip("device without fp64")
    n = long_columns_opencl.long_column_threshold(backend.info)
    x = np.random.default_rng(3).standard_normal((n, 3))
    y = caffe2op.normalize(backend.from_host(x), axis=0).get()
    matches = []
    for fused in (False, True):
        sums = np.array([_canonical_column_sum(x[:, j], fused) for j in range(3)])
        matches.append((x * (1.0 / np.maximum(np.sqrt(sums), 1e-12))).tobytes() == y.tobytes())
    assert any(matches)


def _cases(dtype, n_small):
    """(name, x, dy, axis): long columns of odd widths, a 3-D middle axis, max-norm edges, rescue, NaN and inf."""
    rng = np.random.default_rng(9)
    for n, inner in [(n_small, 2), (n_small + 1, 7), (n_small * 3 + 5, 33), (n_small + 40, 70)]:
        x = rng.standard_normal((n, inner)) * rng.choice([0.01, 1.0, 30.0], (1, inner))
        x[:, 0] = 0.0  # an all-zero column
        yield f"({n}, {inner}) axis 0", x, rng.standard_normal((n, inner)), 0
    shape = (3, n_small + 9, 5)
    yield f"{shape} axis 1", rng.standard_normal(shape), rng.standard_normal(shape), 1
    x = rng.standard_normal((n_small + 3, 9)) * 1e-3
    x[:, 1] = 0.0
    x[7, 1] = 1.5  # norm exactly 1.5: kept under max-norm 1.5
    x[:, 2] = 0.0
    x[7, 2] = 1.4  # below
    x[:, 3] = 0.0
    x[7, 3] = 1.6  # above
    big, small = RESCUE[dtype]
    x[:, 4] = big * rng.uniform(0.5, 1.0, x.shape[0])
    x[:, 5] = small * rng.uniform(0.5, 1.0, x.shape[0])
    x[5, 6] = big  # one huge value among ordinary ones
    x[9, 7] = np.nan
    x[11, 8] = np.inf
    yield "edges", x, rng.standard_normal(x.shape), 0


def _battery(device, dtype, n_small):
    """Every result as bytes, in a fixed order; each checked against the CPU path on the way."""
    backend = backend_for(device)
    results = []
    for name, x, dy, axis in _cases(dtype, n_small):
        x, dy = x.astype(dtype), dy.astype(dtype)
        with np.errstate(all="ignore"):
            for norm, use_max_norm in [(1.0, False), (1.5, True)]:
                y = caffe2op.normalize(backend.from_host(x), axis=axis, norm=norm, use_max_norm=use_max_norm).get()
                expected = caffe2op.normalize(x, axis=axis, norm=norm, use_max_norm=use_max_norm)
                assert_allclose_dtype(y, expected, err_msg=name)
                results.append(y.tobytes())
        if name == "edges" and dtype != np.float16:
            assert y[:, 1].tobytes() == x[:, 1].tobytes(), "a column at max-norm was rescaled"
        # In place, and views at unaligned element offsets read and written in place.
        d = backend.from_host(x)
        assert caffe2op.normalize(d, axis=axis, out=d, norm=1.5, use_max_norm=True) is d
        assert d.get().tobytes() == results[-1], name
        flat = backend.from_host(np.concatenate([np.zeros(3, dtype), x.ravel()]))
        view = flat[3:].reshape(x.shape)
        caffe2op.normalize(view, axis=axis, out=view)
        assert flat.get()[3:].tobytes() == results[-2], name
        if name == "edges":
            continue  # NaN and inf: the gradient's reference comparison needs finite data
        dx = dense_opencl.normalize_gradient_opencl("G", backend.from_host(x), backend.from_host(dy), axis).get()
        assert_gradient_close(dx, x, dy, axis)
        results.append(dx.tobytes())
        flat_x = backend.from_host(np.concatenate([np.zeros(1, dtype), x.ravel()]))[1:].reshape(x.shape)
        flat_dy = backend.from_host(np.concatenate([np.zeros(2, dtype), dy.ravel()]))[2:].reshape(x.shape)
        assert dense_opencl.normalize_gradient_opencl("G", flat_x, flat_dy, axis).get().tobytes() == results[-1]
    return results


def _same_bits(device, accumulation, dtype, extra, n_small):
    """The battery under every limit set of one accumulation (with ``extra`` limits): the same bits."""
    reference = None
    for limits in NORMALIZE_LIMIT_GROUPS[accumulation]:
        with emulated_limits(",".join(filter(None, [limits, extra]))):
            info = backend_for(device).info
            if dtype == np.float64 and not info.fp64:
                pytest.skip("device without fp64")
            if accumulation == "double" and not info.fast_fp64 and dtype != np.float64:
                pytest.skip("this device sums float32 in compensated float")
            assert n_small > long_columns_opencl.long_column_threshold(info)
            results = _battery(device, dtype, n_small)
        if reference is None:
            reference = (limits, results)
            continue
        differing = [i for i, (a, b) in enumerate(zip(reference[1], results, strict=True)) if a != b]
        assert not differing, f"{limits!r} differs from {reference[0]!r} in results {differing}"


@pytest.mark.parametrize("accumulation", sorted(NORMALIZE_LIMIT_GROUPS))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_same_bits_on_every_shape_and_limit_set(opencl_device, accumulation, dtype):
    """Small blocks (64 rows): many blocks, slots of several blocks, short last blocks."""
    _same_bits(opencl_device, accumulation, dtype, f"long_column_block={SMALL_BLOCK}", 16 * SMALL_BLOCK + 1)


@pytest.mark.parametrize("accumulation", sorted(NORMALIZE_LIMIT_GROUPS))
def test_same_bits_with_the_real_block(opencl_device, accumulation):
    """The production block (4,096 rows) on one small battery of float32 (a few MB per case)."""
    reference = None
    rng = np.random.default_rng(1)
    x = rng.standard_normal((65537 + 4096 * 2 + 17, 3)).astype(np.float32)
    x[100, 2] = 3e25  # rescued in compensated mode
    dy = rng.standard_normal(x.shape).astype(np.float32)
    for limits in NORMALIZE_LIMIT_GROUPS[accumulation]:
        with emulated_limits(limits):
            backend = backend_for(opencl_device)
            if accumulation == "double" and not backend.info.fast_fp64:
                pytest.skip("this device sums float32 in compensated float")
            y = caffe2op.normalize(backend.from_host(x), axis=0).get()
            assert_allclose_dtype(y, caffe2op.normalize(x, axis=0))
            dx = dense_opencl.normalize_gradient_opencl("G", backend.from_host(x), backend.from_host(dy), 0).get()
            assert_gradient_close(dx, x, dy, 0)
            results = [y.tobytes(), dx.tobytes()]
        reference = reference or (limits, results)
        assert results == reference[1], f"{limits!r} differs from {reference[0]!r}"


def test_scratch_is_reused(opencl_device, restore_limits):
    """Calls on one queue share one scratch buffer (no per-call allocation once it is large enough)."""
    set_emulated_limits(f"long_column_block={SMALL_BLOCK}")
    backend = backend_for(opencl_device)
    x = backend.from_host(np.ones((2000, 4), np.float32))
    caffe2op.normalize(x, axis=0).get()
    entry = long_columns_opencl._SCRATCH.entry(x.queue, buffer=1)
    buffer = entry.buffer
    for _ in range(3):
        caffe2op.normalize(x, axis=0, out=x)
    x.get()
    assert long_columns_opencl._SCRATCH.entry(x.queue, buffer=1).buffer is buffer
    np.testing.assert_allclose(x.get(), np.full((2000, 4), 1 / np.sqrt(2000), np.float32), rtol=1e-6)


@pytest.mark.parametrize("shape_text", ["shape=gpu", "shape=cpu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiny_blocks(opencl_device, restore_limits, shape_text, dtype):
    """Blocks of 8 rows on tiny arrays: every pass and both pass-3 kernels, forward, in place and backward.

    Small on purpose: ``.ci/oclgrind`` runs it (blocks beyond the 32 slots, a short last block,
    a 3-D middle axis, a rescued column, views at odd offsets, work-groups of 1,024 items).
    """
    set_emulated_limits(f"{shape_text},long_column_block=8")
    backend = backend_for(opencl_device)
    if dtype == np.float64 and not backend.info.fp64:
        pytest.skip("device without fp64")
    rng = np.random.default_rng(2)
    cases = [(rng.standard_normal((8 * 40 + 3, 11)), 0), (rng.standard_normal((2, 8 * 17 + 1, 3)), 1)]
    cases[0][0][:, 3] = RESCUE[dtype][0] * rng.uniform(0.5, 1.0, cases[0][0].shape[0])
    for x, axis in cases:
        x = x.astype(dtype)
        dy = np.cos(x).astype(dtype)
        assert x.shape[axis] > long_columns_opencl.long_column_threshold(backend.info)
        y = caffe2op.normalize(backend.from_host(x), axis=axis, use_max_norm=True, norm=1.5).get()
        assert_allclose_dtype(y, caffe2op.normalize(x, axis=axis, use_max_norm=True, norm=1.5))
        flat = backend.from_host(np.concatenate([np.zeros(3, dtype), x.ravel()]))
        view = flat[3:].reshape(x.shape)
        caffe2op.normalize(view, axis=axis, out=view, use_max_norm=True, norm=1.5)
        assert flat.get()[3:].tobytes() == y.tobytes()
        dx = dense_opencl.normalize_gradient_opencl("G", backend.from_host(x), backend.from_host(dy), axis).get()
        assert_gradient_close(dx, x, dy, axis)
