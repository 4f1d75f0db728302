# SPDX-License-Identifier: BSD-3-Clause
"""Assertions shared by the tests: per-dtype tolerances from one place."""

import numpy as np

# rtol/atol by the least precise dtype involved.
TOLERANCES = {
    np.dtype(np.float16): dict(rtol=1e-2, atol=1e-3),
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-6),
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-14),
}


def tolerance(dtype):
    """rtol/atol for results of dtype ``dtype``."""
    return TOLERANCES[np.dtype(dtype)]


def assert_allclose_dtype(actual, desired, dtype=None, **overrides):
    """``assert_allclose`` with the tolerance of ``dtype`` (default: ``actual``'s), and a dtype check."""
    actual = np.asarray(actual)
    dtype = np.dtype(dtype if dtype is not None else actual.dtype)
    if actual.dtype != dtype:
        raise AssertionError(f"dtype {actual.dtype} != expected {dtype}")
    tol = dict(tolerance(dtype), **overrides)
    np.testing.assert_allclose(actual.astype(np.float64), np.asarray(desired, dtype=np.float64), **tol)


def assert_bit_identical(a, b):
    """Same dtype, shape and bytes (NaN payloads included)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    assert a.tobytes() == b.tobytes(), "arrays differ"
