# SPDX-License-Identifier: BSD-3-Clause
"""Normalize on OpenCL devices: norms that overflow or underflow, and the per-device accumulation.

Issue 10 item 7: vectors of 1e200 or 1e-200 (float64), or of 1e25 / 1e-25
float32 values summed in float (compensated mode, where double is slow),
have sums of squares that overflow or underflow; the kernels then measure
the vector again scaled by a power of two, as the CPU kernels do, in every
Normalize kernel (dense rows and columns, sparse segments, grouped sparse
vectors with and without duplicates) and in NormalizeGradient where its sums
can overflow (compensated mode only: the CPU sums in double).  Issue 16
item 7: float32 and float16 data are summed in double on devices with fast
double precision and in compensated float elsewhere
(``CAFFE2OP_OPENCL_LIMITS=fast_fp64=0`` forces it on PoCL); both stay
accurate over 2**24-element vectors.  Every case runs under several emulated
limit sets and is compared with the CPU path.
"""

import numpy as np
import pytest
import scipy.sparse as sp

import caffe2op
from caffe2op.devices import backend_for
from caffe2op.opencl import backend as backend_module
from caffe2op.ops.normalize import dense_opencl as dense_opencl_module

from .._helpers import assert_allclose_dtype, assert_bit_identical
from ._device_helpers import assert_gradient_close, limits_fixture_value

LIMITS = [
    "",
    "shape=gpu",
    "shape=gpu,work_group=64",
    "shape=gpu,work_group=128,local_mem=2048",
    "fast_fp64=0",
    "shape=gpu,fast_fp64=0",
    "shape=gpu,fp64=0",
    "shape=cpu",
]
DTYPES = [np.float16, np.float32, np.float64]


@pytest.fixture(params=LIMITS, ids=lambda text: text or "env")
def limits(request):
    """Re-probe the devices under ``CAFFE2OP_OPENCL_LIMITS=<param>`` for one test, then restore."""
    yield from limits_fixture_value(request)


def _backend_or_refused(device, dtype):
    """The device's backend, or None after checking that a device without fp64 refuses float64 (a TypeError)."""
    backend = backend_for(device)
    if np.dtype(dtype) == np.float64 and not backend.info.fp64:
        x = np.full((2, 3), 1e200)
        with pytest.raises(TypeError, match="fp64"):
            caffe2op.normalize(x, axis=1, device=device)
        assert np.array_equal(x, np.full((2, 3), 1e200))
        return None
    return backend


# Magnitudes whose squares overflow or underflow the sums: float64 ones for double sums, float32 ones
# for compensated float sums (1e25**2 > FLT_MAX, 1e-25**2 < FLT_MIN); float16 squares never do.
EXTREMES = {
    np.float64: [1e200, -1e300, 1e-200, 5e-324, 1.7e308, 1e-160],
    np.float32: [3e25, -1e30, 3e-25, 1e-40, 3e38, 1e-20],
    np.float16: [6e4, -3e4, 6e-8, 1e-4, 6.5e4 / 1.1, 1e-7],
}


def _extreme_array(dtype, shape, seed):
    """Vectors (along either axis) all huge, all tiny, huge next to ordinary values, and mixed."""
    rng = np.random.default_rng(seed)
    values = np.array(EXTREMES[dtype], dtype=np.float64)
    x = rng.uniform(0.5, 1.0, shape) * rng.choice([-1.0, 1.0], size=shape) * rng.choice(values, size=shape)
    x[0] = values[0]
    x[-1] = values[2]
    x[:, 0] = values[2] * 0.5
    if shape[0] > 2:
        x[1] = np.where(rng.random(shape[1]) < 0.5, values[1], 1.0)
        x[2] = 0.0
        x[2, -1] = values[3]
    return x.astype(dtype)


