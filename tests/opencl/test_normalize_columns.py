# SPDX-License-Identifier: BSD-3-Clause
"""Normalize along every axis but the last on OpenCL devices: the columns kernels' canonical order.

Issue 16 item 9: a column's sum (of squares; backward also of x * dy) is 8
partials, partial r adding the rows k = r (mod 8) in increasing k, then one
fixed tree (``opencl_kernels/normalize_columns.cl``).  The CPU shape (a work
item per strip of chunks of 8 columns) and the GPU shape (2-D tiles of
adjacent columns x row-slices, with fewer slices or a narrower tile under a
small work-group or local-memory cap) must give the same bits, equal to the
CPU path within the usual tolerances: float16/32/64, double and compensated
accumulation, narrow and wide rows, short and long columns, 3-D middle
axes, in place and out of place, views at unaligned offsets, columns that
need the overflow/underflow rescue, and NormalizeGradient.
"""

import fractions
import os

import numpy as np
import pytest

import caffe2op
from caffe2op.devices import backend_for
from caffe2op.ops.normalize import columns_opencl, dense_opencl

from .._helpers import assert_allclose_dtype
from ._device_helpers import (
    NORMALIZE_LIMIT_GROUPS,
    assert_gradient_close,
    assert_same_bits_under_limit_groups,
    set_emulated_limits,
)

INNERS = [2, 7, 8, 9, 33, 64, 100]
LENGTHS = [1, 3, 8, 9, 1000]
# Magnitudes whose squares overflow or underflow the sums (double sums of float64, float sums of float32).
RESCUE = {np.float64: (1e200, 1e-200), np.float32: (3e25, 3e-25), np.float16: (6e4, 6e-8)}


def _cases(dtype):
    """(name, x, dy, axis): 2-D arrays along axis 0 for every (n, inner), 3-D middle axes, rescue columns."""
    rng = np.random.default_rng(16)
    for n in LENGTHS:
        for inner in INNERS:
            if n == 1000 and inner == 100:
                inner = 65  # keep the battery small
            x = rng.standard_normal((n, inner)) * rng.choice([0.01, 1.0, 30.0], (1, inner))
            x[:, 0] = 0.0  # an all-zero column
            yield f"({n}, {inner}) axis 0", x.astype(dtype), rng.standard_normal((n, inner)).astype(dtype), 0
    for shape in [(3, 9, 33), (2, 1000, 9), (5, 3, 2), (4, 8, 7, 3)]:
        x = rng.standard_normal(shape).astype(dtype)
        yield f"{shape} axis 1", x, rng.standard_normal(shape).astype(dtype), 1
    big, small = RESCUE[dtype]
    x = rng.standard_normal((37, 20))
    x[:, 3] = big * rng.uniform(0.5, 1.0, 37)
    x[:, 4] = small * rng.uniform(0.5, 1.0, 37)
    x[5, 6] = big
    x[:, 7] = 0.0
    x[30, 7] = small
    yield "rescue (37, 20) axis 0", x.astype(dtype), rng.standard_normal((37, 20)).astype(dtype), 0


def _battery(device, dtype):
    """Every result as bytes, in a fixed order; each checked against the CPU path on the way."""
    backend = backend_for(device)
    results = []
    for name, x, dy, axis in _cases(dtype):
        for norm, use_max_norm in [(1.0, False), (1.5, True)]:
            y = caffe2op.normalize(backend.from_host(x), axis=axis, norm=norm, use_max_norm=use_max_norm).get()
            assert_allclose_dtype(y, caffe2op.normalize(x, axis=axis, norm=norm, use_max_norm=use_max_norm))
            results.append(y.tobytes())
        # In place, and a view at an unaligned element offset (3) read and written in place.
        d = backend.from_host(x)
        assert caffe2op.normalize(d, axis=axis, out=d) is d
        results.append(d.get().tobytes())
        assert results[-1] == results[-3], name
        flat = backend.from_host(np.concatenate([np.zeros(3, dtype), x.ravel()]))
        view = flat[3:].reshape(x.shape)
        caffe2op.normalize(view, axis=axis, out=view, use_max_norm=True, norm=1.5)
        assert flat.get()[3:].tobytes() == results[-2], name
        out = backend.from_host(np.concatenate([np.zeros(5, dtype), x.ravel()]))[5:].reshape(x.shape)
        caffe2op.normalize(backend.from_host(x), axis=axis, out=out)
        assert out.get().tobytes() == results[-3], name
        dx = dense_opencl.normalize_gradient_opencl("G", backend.from_host(x), backend.from_host(dy), axis).get()
        assert_gradient_close(dx, x, dy, axis)
        results.append(dx.tobytes())
        flat_x = backend.from_host(np.concatenate([np.zeros(1, dtype), x.ravel()]))[1:].reshape(x.shape)
        flat_dy = backend.from_host(np.concatenate([np.zeros(2, dtype), dy.ravel()]))[2:].reshape(x.shape)
        dx_view = dense_opencl.normalize_gradient_opencl("G", flat_x, flat_dy, axis).get()
        assert dx_view.tobytes() == results[-1], name
    return results


