# SPDX-License-Identifier: BSD-3-Clause
"""Normalize and NormalizeGradient on every OpenCL device: dense arrays, device sparse matrices, operators.

CPU-vs-OpenCL comparisons on random inputs (every dtype, axis, rank and
format, zero vectors, length-1 vectors, empty arrays, explicit zeros,
duplicate entries), both launch shapes of the dense kernels on PoCL,
results that repeat bit for bit, backward passes through Normalize on the
device checked by finite differences, and bad input that gets a typed error
and leaves every array bit-identical.
"""

import dataclasses
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import caffe2op
from caffe2op.devices import backend_for
from caffe2op.ops.normalize import dense as dense_module
from caffe2op.ops.normalize import dense_opencl as dense_opencl_module

from .._helpers import assert_allclose_dtype, assert_bit_identical
from .._reference import normalize_gradient_ref, normalize_ref
from ._device_helpers import is_cpu, run_large_table_script, run_op

sp = pytest.importorskip("scipy.sparse")

DTYPES = [np.float16, np.float32, np.float64]
MODES = st.sampled_from([(1.0, False), (2.5, False), (0.0, False), (1.0, True), (2.5, True), (0.0, True)])


def _skip_without_fp64(device, dtype):
    if np.dtype(dtype) == np.float64 and not is_cpu(device) and not backend_for(device).info.fp64:
        pytest.skip("device without fp64")


def gpu_launch_shape(enabled):
    """Run the GPU launch shapes (work-groups of many items, one chunk per columns item) on CPU devices too."""
    return mock.patch.object(dense_opencl_module, "_CPU_SHAPE_ON_CPU_DEVICES", not enabled)


