# SPDX-License-Identifier: BSD-3-Clause
"""Assertions shared by the tests: per-dtype tolerances from one place; the ``+OPENCL`` doctest flag."""

import doctest
import os

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


# --- doctests that need an OpenCL device -------------------------------------------------------------

#: ``# doctest: +OPENCL`` marks an example that needs an OpenCL device (``DeviceOption(DeviceType.OPENCL, 0)``).
#: Registered when this module is imported, which the repository's root conftest.py does before pytest
#: parses any docstring.  Sphinx hides the flag on the rendered pages, as it hides ``+SKIP``.
OPENCL_DOCTEST = doctest.register_optionflag("OPENCL")


def skip_opencl_examples(examples):
    """Skip the ``+OPENCL`` examples among ``examples`` (doctest.Example) when there is no OpenCL device.

    Under ``CAFFE2OP_REQUIRE_OPENCL=1`` nothing is skipped, so a missing device fails them.  Returns
    whether any example needs OpenCL.  The other examples of the same docstring run either way, so they
    must not depend on the device ones.
    """
    marked = [example for example in examples if example.options.get(OPENCL_DOCTEST)]
    if marked and os.environ.get("CAFFE2OP_REQUIRE_OPENCL") != "1":
        from caffe2op import opencl_devices

        if not opencl_devices():
            for example in marked:
                example.options[doctest.SKIP] = True
    return bool(marked)