@pytest.mark.parametrize("accumulation", sorted(NORMALIZE_LIMIT_GROUPS))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_same_bits_on_every_shape_and_limit_set(opencl_device, accumulation, dtype):
    assert_same_bits_under_limit_groups(opencl_device, accumulation, dtype, _battery)


def test_launch_shapes_really_differ(opencl_device, restore_limits, monkeypatch):
    """The limit sets above run the strip kernel and tiles of several (tile, slices) shapes."""
    seen = {}
    real = columns_opencl.tile_shape

    def spy(*args, **kwargs):
        seen["tile"] = result = real(*args, **kwargs)
        return result

    monkeypatch.setattr(columns_opencl, "tile_shape", spy)
    shapes = {}
    for limits_text in NORMALIZE_LIMIT_GROUPS["double"]:
        set_emulated_limits(limits_text)
        seen.clear()
        backend = backend_for(opencl_device)
        x = backend.from_host(np.ones((9, 100), np.float64 if backend.info.fp64 else np.float32))
        dense_opencl.normalize_gradient_opencl("G", x, x, 0)
        shapes[limits_text] = seen.get("tile", "strip")
    assert len(set(shapes.values())) >= 3, shapes
    if not backend_for(opencl_device).info.gpu_launch_shape:
        assert shapes["shape=cpu"] == "strip"
    assert all(tile * slices <= 64 for tile, slices in [shapes["shape=gpu,work_group=64"]])


def _fma(a, b, c):
    """a * b + c rounded once (exact rationals)."""
    return float(fractions.Fraction(a) * fractions.Fraction(b) + fractions.Fraction(c))


def _canonical_column_sum(column, fused):
    """The canonical order in float64: 8 partials of rows k = r (mod 8), then the halving tree."""
    partials = [0.0] * 8
    for k, value in enumerate(column.tolist()):
        r = k % 8
        partials[r] = _fma(value, value, partials[r]) if fused else partials[r] + value * value
    p = partials
    return ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]))


@pytest.mark.parametrize("limits_text", ["", "shape=gpu", "shape=gpu,work_group=64"])
def test_float64_bits_are_the_canonical_order(opencl_device, restore_limits, limits_text):
    """float64 columns give exactly the order above (with or without a fused multiply-add per square)."""
    set_emulated_limits(limits_text)
    backend = backend_for(opencl_device)
    if not backend.info.fp64:
        pytest.skip("device without fp64")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((203, 11)) * np.exp(rng.uniform(-5, 5, (203, 11)))
    y = caffe2op.normalize(backend.from_host(x), axis=0).get()
    matches = []
    for fused in (False, True):
        sums = np.array([_canonical_column_sum(x[:, j], fused) for j in range(x.shape[1])])
        expected = x * (1.0 / np.maximum(np.sqrt(sums), 1e-12))
        matches.append(expected.tobytes() == y.tobytes())
    assert any(matches)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiles_looping_over_several_tiles(opencl_device, restore_limits, monkeypatch, dtype):
    """Work-groups that loop over several tiles (few groups) give the bits of one group per tile.

    Small on purpose: ``.ci/oclgrind`` runs it (tile kernels forward, in place and backward, a
    rescued column, local memory reused from one tile to the next).
    """
    set_emulated_limits(os.environ.get("CAFFE2OP_OPENCL_LIMITS") or "shape=gpu")
    backend = backend_for(opencl_device)
    if dtype == np.float64 and not backend.info.fp64:
        pytest.skip("device without fp64")
    rng = np.random.default_rng(5)
    cases = [(rng.standard_normal((13, 70)), 0), (rng.standard_normal((3, 5, 9)), 1)]
    cases[0][0][:, 3] = RESCUE[dtype][0] if backend.info.fast_fp64 or dtype == np.float64 else 1.0
    runs = []
    for max_groups in (columns_opencl._MAX_TILE_GROUPS, 2):
        monkeypatch.setattr(columns_opencl, "_MAX_TILE_GROUPS", max_groups)
        results = []
        for x, axis in cases:
            x = x.astype(dtype)
            dy = np.cos(x).astype(dtype)
            d = backend.from_host(x)
            caffe2op.normalize(d, axis=axis, out=d)
            assert_allclose_dtype(d.get(), caffe2op.normalize(x, axis=axis))
            dx = dense_opencl.normalize_gradient_opencl("G", backend.from_host(x), backend.from_host(dy), axis).get()
            assert_gradient_close(dx, x, dy, axis)
            results += [d.get().tobytes(), dx.tobytes()]
        runs.append(results)
    assert runs[0] == runs[1]