@st.composite
def dense_cases(draw, max_rank=4):
    """(array, axis): any rank, zero-size and length-1 axes, vectors of up to 40 (chunks of 8 and tails),
    some all-zero vectors and explicit negative zeros."""
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.integers(1, max_rank))
    sides = st.sampled_from([0, 1, 2, 3, 7, 8, 9, 17, 40]) if ndim <= 2 else st.integers(0, 9)
    shape = tuple(draw(st.lists(sides, min_size=ndim, max_size=ndim)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape) * draw(st.sampled_from([0.01, 1.0, 30.0]))
    axis = draw(st.integers(-ndim, ndim - 1))
    if values.size and draw(st.booleans()):
        index = [int(rng.integers(0, max(s, 1))) for s in shape]
        index[axis] = slice(None)
        values[tuple(index)] = draw(st.sampled_from([0.0, -0.0]))
    return values.astype(dtype), axis


# --- dense: CPU vs OpenCL ------------------------------------------------------------------


@given(case=dense_cases(), mode=MODES, gpu_shape=st.booleans())
def test_dense_opencl_matches_cpu(opencl_device, case, mode, gpu_shape):
    """The device kernels give the CPU kernels' results, the same bits twice, and leave the input alone."""
    x, axis = case
    _skip_without_fp64(opencl_device, x.dtype)
    norm, use_max_norm = mode
    backend = backend_for(opencl_device)
    cpu = caffe2op.normalize(x, axis=axis, norm=norm, use_max_norm=use_max_norm)
    dx = backend.from_host(x)
    with gpu_launch_shape(gpu_shape):
        first = caffe2op.normalize(dx, axis=axis, norm=norm, use_max_norm=use_max_norm)
        again = caffe2op.normalize(dx, axis=axis, norm=norm, use_max_norm=use_max_norm)
    assert backend.owns(first) and first.shape == x.shape and first.dtype == x.dtype
    assert_allclose_dtype(first.get(), cpu)
    assert_allclose_dtype(first.get(), normalize_ref(x, axis, norm, use_max_norm))
    assert_bit_identical(first.get(), again.get())
    assert_bit_identical(dx.get(), x)


@given(case=dense_cases(max_rank=3), gpu_shape=st.booleans())
def test_dense_in_place_and_out(opencl_device, case, gpu_shape):
    """out= and in place give the out-of-place bits; max-norm leaves short vectors bit-identical in place."""
    x, axis = case
    _skip_without_fp64(opencl_device, x.dtype)
    backend = backend_for(opencl_device)
    with gpu_launch_shape(gpu_shape):
        expected = caffe2op.normalize(backend.from_host(x), axis=axis).get()
        out = backend.from_host(np.full(x.shape, np.nan, x.dtype))
        assert caffe2op.normalize(backend.from_host(x), axis=axis, out=out) is out
        assert_bit_identical(out.get(), expected)
        dx = backend.from_host(x)
        assert caffe2op.normalize(dx, axis=axis, out=dx) is dx
        assert_bit_identical(dx.get(), expected)
        big = backend.from_host(x)
        # A norm above every vector's (and representable in float16): nothing is rescaled.
        caffe2op.normalize(big, axis=axis, out=big, use_max_norm=True, norm=6e4)
    assert_bit_identical(big.get(), x)


@given(case=dense_cases(max_rank=3), data=st.data(), gpu_shape=st.booleans())
def test_gradient_opencl_matches_cpu(opencl_device, case, data, gpu_shape):
    x, axis = case
    _skip_without_fp64(opencl_device, x.dtype)
    dy = data.draw(hnp.arrays(x.dtype, x.shape, elements=st.floats(-4, 4, width=16)))
    backend = backend_for(opencl_device)
    cpu = dense_module.normalize_gradient_dense("NormalizeGradient", x, dy, axis)
    with gpu_launch_shape(gpu_shape):
        first = dense_opencl_module.normalize_gradient_opencl("NormalizeGradient", backend.from_host(x),
                                                           backend.from_host(dy), axis)  # fmt: skip
        again = dense_opencl_module.normalize_gradient_opencl("NormalizeGradient", backend.from_host(x),
                                                           backend.from_host(dy), axis)  # fmt: skip
    assert_bit_identical(first.get(), again.get())
    # dX is a difference of two terms, each bounded by ||dY|| / n: errors scale with that, not with dX.
    wide_x, wide_dy = x.astype(np.float64), dy.astype(np.float64)
    n = np.maximum(np.sqrt(np.sum(wide_x**2, axis=axis, keepdims=True)), 1e-12)
    bound = np.sqrt(np.sum(wide_dy**2, axis=axis, keepdims=True)) / n
    tol = {np.float16: 1e-2, np.float32: 1e-5, np.float64: 1e-12}[x.dtype.type]
    # ... plus one step of the subnormal range, where float16 results are rounded in absolute terms
    allowed = tol * (np.abs(expected := normalize_gradient_ref(x, dy, axis)) + 2 * bound)
    allowed += float(np.finfo(x.dtype).smallest_subnormal)
    actual = first.get().astype(np.float64)
    finite = np.abs(expected) < 6e4 if x.dtype == np.float16 else np.ones(x.shape, bool)  # float16 overflows
    assert np.all(np.abs(actual[finite] - expected[finite]) <= allowed[finite])
    with np.errstate(invalid="ignore"):  # inf - inf where float16 overflowed
        to_cpu = np.abs(actual - cpu.astype(np.float64))
    assert np.all(to_cpu[finite] <= 2 * allowed[finite])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gpu_shape", [False, True], ids=["native-shape", "gpu-shape"])
def test_larger_arrays_every_axis(opencl_device, dtype, gpu_shape):
    """Vectors longer than a work-group's chunks, strips of many chunks, partial last chunks."""
    _skip_without_fp64(opencl_device, dtype)
    backend = backend_for(opencl_device)
    rng = np.random.default_rng(11)
    for shape in [(700, 45), (45, 700), (3, 130, 21), (2, 5000, 3)]:
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        dy = rng.standard_normal(shape).astype(dtype)
        for axis in range(len(shape)):
            with gpu_launch_shape(gpu_shape):
                y = caffe2op.normalize(backend.from_host(x), axis=axis).get()
                dx = dense_opencl_module.normalize_gradient_opencl(
                    "G", backend.from_host(x), backend.from_host(dy), axis
                )
            assert_allclose_dtype(y, normalize_ref(x, axis))
            cpu = dense_module.normalize_gradient_dense("G", x, dy, axis)
            assert_allclose_dtype(dx.get(), cpu, atol=1e-2 if dtype == np.float16 else 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_and_single_element_vectors(opencl_device, dtype):
    _skip_without_fp64(opencl_device, dtype)
    backend = backend_for(opencl_device)
    x = np.zeros((3, 4), dtype=dtype)
    x[1, 2] = 5.0
    expected = np.zeros((3, 4), dtype=dtype)
    expected[1, 2] = 1.0
    for axis in (0, 1):
        for use_max_norm in (False, True):
            y = caffe2op.normalize(backend.from_host(x), axis=axis, use_max_norm=use_max_norm)
            assert_bit_identical(y.get(), expected)
    negative_zero = -np.zeros((2, 2), dtype)
    assert_bit_identical(caffe2op.normalize(backend.from_host(negative_zero), axis=0).get(), negative_zero)
    column = np.array([[3.0], [-0.25], [0.0]], dtype=dtype)
    assert_bit_identical(caffe2op.normalize(backend.from_host(column), axis=1).get(), np.sign(column))
    row = np.array([[2.0, -4.0, 0.0]], dtype=dtype)
    assert_bit_identical(caffe2op.normalize(backend.from_host(row), axis=0).get(), np.sign(row))


@pytest.mark.parametrize("shape, axis", [((0,), 0), ((0, 3), 0), ((0, 3), 1), ((3, 0), 0), ((2, 0, 4), -1)])
def test_empty_arrays(opencl_device, shape, axis):
    backend = backend_for(opencl_device)
    x = backend.from_host(np.zeros(shape, np.float32))
    y = caffe2op.normalize(x, axis=axis)
    assert y.shape == shape and y.dtype == np.float32 and backend.owns(y)
    assert caffe2op.normalize(x, axis=axis, out=x) is x
    dx = dense_opencl_module.normalize_gradient_opencl("G", x, x, axis)
    assert dx.shape == shape


def test_nan_propagates_and_tiny_vectors_divide_by_eps(opencl_device):
    _skip_without_fp64(opencl_device, np.float64)
    backend = backend_for(opencl_device)
    x = np.array([[np.nan, 1.0], [1e-13, 0.0], [3e-13, 4e-13]])
    y = caffe2op.normalize(backend.from_host(x), axis=1).get()
    assert np.isnan(y[0]).all()
    np.testing.assert_allclose(y[1:], [[0.1, 0.0], [0.3, 0.4]], rtol=1e-12)


def test_views_and_caller_queues(opencl_device):
    """Arrays of a caller's own context run on its queue; views with an offset are read and written in place."""
    cl = pytest.importorskip("pyopencl")
    import pyopencl.array as cla

    backend = backend_for(opencl_device)
    queue = cl.CommandQueue(cl.Context([backend.device]))
    host = np.arange(1, 41, dtype=np.float32).reshape(10, 4)
    table = cla.to_device(queue, host)
    view = table[4:]
    assert caffe2op.normalize(view, axis=0, out=view) is view
    expected = host.copy()
    expected[4:] = normalize_ref(host[4:], 0)
    assert_allclose_dtype(table.get(), expected)
    assert_bit_identical(table.get()[:4], host[:4])
    # out overlapping the input at another offset goes through a temporary
    flat = cla.to_device(queue, np.arange(1, 13, dtype=np.float32))
    caffe2op.normalize(flat[:8], out=flat[4:])
    assert_allclose_dtype(flat.get()[4:], normalize_ref(np.arange(1, 9, dtype=np.float32)))


# --- host data with device= --------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_numpy_through_device(opencl_device, layout):
    """device= copies in and out: a NumPy result, out= written, in place W updated; any layout."""
    base = np.random.default_rng(12).standard_normal((6, 10)).astype(np.float32)
    x = {"C": base, "F": np.asfortranarray(base), "strided": base[:, ::2]}[layout]
    expected = caffe2op.normalize(x, axis=0)
    result = caffe2op.normalize(x, axis=0, device=opencl_device)
    assert isinstance(result, np.ndarray) and not np.shares_memory(result, x)
    assert_allclose_dtype(result, expected)
    out = np.empty_like(x)
    assert caffe2op.normalize(x, axis=0, out=out, device="opencl") is out
    assert_allclose_dtype(out, expected)
    before = base.copy()
    assert caffe2op.normalize(x, axis=0, out=x, device=opencl_device) is x
    assert_allclose_dtype(x, expected)
    if layout == "strided":
        assert_bit_identical(base[:, 1::2], before[:, 1::2])
    assert_allclose_dtype(caffe2op.normalize([[3.0, 4.0]], device=opencl_device), [[0.6, 0.8]])


def test_cpu_device_and_none_give_the_cpu_path():
    x = np.array([[3.0, 4.0]], np.float32)
    assert_allclose_dtype(caffe2op.normalize(x, device="cpu"), [[0.6, 0.8]])
    assert caffe2op.normalize(x, device=caffe2op.DeviceOption(caffe2op.DeviceType.CPU), out=x) is x


# --- operators --------------------------------------------------------------------------------


@given(case=dense_cases(max_rank=3), in_place=st.booleans())
def test_operator_on_every_device(device, case, in_place):
    x, axis = case
    _skip_without_fp64(device, x.dtype)
    if in_place:  # Caffe2's Normalize schema has no AllowInplace
        with pytest.raises(caffe2op.SchemaError, match="AllowInplace"):
            run_op(device, "Normalize", {"x": x}, "x", "x", axis=axis)
        return
    ws, result = run_op(device, "Normalize", {"x": x}, "x", "y", axis=axis)
    assert ws.blob_device("y") == ws.blob_device("x")
    assert_allclose_dtype(result["y"], normalize_ref(x, axis))
    assert_bit_identical(ws.fetch_blob("x"), x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_operator_on_every_device(device, dtype):
    _skip_without_fp64(device, dtype)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 9, 3)).astype(dtype)
    dy = rng.standard_normal((4, 9, 3)).astype(dtype)
    for axis in (0, 1, 2):
        _, out = run_op(device, "NormalizeGradient", {"x": x, "dy": dy}, ["x", "dy"], "dx", axis=axis)
        assert_allclose_dtype(
            out["dx"], normalize_gradient_ref(x, dy, axis), atol=2e-2 if dtype == np.float16 else 1e-5
        )


def test_operators_registered_for_opencl_and_cuda():
    for device_type in (caffe2op.DeviceType.OPENCL, caffe2op.DeviceType.CUDA):
        assert {"Normalize", "NormalizeGradient"} <= set(caffe2op.registered_operators(device_type))


@pytest.mark.parametrize(
    "shape, axis_a, axis_b", [((5,), 0, 0), ((4, 6), 0, 1), ((4, 6), -1, 0), ((3, 4, 5), 1, 2), ((2, 3, 1, 4), 3, 0)]
)
def test_backward_pass_on_device_matches_finite_differences(opencl_device, shape, axis_a, axis_b):
    """X -> Normalize_a -> Y; Sum(Y, X) -> S; Normalize_b(S) -> Z with a given dZ, all on the device.

    X feeds two operators, so its gradient is accumulated by a Sum on the
    device too.  Checked against central differences of sum(dZ * Z)
    computed with the CPU kernels, and against the same backward pass on the CPU.
    """
    _skip_without_fp64(opencl_device, np.float64)
    rng = np.random.default_rng(14)
    x = rng.standard_normal(shape)
    dz = rng.standard_normal(shape)

    def gradient_on(device):
        ops = [
            caffe2op.create_operator("Normalize", "x", "y", axis=axis_a, device_option=device),
            caffe2op.create_operator("Sum", ["y", "x"], "s", device_option=device),
            caffe2op.create_operator("Normalize", "s", "z", axis=axis_b, device_option=device),
        ]
        grad_ops, grad_map = caffe2op.get_backward_pass(ops, {"z": "dz"})
        assert [g.type for g in grad_ops] == ["NormalizeGradient", "NormalizeGradient", "Sum"]
        ws = caffe2op.Workspace()
        ws.feed_blob("x", x, device)
        ws.feed_blob("dz", dz, device)
        for o in ops + grad_ops:
            ws.run_operator_once(o)
        assert ws.blob_device(grad_map["x"]) == device
        return ws.fetch_blob(grad_map["x"])

    def loss(values):
        y = caffe2op.normalize(values, axis=axis_a)
        return float(np.sum(dz * caffe2op.normalize(y + values, axis=axis_b)))

    numeric = np.empty_like(x)
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += 1e-6
        minus[i] -= 1e-6
        numeric[i] = (loss(plus) - loss(minus)) / 2e-6
    on_device = gradient_on(opencl_device)
    np.testing.assert_allclose(on_device, numeric, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(on_device, gradient_on(caffe2op.DeviceOption(caffe2op.DeviceType.CPU)), rtol=1e-12)


# --- bad input on the device: typed errors, nothing modified ---------------------------------


def _weights():
    return np.random.default_rng(15).standard_normal((4, 3)).astype(np.float32)


def test_bad_dense_input_on_device(opencl_device):
    backend = backend_for(opencl_device)
    x = _weights()
    dx = backend.from_host(x)
    with pytest.raises(caffe2op.SchemaError, match="Normalize: axis 2 is out of range for an input of rank 2"):
        caffe2op.normalize(dx, axis=2, out=dx)
    with pytest.raises(TypeError, match="Normalize: argument 'axis' must be an int"):
        caffe2op.normalize(dx, axis=1.0, out=dx)
    # The functional form calls its input W, dense or sparse, host or device (the operator's is X).
    with pytest.raises(TypeError, match="Normalize: W must be float16, float32 or float64, got int32"):
        caffe2op.normalize(backend.from_host(np.ones((2, 2), np.int32)))
    with pytest.raises(ValueError, match="Normalize: a device W must be C-contiguous"):
        caffe2op.normalize(backend.from_host(np.ones((4, 4), np.float32))[:, ::2])
    with pytest.raises(ValueError, match="Normalize: W lives on OPENCL.* but device='cpu' was asked for"):
        caffe2op.normalize(dx, device="cpu")
    with pytest.raises(TypeError, match="Normalize: out must have dtype float32"):
        caffe2op.normalize(dx, out=backend.from_host(np.zeros((4, 3), np.float16)))
    with pytest.raises(ValueError, match=r"Normalize: out must have shape \(4, 3\)"):
        caffe2op.normalize(dx, out=backend.from_host(np.zeros((3, 4), np.float32)))
    with pytest.raises(TypeError, match="Normalize: out must be a pyopencl.array.Array"):
        caffe2op.normalize(dx, out=np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="Normalize: argument 'norm' must be finite and >= 0"):
        caffe2op.normalize(dx, norm=-1.0, out=dx)
    assert_bit_identical(dx.get(), x)


def test_out_in_another_context(opencl_device):
    cl = pytest.importorskip("pyopencl")
    import pyopencl.array as cla

    backend = backend_for(opencl_device)
    queue = cl.CommandQueue(cl.Context([backend.device]))
    x = _weights()
    dx = backend.from_host(x)
    foreign = cla.to_device(queue, np.zeros((4, 3), np.float32))
    with pytest.raises(
        ValueError, match="Normalize: out lives on a caller's own pyopencl context on OPENCL.*, not on OPENCL"
    ):
        caffe2op.normalize(dx, out=foreign)
    assert_bit_identical(dx.get(), x)
    assert_bit_identical(foreign.get(), np.zeros((4, 3), np.float32))


def test_bad_host_input_with_device(opencl_device):
    x = _weights()
    before = x.copy()
    with pytest.raises(caffe2op.SchemaError, match="axis 5"):
        caffe2op.normalize(x, axis=5, out=x, device=opencl_device)
    with pytest.raises(TypeError, match="Normalize: W must be float16, float32 or float64, got complex128"):
        caffe2op.normalize(np.ones((2, 2), complex), device=opencl_device)
    # Integer host data are normalised out of place into float64 on the device too (which needs fp64).
    if backend_for(opencl_device).info.fp64:
        y = caffe2op.normalize(np.array([[3, 4]]), device=opencl_device)
        assert y.dtype == np.float64
        np.testing.assert_allclose(y, [[0.6, 0.8]], rtol=1e-15)
    else:
        with pytest.raises(TypeError, match="float64"):
            caffe2op.normalize(np.array([[3, 4]]), device=opencl_device)
    with pytest.raises(TypeError, match="W holds int64 data, which is normalised out of place"):
        caffe2op.normalize(np.arange(4).reshape(2, 2), out=np.zeros((2, 2), np.int64), device=opencl_device)
    with pytest.raises(ValueError, match="out must have shape"):
        caffe2op.normalize(x, out=np.zeros((3, 4), np.float32), device=opencl_device)
    with pytest.raises(RuntimeError, match="no OpenCL device number 99"):
        caffe2op.normalize(x, out=x, device="opencl:99")
    assert_bit_identical(x, before)


def test_float64_without_fp64(opencl_device, monkeypatch):
    """A device without cl_khr_fp64 (simulated) refuses float64 with a TypeError, writing nothing."""
    backend = backend_for(opencl_device)
    x = np.array([[3.0, 4.0]])
    w = sp.csr_array(x)
    d = caffe2op.DeviceSparseMatrix.from_scipy(w, opencl_device)
    ws = caffe2op.Workspace()
    ws.feed_blob("x", x, opencl_device)
    ws.feed_blob("x32", x.astype(np.float32), opencl_device)
    monkeypatch.setattr(backend, "info", dataclasses.replace(backend.info, fp64=False))
    with pytest.raises(TypeError, match="Normalize: float64 needs an OpenCL device with double precision"):
        ws.run_operator_once(caffe2op.create_operator("Normalize", "x", "y", device_option=opencl_device))
    assert_bit_identical(ws.fetch_blob("x"), x)
    host = x.copy()
    with pytest.raises(TypeError, match="cl_khr_fp64"):
        caffe2op.normalize(host, out=host, device=opencl_device)
    assert_bit_identical(host, x)
    with pytest.raises(TypeError, match="cl_khr_fp64"):
        caffe2op.normalize(w, out=w, device=opencl_device)
    with pytest.raises(TypeError, match="cl_khr_fp64"):
        caffe2op.normalize(d, out=d)
    assert_bit_identical(w.data, x[0])
    assert_bit_identical(d.data.get(), x[0])
    # float32 still works, accumulating in float
    ws.run_operator_once(caffe2op.create_operator("Normalize", "x32", "y32", device_option=opencl_device))
    assert_allclose_dtype(ws.fetch_blob("y32"), [[0.6, 0.8]])


def test_operator_bad_input_on_device(opencl_device):
    ws = caffe2op.Workspace()
    ws.feed_blob("i", np.arange(6).reshape(2, 3), opencl_device)
    with pytest.raises(TypeError, match="Normalize: X must be float16, float32 or float64, got int64"):
        ws.run_operator_once(caffe2op.create_operator("Normalize", "i", "j", device_option=opencl_device))
    assert_bit_identical(ws.fetch_blob("i"), np.arange(6).reshape(2, 3))
    x = _weights()
    ws.feed_blob("x", x, opencl_device)
    with pytest.raises(ValueError, match="rank 2"):
        ws.run_operator_once(caffe2op.create_operator("Normalize", "x", "y", axis=3, device_option=opencl_device))
    assert not ws.has_blob("y")
    ws.feed_blob("host", x)
    with pytest.raises(ValueError, match="host"):
        ws.run_operator_once(caffe2op.create_operator("Normalize", "host", "y", device_option=opencl_device))
    assert not ws.has_blob("y")
    for dy, error, match in [
        (np.ones((4, 3), np.float16), TypeError, "dY must have the dtype of X"),
        (np.ones((3, 4), np.float32), ValueError, "dY must have the shape of X"),
    ]:
        ws.feed_blob("dy", dy, opencl_device)
        with pytest.raises(error, match=f"NormalizeGradient: {match}"):
            ws.run_operator_once(
                caffe2op.create_operator("NormalizeGradient", ["x", "dy"], "dx", device_option=opencl_device)
            )
        assert not ws.has_blob("dx")
    assert_bit_identical(ws.fetch_blob("x"), x)


# --- sparse matrices on the device -----------------------------------------------------------------


def _sparse_reference(w, axis):
    """The expected stored values: each vector's norm is that of its summed entries (float64)."""
    axis %= 2
    major = np.repeat(np.arange(len(w.indptr) - 1), np.diff(w.indptr))[: w.nnz]
    rows, cols = (major, w.indices[: w.nnz]) if w.format == "csr" else (w.indices[: w.nnz], major)
    dense = np.zeros(w.shape)
    np.add.at(dense, (rows, cols), w.data[: w.nnz].astype(np.float64))
    norms = np.sqrt(np.sum(dense**2, axis=axis))
    vector = cols if axis == 0 else rows
    return w.data[: w.nnz].astype(np.float64) / np.maximum(norms[vector], 1e-12)


@st.composite
def sparse_cases(draw):
    """A CSR/CSC matrix or array made from raw arrays: explicit zeros, empty segments, unsorted indices,
    duplicate entries, int32/int64 index arrays; and an axis."""
    fmt = draw(st.sampled_from(["csr", "csc"]))
    cls = {("csr", 0): sp.csr_matrix, ("csr", 1): sp.csr_array, ("csc", 0): sp.csc_matrix, ("csc", 1): sp.csc_array}
    kind = draw(st.integers(0, 1))
    dtype = draw(st.sampled_from(DTYPES))
    n_major, n_minor = draw(st.integers(0, 12)), draw(st.integers(0, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 2 * n_minor + 1, n_major) if n_minor else np.zeros(n_major, np.int64)
    style = draw(st.sampled_from(["canonical", "unsorted", "duplicates"]))
    indices = []
    for c in counts:
        if style == "duplicates":
            segment = rng.integers(0, n_minor, c)
        else:
            segment = rng.choice(n_minor, min(int(c), n_minor), replace=False)
            if style == "canonical":
                segment = np.sort(segment)
        indices.append(segment)
    counts = np.array([len(s) for s in indices], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = np.concatenate(indices).astype(np.int64) if indices else np.zeros(0, np.int64)
    nnz = int(indptr[-1])
    data = rng.standard_normal(nnz) * draw(st.sampled_from([0.1, 1.0, 20.0]))
    data[rng.random(nnz) < 0.15] = 0.0  # explicit zeros
    index_dtype = draw(st.sampled_from([np.int32, np.int64]))
    shape = (n_major, n_minor) if fmt == "csr" else (n_minor, n_major)
    matrix = cls[fmt, kind]((data.astype(dtype), indices.astype(index_dtype), indptr.astype(index_dtype)), shape=shape)
    matrix.indices = indices.astype(index_dtype)
    matrix.indptr = indptr.astype(draw(st.sampled_from([np.int32, np.int64])))
    return matrix, draw(st.sampled_from([0, 1, -1, -2]))


@given(case=sparse_cases(), mode=MODES)
def test_sparse_opencl_matches_cpu(opencl_device, case, mode):
    """Device sparse matrices: the CPU's values, the same structure, the same bits twice."""
    w, axis = case
    _skip_without_fp64(opencl_device, w.dtype)
    norm, use_max_norm = mode
    cpu = caffe2op.normalize(w, axis=axis, norm=norm, use_max_norm=use_max_norm)
    d = caffe2op.DeviceSparseMatrix.from_scipy(w, opencl_device)
    first = caffe2op.normalize(d, axis=axis, norm=norm, use_max_norm=use_max_norm)
    again = caffe2op.normalize(d, axis=axis, norm=norm, use_max_norm=use_max_norm)
    assert isinstance(first, caffe2op.DeviceSparseMatrix) and first.same_structure(d)
    host = first.to_scipy()
    assert host.format == w.format and host.shape == w.shape and host.dtype == w.dtype
    np.testing.assert_array_equal(host.indptr, w.indptr)
    np.testing.assert_array_equal(host.indices, w.indices[: w.nnz])
    assert_allclose_dtype(host.data, cpu.data[: w.nnz])
    assert_bit_identical(again.data.get(), first.data.get())
    assert_bit_identical(d.data.get(), w.data)  # out of place: the input is untouched
    if mode == (1.0, False):
        assert_allclose_dtype(host.data, _sparse_reference(w, axis))


@given(case=sparse_cases())
def test_sparse_in_place_out_and_scipy_with_device(opencl_device, case):
    w, axis = case
    _skip_without_fp64(opencl_device, w.dtype)
    expected = caffe2op.normalize(w, axis=axis)
    d = caffe2op.DeviceSparseMatrix.from_scipy(w, opencl_device)
    out = d.copy()
    assert caffe2op.normalize(d, axis=axis, out=out) is out
    assert caffe2op.normalize(d, axis=axis, out=d) is d
    assert_bit_identical(out.data.get(), d.data.get())
    assert_allclose_dtype(d.data.get()[: w.nnz], expected.data[: w.nnz])
    # scipy input with device=: the same class, structure and index dtypes as on the CPU
    result = caffe2op.normalize(w, axis=axis, device=opencl_device)
    assert type(result) is type(w) and result.indices.dtype == w.indices.dtype
    assert result.indptr.dtype == w.indptr.dtype
    np.testing.assert_array_equal(result.indices, w.indices)
    assert_allclose_dtype(result.data, expected.data)
    copy = type(w)((w.data.copy(), w.indices.copy(), w.indptr.copy()), shape=w.shape)  # scipy cannot copy float16
    assert caffe2op.normalize(copy, axis=axis, out=copy, device=opencl_device) is copy
    assert_allclose_dtype(copy.data, expected.data)


def test_sparse_from_device_arrays_and_round_trip(opencl_device):
    """A matrix given as its three device arrays; to_scipy keeps the index dtypes."""
    backend = backend_for(opencl_device)
    data = np.array([3.0, 1.0, 4.0, 0.0, 2.0], np.float32)
    indices = np.array([0, 2, 0, 1, 2], np.int32)
    indptr = np.array([0, 2, 2, 5], np.int64)
    d = caffe2op.DeviceSparseMatrix(
        (backend.from_host(data), backend.from_host(indices), backend.from_host(indptr)), (3, 3), format="csr"
    )
    assert d.nnz == 5 and d.dtype == np.float32 and d.shape == (3, 3) and "CSR 3x3" in repr(d)
    assert caffe2op.normalize(d, axis=0, out=d) is d
    host = d.to_scipy()
    assert host.indices.dtype == np.int32 and host.indptr.dtype == np.int64 and host.format == "csr"
    np.testing.assert_allclose(host.toarray(), normalize_ref([[3, 0, 1], [0, 0, 0], [4, 0, 2]], 0), rtol=1e-6)
    assert host.data[3] == 0.0  # the explicit zero is kept


def test_sparse_empty_and_all_zero(opencl_device):
    for shape in [(0, 0), (0, 5), (5, 0), (3, 4)]:
        for fmt in ("csr", "csc"):
            w = sp.csr_array(shape, dtype=np.float32) if fmt == "csr" else sp.csc_array(shape, dtype=np.float32)
            d = caffe2op.DeviceSparseMatrix.from_scipy(w, opencl_device)
            for axis in (0, 1):
                assert caffe2op.normalize(d, axis=axis).nnz == 0
                assert caffe2op.normalize(w, axis=axis, device=opencl_device).nnz == 0
    zeros = sp.csr_array((np.zeros(3, np.float32), np.array([0, 1, 1]), np.array([0, 2, 3])), shape=(2, 2))
    d = caffe2op.DeviceSparseMatrix.from_scipy(zeros, opencl_device)
    for axis in (0, 1):
        assert_bit_identical(caffe2op.normalize(d, axis=axis).data.get(), np.zeros(3, np.float32))


def test_coo_with_device(opencl_device):
    coo = sp.coo_array((np.array([1.0, 2.0, 2.0]), (np.array([0, 0, 1]), np.array([0, 0, 1]))), shape=(2, 2))
    if not backend_for(opencl_device).info.fp64:
        coo = coo.astype(np.float32)
    for axis in (0, 1):
        result = caffe2op.normalize(coo, axis=axis, device=opencl_device)
        assert result.format == "coo"
        np.testing.assert_allclose(result.toarray(), [[1.0, 0.0], [0.0, 1.0]])


def test_bad_sparse_input_on_device(opencl_device):
    backend = backend_for(opencl_device)
    w = sp.csr_array(np.array([[3.0, 0.0], [4.0, 1.0]], np.float32))
    d = caffe2op.DeviceSparseMatrix.from_scipy(w, opencl_device)
    before = d.data.get()
    with pytest.raises(caffe2op.SchemaError, match="Normalize: axis 2 is out of range for an input of rank 2"):
        caffe2op.normalize(d, axis=2, out=d)
    with pytest.raises(TypeError, match="Normalize: out must be a DeviceSparseMatrix"):
        caffe2op.normalize(d, out=w)
    csc = caffe2op.DeviceSparseMatrix.from_scipy(w.tocsc(), opencl_device)
    with pytest.raises(TypeError, match=r"Normalize: out must have the format of the input \(csr\)"):
        caffe2op.normalize(d, out=csc)
    other = caffe2op.DeviceSparseMatrix.from_scipy(sp.csr_array(np.eye(2, dtype=np.float32)), opencl_device)
    with pytest.raises(ValueError, match="Normalize: out must have the sparsity structure of the input"):
        caffe2op.normalize(d, out=other)
    half = caffe2op.DeviceSparseMatrix(
        (backend.from_host(w.data.astype(np.float16)), d.indices, d.indptr), w.shape, format="csr"
    )
    with pytest.raises(TypeError, match="Normalize: out must have dtype float32"):
        caffe2op.normalize(d, out=half)
    with pytest.raises(ValueError, match="Normalize: W lives on OPENCL.* but device='cpu' was asked for"):
        caffe2op.normalize(d, device="cpu")
    assert_bit_identical(d.data.get(), before)
    assert_bit_identical(other.data.get(), np.ones(2, np.float32))


def test_device_sparse_matrix_checks_its_arrays(opencl_device):
    backend = backend_for(opencl_device)
    data = backend.from_host(np.ones(3, np.float32))
    indices = backend.from_host(np.array([0, 1, 1], np.int64))
    indptr = backend.from_host(np.array([0, 2, 3], np.int64))
    make = caffe2op.DeviceSparseMatrix
    assert make((data, indices, indptr), (2, 2)).nnz == 3
    with pytest.raises(ValueError, match="format must be 'csr' or 'csc', got 'coo'"):
        make((data, indices, indptr), (2, 2), format="coo")
    with pytest.raises(TypeError, match="data must be float16, float32 or float64, got int64"):
        make((indices, indices, indptr), (2, 2))
    with pytest.raises(TypeError, match="indices must be int32 or int64, got float32"):
        make((data, data, indptr), (2, 2))
    with pytest.raises(TypeError, match="indptr must be a pyopencl.array.Array, got ndarray"):
        make((data, indices, np.array([0, 2, 3])), (2, 2))
    with pytest.raises(ValueError, match="indices\\[1\\] = 1 is out of range for 1 columns"):
        make((data, indices, indptr), (2, 1))
    with pytest.raises(ValueError, match="indptr must have 4 entries"):
        make((data, indices, indptr), (3, 2))
    bad_ptr = backend.from_host(np.array([0, 3, 2], np.int64))
    with pytest.raises(ValueError, match="indptr is not a valid index pointer"):
        make((data, indices, bad_ptr), (2, 2))
    long_ptr = backend.from_host(np.array([0, 2, 4], np.int64))
    with pytest.raises(ValueError, match="indptr ends at 4 but indices has 3"):
        make((data, indices, long_ptr), (2, 2))
    with pytest.raises(ValueError, match="shape must be two non-negative ints"):
        make((data, indices, indptr), (2, -1))
    with pytest.raises(TypeError, match="expected a scipy.sparse CSR or CSC matrix.*tocsr"):
        caffe2op.DeviceSparseMatrix.from_scipy(sp.coo_array(np.eye(2)), opencl_device)
    with pytest.raises(ValueError, match="device must be an OpenCL or CUDA device"):
        caffe2op.DeviceSparseMatrix.from_scipy(sp.csr_array(np.eye(2)), "cpu")
    with pytest.raises(TypeError, match="data must be float16, float32 or float64"):
        caffe2op.DeviceSparseMatrix.from_scipy(sp.csr_array(np.eye(2, dtype=np.int64)), opencl_device)


def test_sparse_duplicates_in_both_directions(opencl_device):
    """Duplicate entries: a vector's norm is that of its summed entries; every stored part gets its scale."""
    _skip_without_fp64(opencl_device, np.float64)
    # row 0 holds (0, 1) twice (1 + 2) and (0, 0); column 1 holds rows 0, 0, 2
    data = np.array([4.0, 1.0, 2.0, 5.0, 6.0])
    indices = np.array([0, 1, 1, 0, 1])
    indptr = np.array([0, 3, 4, 5])
    w = sp.csr_array((data, indices, indptr), shape=(3, 2))
    assert not w.has_canonical_format
    for axis in (0, 1):
        d = caffe2op.DeviceSparseMatrix.from_scipy(w, opencl_device)
        caffe2op.normalize(d, axis=axis, out=d)
        np.testing.assert_allclose(d.data.get(), _sparse_reference(w, axis), rtol=1e-14)
        np.testing.assert_allclose(caffe2op.normalize(w, axis=axis).data, _sparse_reference(w, axis), rtol=1e-14)


# --- offsets past 2**31 -------------------------------------------------------------------------

LARGE_BODY = """
    w = table
    special = np.arange(width, dtype=np.float16)
    w[last : rows].set(special.reshape(1, width))
    # rows (axis 1): the work-group kernel; the last row starts past element 2**31
    # In place needs the functional form (the operator is not in place, as in Caffe2); same kernels.
    caffe2op.normalize(w, axis=1, out=w)
    expected = special.astype(np.float64) / np.linalg.norm(special.astype(np.float64))
    np.testing.assert_allclose(w[last:rows].get()[0].astype(np.float64), expected, rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(w[0:1].get()[0].astype(np.float64), 0.25, rtol=1e-3)
    # columns: seen as (rows / 4, 4, width), axis 1, the columns kernel reaches blocks past
    # element 2**31 (short columns, so that the float sums of float16 data stay exact)
    view = w.reshape(rows // 4, 4, width)
    caffe2op.normalize(view, axis=1, out=view)
    block = w[last - 3 : rows].get().astype(np.float64)
    column = np.vstack([np.full((3, width), 0.25), expected])
    np.testing.assert_allclose(block, column / np.linalg.norm(column, axis=0), rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(w[0:4].get().astype(np.float64), 0.5, rtol=1e-3)
    print("OK", w.size)
    """


@pytest.mark.slow  # fills a 4 GiB float16 array and normalises it twice in a subprocess
def test_dense_array_past_2_31_elements(opencl_device):
    run_large_table_script(opencl_device, LARGE_BODY)