def _scaled_reference(x, axis, norm=1.0, use_max_norm=False):
    """float64 Normalize whose norms neither overflow nor underflow (the vectors scaled by their largest value)."""
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        amax = np.max(np.abs(x), axis=axis, keepdims=True)
        safe = np.where(amax > 0, amax, 1.0)
        inner = np.sqrt(np.sum((x / safe) ** 2, axis=axis, keepdims=True))
        n = safe * inner
        scale = norm / np.maximum(n, 1e-12)
        y = np.where(np.isinf(n), x / safe / inner * norm, x * scale)
        if use_max_norm:
            y = np.where(n <= norm, x, y)
    return y


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_extremes_match_cpu_under_every_limit(opencl_device, limits, dtype):
    """Rows (work-group kernel) and columns (columns kernel), several lengths, every rule: the CPU's values."""
    backend = _backend_or_refused(opencl_device, dtype)
    if backend is None:
        return
    for shape in [(4, 5), (3, 70), (70, 3), (5, 17)]:
        x = _extreme_array(dtype, shape, seed=sum(shape))
        for axis in (0, 1):
            for norm, use_max_norm in [(1.0, False), (2.5, True), (float(np.finfo(dtype).max) / 4, True)]:
                cpu = caffe2op.normalize(x, axis=axis, norm=norm, use_max_norm=use_max_norm)
                device = caffe2op.normalize(backend.from_host(x), axis=axis, norm=norm, use_max_norm=use_max_norm)
                assert_allclose_dtype(device.get(), cpu)
                if dtype == np.float64:
                    assert_allclose_dtype(device.get(), _scaled_reference(x, axis, norm, use_max_norm))
        three = _extreme_array(dtype, (6, 9), seed=3).reshape(2, 3, 9)
        for axis in range(3):
            cpu = caffe2op.normalize(three, axis=axis)
            assert_allclose_dtype(caffe2op.normalize(backend.from_host(three), axis=axis).get(), cpu)


def test_issue_reproductions(opencl_device, limits):
    """The reproductions of issue 10 item 7 on the OpenCL path."""
    backend = _backend_or_refused(opencl_device, np.float64)
    if backend is None:
        return
    w = caffe2op.normalize(sp.csr_matrix([[1e200, 1e200]]), axis=1, device=opencl_device)
    np.testing.assert_allclose(w.toarray(), [[2**-0.5, 2**-0.5]], rtol=1e-15)
    y = caffe2op.normalize(backend.from_host(np.full((2, 4), 1e200)), axis=1).get()
    np.testing.assert_allclose(y, 0.5, rtol=1e-15)
    # A vector of norm 2e-200 < eps is divided by eps (Normalize's rule), exactly as on the CPU.
    tiny = np.full((2, 4), 1e-200)
    y = caffe2op.normalize(backend.from_host(tiny), axis=1).get()
    assert_bit_identical(y, caffe2op.normalize(tiny, axis=1))
    np.testing.assert_allclose(y, 1e-188, rtol=1e-15)
    # Norms between 1e-160 and eps underflow their squares (1e-320 is subnormal): measured exactly.
    small = np.full((2, 4), 1e-160)
    np.testing.assert_allclose(caffe2op.normalize(backend.from_host(small), axis=0).get(), 1e-148 / 2**0.5 * 2**0.5)
    # Beyond every finite norm: 1.7e308 * 2 overflows the norm itself; the scale is taken apart.
    huge = np.array([[1.7e308, 1.7e308], [np.inf, 1.0], [np.nan, 1e300]])
    y = caffe2op.normalize(backend.from_host(huge), axis=1).get()
    np.testing.assert_allclose(y[0], 2**-0.5, rtol=1e-15)
    assert_bit_identical(y[1:], caffe2op.normalize(huge, axis=1)[1:])


def _with_dtype(matrix, dtype):
    """``matrix`` (built in float64: scipy cannot build float16 ones from dense arrays) holding ``dtype`` values."""
    return type(matrix)((matrix.data.astype(dtype), matrix.indices, matrix.indptr), shape=matrix.shape)


