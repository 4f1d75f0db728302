# SPDX-License-Identifier: BSD-3-Clause
"""Normalize on OpenCL devices gives the same bits whatever the work-group size, limits and launch shape.

Issue 16: every Normalize kernel sums a vector in one canonical order fixed
by its length alone (normalize.cl: chunks of 8 lanes in 256 slots, an
interleaved pairwise tree, then the lanes), which every launch shape
computes exactly; the columns kernels add 8 residue partials (rows k = r mod 8)
in a fixed tree (normalize_columns.cl), the grouped kernel sums each vector serially.
Each battery runs under every limit set below and must give identical bytes:
dense rows and columns of odd lengths, NormalizeGradient, CSR segments and
grouped vectors, float16/32/64, double and compensated accumulation.
"""

import numpy as np
import pytest
import scipy.sparse as sp

import caffe2op
from caffe2op.devices import backend_for
from caffe2op.ops.normalize import dense_opencl as dense_opencl_module

from ._device_helpers import NORMALIZE_LIMIT_GROUPS, assert_same_bits_under_limit_groups, set_emulated_limits

LENGTHS = [1, 3, 63, 64, 65, 1000, 2049, 20000]


def _inputs(dtype):
    rng = np.random.default_rng(2024)
    for length in LENGTHS:
        rows = 3 if length < 5000 else 2
        x = (rng.standard_normal((rows, length)) * rng.choice([0.01, 1.0, 30.0], (rows, 1))).astype(dtype)
        dy = rng.standard_normal((rows, length)).astype(dtype)
        yield x, dy


def _battery(device, dtype):
    """Every result of the battery, as bytes, in a fixed order."""
    backend = backend_for(device)
    results = []
    for x, dy in _inputs(dtype):
        for axis in (0, 1):
            for norm, use_max_norm in [(1.0, False), (1.5, True)]:
                y = caffe2op.normalize(backend.from_host(x), axis=axis, norm=norm, use_max_norm=use_max_norm)
                results.append(y.get().tobytes())
            dx = dense_opencl_module.normalize_gradient_opencl("G", backend.from_host(x), backend.from_host(dy), axis)
            results.append(dx.get().tobytes())
        three = x.reshape(x.shape[0], -1, 1) if x.shape[1] % 2 else x.reshape(x.shape[0], 2, -1)
        for axis in range(3):
            results.append(caffe2op.normalize(backend.from_host(three), axis=axis).get().tobytes())
        # Sparse: CSR rows are segments (the work-group kernel), columns grouped vectors; CSC the reverse.
        dense = x.astype(np.float64)
        dense[np.abs(dense) < 0.3 * np.abs(dense).max()] = 0
        for fmt in ("csr", "csc"):
            m = sp.csr_matrix(dense) if fmt == "csr" else sp.csc_matrix(dense)
            m = type(m)((m.data.astype(dtype), m.indices, m.indptr), shape=m.shape)
            d = caffe2op.DeviceSparseMatrix.from_scipy(m, device)
            for axis in (0, 1):
                results.append(caffe2op.normalize(d, axis=axis).data.get().tobytes())
    return results


@pytest.mark.parametrize("accumulation", sorted(NORMALIZE_LIMIT_GROUPS))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_same_bits_under_every_limit_set(opencl_device, accumulation, dtype):
    assert_same_bits_under_limit_groups(opencl_device, accumulation, dtype, _battery)


def test_launch_shapes_really_differ(opencl_device, restore_limits):
    """The limit sets above do run different work-group sizes (else the test above proves nothing)."""
    sizes = {}
    real = dense_opencl_module._group_launch
    for limits_text in NORMALIZE_LIMIT_GROUPS["double"]:
        if "long_vectors" in limits_text:
            continue  # the split launches (tests/opencl/test_normalize_long.py checks that they run)
        set_emulated_limits(limits_text)
        seen = []

        def spy(*args, seen=seen, **kwargs):
            result = real(*args, **kwargs)
            seen.append(result[0])
            return result

        dense_opencl_module._group_launch = spy
        try:
            caffe2op.normalize(backend_for(opencl_device).from_host(np.ones((2, 20000), np.float32)), axis=1)
        finally:
            dense_opencl_module._group_launch = real
        sizes[limits_text] = seen[-1]
    assert len(set(sizes.values())) >= 3, sizes