def _sparse_cases(dtype, seed):
    rng = np.random.default_rng(seed)
    dense = _extreme_array(dtype, (9, 13), seed).astype(np.float64)
    dense[rng.random(dense.shape) < 0.3] = 0
    canonical = sp.csr_matrix(dense)
    yield _with_dtype(canonical, dtype)
    yield _with_dtype(sp.csc_matrix(dense), dtype)
    # Duplicates (the grouped kernel's runs): every entry split in two equal halves.
    coo = canonical.tocoo()
    data = np.concatenate([coo.data / 2, coo.data / 2])
    rows, cols = np.concatenate([coo.row, coo.row]), np.concatenate([coo.col, coo.col])
    order = np.lexsort((cols, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=9))])
    yield sp.csr_matrix((data[order].astype(dtype), cols[order], indptr), shape=dense.shape)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_extremes_match_cpu_under_every_limit(opencl_device, limits, dtype):
    """Segments (along the compressed direction) and grouped vectors (across it, or with duplicates)."""
    if _backend_or_refused(opencl_device, dtype) is None:
        return
    for w in _sparse_cases(dtype, seed=5):
        for axis in (0, 1):
            for norm, use_max_norm in [(1.0, False), (2.5, True)]:
                cpu = caffe2op.normalize(w, axis=axis, norm=norm, use_max_norm=use_max_norm)
                d = caffe2op.DeviceSparseMatrix.from_scipy(w, opencl_device)
                device = caffe2op.normalize(d, axis=axis, norm=norm, use_max_norm=use_max_norm).to_scipy()
                assert_allclose_dtype(device.data, cpu.data[: w.nnz])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_gradient_of_extremes_matches_cpu_under_every_limit(opencl_device, limits, dtype):
    """float32 <x, x> and <x, dy> overflow a float sum (compensated mode): rescued there, as the CPU's double."""
    backend = backend_for(opencl_device)
    rng = np.random.default_rng(7)
    for shape in [(4, 5), (3, 70), (70, 3)]:
        x = _extreme_array(dtype, shape, seed=shape[0])
        dy = rng.standard_normal(shape).astype(dtype)
        for axis in (0, 1):
            device = dense_opencl_module.normalize_gradient_opencl("G", backend.from_host(x), backend.from_host(dy),
                                                                   axis)  # fmt: skip
            assert_gradient_close(device.get(), x, dy, axis)


# --- accumulation per device ------------------------------------------------------------------------


@pytest.mark.parametrize("limits_text, expected", [("", "double"), ("fast_fp64=0", "compensated")])
def test_programs_are_built_with_the_device_accumulation(opencl_device, monkeypatch, limits_text, expected):
    """float16 and float32 data sum like the CPU (double) where double is fast, compensated float elsewhere."""
    from caffe2op import opencl

    monkeypatch.setenv("CAFFE2OP_OPENCL_LIMITS", limits_text)
    backend_module._reprobe_devices()
    try:
        backend = backend_for(opencl_device)
        if expected == "double" and not backend.info.fast_fp64:
            pytest.skip("this device's double precision is slow")
        built = []
        real_get_program = opencl.get_program
        monkeypatch.setattr(opencl, "get_program", lambda context, name, defines: built.append(dict(defines))
                            or real_get_program(context, name, defines))  # fmt: skip
        for dtype in (np.float16, np.float32):
            caffe2op.normalize(backend.from_host(np.ones((3, 9), dtype)), axis=1)
        assert len(built) == 2
        for defines in built:
            assert defines["ACC"] == ("double" if expected == "double" else "float")
            assert bool(defines.get("C2O_COMPENSATED")) == (expected == "compensated")
    finally:
        monkeypatch.delenv("CAFFE2OP_OPENCL_LIMITS")
        backend_module._reprobe_devices()


LONG = 2**24


@pytest.mark.parametrize("limits_text", ["", "fast_fp64=0"], ids=["env", "compensated"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_long_constant_vectors_stay_accurate(opencl_device, monkeypatch, limits_text, dtype):
    """2**24 equal values along a row (work-group kernel) and down two columns (columns kernel): every
    result within one ulp of the float64 value (a float sum drifts by several ulps at this length)."""
    monkeypatch.setenv("CAFFE2OP_OPENCL_LIMITS", limits_text)
    backend_module._reprobe_devices()
    try:
        backend = backend_for(opencl_device)
        value = np.asarray(0.1, dtype)
        expected = float(value) / (float(value) * LONG**0.5)  # 2**-12 up to rounding
        ulp = float(np.spacing(np.asarray(expected, dtype)))
        for shape, axis in [((LONG,), 0), ((LONG // 2, 2), 0)]:
            n = shape[axis]
            want = float(value) / (float(value) * n**0.5)
            y = caffe2op.normalize(backend.from_host(np.full(shape, value, dtype)), axis=axis).get()
            assert np.all(np.abs(y.astype(np.float64) - want) <= ulp), (shape, y.min(), y.max(), want)
    finally:
        monkeypatch.delenv("CAFFE2OP_OPENCL_LIMITS")
        backend_module._reprobe_devices()
