# SPDX-License-Identifier: BSD-3-Clause
"""ZeroGradient, StopGradient, ConstantFill, Sum and the copy operators on the CPU and every OpenCL device."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import caffe2op
from caffe2op.devices import backend_for

from .._helpers import assert_allclose_dtype, assert_bit_identical
from ._device_helpers import is_cpu, run_op

ALL_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64, np.bool_]


def _skip_without_fp64(device, dtype):
    if np.dtype(dtype) == np.float64 and not is_cpu(device) and not backend_for(device).info.fp64:
        pytest.skip("device without fp64")


def _random(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


# --- ZeroGradient ----------------------------------------------------------------------


def test_zero_gradient(device):
    """Reads nothing and writes nothing; the input blob is unchanged and no blob appears."""
    x = np.arange(5.0, dtype=np.float32)
    ws, _ = run_op(device, "ZeroGradient", {"x": x}, "x", [])
    assert ws.blobs() == ["x"]
    assert_bit_identical(ws.fetch_blob("x"), x)
    assert caffe2op.zero_gradient(backend_for(device).from_host(x)) is None


# --- StopGradient ----------------------------------------------------------------------


@given(
    dtype=st.sampled_from(ALL_DTYPES),
    shape=st.sampled_from([(), (0,), (7,), (3, 0, 2), (33, 5)]),
    seed=st.integers(0, 99),
)
def test_stop_gradient_copies(device, dtype, shape, seed):
    """Out of place: a new blob with the same bits on the same device; the input is untouched."""
    _skip_without_fp64(device, dtype)
    x = _random(np.random.default_rng(seed), shape, dtype)
    ws, out = run_op(device, "StopGradient", {"x": x}, "x", "y")
    assert_bit_identical(out["y"], x)
    assert ws.blob_device("y") == ws.blob_device("x")
    assert ws._blobs["y"] is not ws._blobs["x"]
    assert_bit_identical(ws.fetch_blob("x"), x)


def test_stop_gradient_in_place_and_reuse(device):
    """In place does nothing (same object); out of place reuses a matching output blob."""
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    ws = caffe2op.Workspace()
    ws.feed_blob("x", x, device)
    before = ws._blobs["x"]
    ws.run_operator_once(caffe2op.create_operator("StopGradient", "x", "x", device_option=device))
    assert ws._blobs["x"] is before
    ws.feed_blob("y", np.zeros((2, 3), np.float32), device)
    target = ws._blobs["y"]
    ws.run_operator_once(caffe2op.create_operator("StopGradient", "x", "y", device_option=device))
    assert ws._blobs["y"] is target
    assert_bit_identical(ws.fetch_blob("y"), x)


def test_stop_gradient_functional_on_device(opencl_device):
    """Device arrays stay on the device; host data with device= comes back as NumPy."""
    backend = backend_for(opencl_device)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    dx = backend.from_host(x)
    dy = caffe2op.stop_gradient(dx)
    assert backend.owns(dy) and dy is not dx
    assert_bit_identical(dy.get(), x)
    assert caffe2op.stop_gradient(dx, out=dx) is dx
    out = backend.empty((3, 4), np.float32)
    assert caffe2op.stop_gradient(dx, out=out) is out
    assert_bit_identical(out.get(), x)
    host = caffe2op.stop_gradient(x, device=opencl_device)
    assert isinstance(host, np.ndarray) and not np.shares_memory(host, x)
    assert_bit_identical(host, x)
    host_out = np.empty_like(x)
    assert caffe2op.stop_gradient(x, out=host_out, device="opencl") is host_out
    assert_bit_identical(host_out, x)
    with pytest.raises(TypeError, match="StopGradient: out must have dtype float32"):
        caffe2op.stop_gradient(dx, out=backend.empty((3, 4), np.float64))
    with pytest.raises(ValueError, match=r"StopGradient: out must have shape \(3, 4\)"):
        caffe2op.stop_gradient(dx, out=backend.empty((4, 3), np.float32))
    with pytest.raises(TypeError, match="out must be a pyopencl array"):
        caffe2op.stop_gradient(dx, out=np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match="x lives on OPENCL"):
        caffe2op.stop_gradient(dx, device="cpu")


# --- ConstantFill ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "dtype"),
    [
        (dict(value=1.5), np.float32),
        (dict(value=0.1, dtype="float16"), np.float16),
        (dict(value=-2.25, dtype="float64"), np.float64),
        (dict(value=7), np.int64),
        (dict(value=-3, dtype=caffe2op.DataType.INT8), np.int8),
        (dict(value=True, dtype="bool"), np.bool_),
        (dict(value=2**64 - 1, dtype="uint64"), np.uint64),
        (dict(), np.float32),
    ],
)
def test_constant_fill_dtypes(device, args, dtype):
    """Same values and dtype as NumPy's full, bit for bit (bit-pattern fill: float64 needs no fp64)."""
    ws, out = run_op(device, "ConstantFill", {"x": np.zeros((3, 5), np.float16)}, "x", "y", **args)
    assert_bit_identical(out["y"], np.full((3, 5), args.get("value", 0.0), dtype=dtype))
    assert ws.blob_device("y") == ws.blob_device("x")


def test_constant_fill_shapes(device):
    """shape, extra_shape, input_as_shape (read from a device blob) and empty outputs."""
    _, out = run_op(device, "ConstantFill", {}, [], "y", shape=[2, 0, 3], value=1.0)
    assert out["y"].shape == (2, 0, 3)
    _, out = run_op(device, "ConstantFill", {"x": np.ones((2, 2))}, "x", "y", extra_shape=[3], value=4.0)
    assert_bit_identical(out["y"], np.full((2, 2, 3), 4.0, np.float32))
    _, out = run_op(device, "ConstantFill", {"s": np.array([4, 1])}, "s", "y", input_as_shape=True, value=2)
    assert_bit_identical(out["y"], np.full((4, 1), 2, np.int64))


def test_zero_gradient_gradient_op_on_device(device):
    """ZeroGradient's gradient, ConstantFill(X) -> X_grad (value 0.0), is float32 zeros on X's device."""
    ws, out = run_op(device, "ConstantFill", {"X": np.ones((2, 3), np.float16)}, "X", "X_grad", value=0.0)
    assert_bit_identical(out["X_grad"], np.zeros((2, 3), np.float32))
    assert ws.blob_device("X_grad") == ws.blob_device("X")


# --- Sum -------------------------------------------------------------------------------


@given(
    dtype=st.sampled_from(ALL_DTYPES),
    n=st.integers(1, 4),
    shape=st.sampled_from([(0,), (5,), (4, 33)]),
    seed=st.integers(0, 99),
)
def test_sum_matches_numpy(device, dtype, n, shape, seed):
    """Left-to-right sums, as NumPy computes them (integer wrap-around, float16 rounding, bool or)."""
    _skip_without_fp64(device, dtype)
    rng = np.random.default_rng(seed)
    xs = [_random(rng, shape, dtype) for _ in range(n)]
    expected = xs[0].copy()
    with np.errstate(over="ignore"):
        for x in xs[1:]:
            expected = expected + x
    names = [f"x{k}" for k in range(n)]
    _, out = run_op(device, "Sum", dict(zip(names, xs, strict=True)), names, "s")
    if np.dtype(dtype).kind == "f":
        assert_allclose_dtype(out["s"], expected, rtol=0, atol=0)
    else:
        assert_bit_identical(out["s"], expected)


def test_sum_in_place_and_errors(device):
    """In place on input 0; mismatched shapes (ValueError) and dtypes (TypeError)."""
    a, b = np.arange(4.0, dtype=np.float32), np.ones(4, np.float32)
    ws, out = run_op(device, "Sum", {"a": a, "b": b}, ["a", "b", "b"], "a")
    assert_bit_identical(out["a"], a + 2)
    ws.feed_blob("c", np.ones(3, np.float32), device)
    with pytest.raises(ValueError, match=r"Sum: input 1 has shape \(3,\) but input 0 has shape \(4,\)"):
        ws.run_operator_once(caffe2op.create_operator("Sum", ["a", "c"], "d", device_option=device))
    ws.feed_blob("e", np.ones(4, np.int32), device)
    with pytest.raises(TypeError, match="Sum: input 1 has dtype int32 but input 0 has dtype float32"):
        ws.run_operator_once(caffe2op.create_operator("Sum", ["a", "e"], "d", device_option=device))
    assert not ws.has_blob("d")


# --- copy operators ----------------------------------------------------------------------


def test_copy_cpu_to_gpu_and_back(opencl_device):
    """CopyCPUToGPU puts a CPU blob on the operator's device; CopyGPUToCPU brings it back; the net runs on device."""
    x = np.arange(12, dtype=np.float32).reshape(4, 3) * 10
    ws = caffe2op.Workspace()
    ws.feed_blob("w_cpu", x)
    ws.feed_blob("i_cpu", np.array([0, 3, 3]))
    net = caffe2op.Net("moves")
    with caffe2op.device_scope(opencl_device):
        net.CopyCPUToGPU("w_cpu", "w")
        net.CopyCPUToGPU("i_cpu", "i")
        net.SparseNormalize(["w", "i"], "w")
        net.CopyGPUToCPU("w", "w_back")
    ws.run_net(net)
    assert ws.blob_device("w") == opencl_device
    assert ws.blob_device("w_back") == caffe2op.DeviceOption()
    assert isinstance(ws._blobs["w_back"], np.ndarray)
    expected = caffe2op.sparse_normalize(x.copy(), [0, 3])
    assert_allclose_dtype(ws.fetch_blob("w_back"), expected)
    assert_bit_identical(ws.fetch_blob("w_cpu"), x)


def test_copy_operators_check_devices(opencl_device):
    """Each copy operator says which side its input must be on."""
    ws = caffe2op.Workspace()
    ws.feed_blob("h", np.ones(2))
    ws.feed_blob("d", np.ones(2), opencl_device)
    with pytest.raises(ValueError, match=r"CopyCPUToGPU: input 0 'd' must live on the CPU, but it lives on OPENCL"):
        ws.run_operator_once(caffe2op.create_operator("CopyCPUToGPU", "d", "z", device_option=opencl_device))
    with pytest.raises(ValueError, match=r"CopyGPUToCPU: input 0 'h' lives on CPU but the operator runs on OPENCL"):
        ws.run_operator_once(caffe2op.create_operator("CopyGPUToCPU", "h", "z", device_option=opencl_device))
    with pytest.raises(caffe2op.UnknownOperatorError, match="CopyCPUToGPU has no implementation for CPU"):
        ws.run_operator_once(caffe2op.create_operator("CopyCPUToGPU", "h", "z"))
    with pytest.raises(caffe2op.SchemaError):
        caffe2op.create_operator("CopyCPUToGPU", "h", "h", device_option=opencl_device)
    assert not ws.has_blob("z")


def test_copy_and_ensure_cpu_output(device):
    """Copy stays on the operator's device; EnsureCPUOutput always gives a NumPy blob."""
    x = np.arange(5, dtype=np.int32)
    ws, out = run_op(device, "Copy", {"x": x}, "x", "y")
    assert_bit_identical(out["y"], x)
    assert ws.blob_device("y") == ws.blob_device("x") and ws._blobs["y"] is not ws._blobs["x"]
    ws.run_operator_once(caffe2op.create_operator("EnsureCPUOutput", "x", "z", device_option=device))
    assert isinstance(ws._blobs["z"], np.ndarray)
    assert_bit_identical(ws.fetch_blob("z"), x)


def test_copy_gradients_go_back_the_other_way(opencl_device):
    """CopyCPUToGPU's gradient is CopyGPUToCPU and vice versa; the generated net runs across devices."""
    cpu_to_gpu = caffe2op.create_operator("CopyCPUToGPU", "x", "x_gpu", device_option=opencl_device)
    on_device = caffe2op.create_operator("Sum", "x_gpu", "y_gpu", device_option=opencl_device)
    gpu_to_cpu = caffe2op.create_operator("CopyGPUToCPU", "y_gpu", "y", device_option=opencl_device)
    forward = [cpu_to_gpu, on_device, gpu_to_cpu]
    grad_ops, grad_map = caffe2op.get_backward_pass(forward, {"y": "y_grad"})
    assert [op.type for op in grad_ops] == ["CopyCPUToGPU", "CopyGPUToCPU"]  # Sum passes its gradient through
    assert grad_map == {"y": "y_grad", "y_gpu": "y_gpu_grad", "x_gpu": "y_gpu_grad", "x": "x_grad"}
    assert all(op.device_option == opencl_device for op in grad_ops)
    ws = caffe2op.Workspace()
    ws.feed_blob("y_grad", np.arange(4, dtype=np.float32))
    for op in grad_ops:
        ws.run_operator_once(op)
    assert ws.blob_device("y_gpu_grad") == opencl_device and ws.blob_device("x_grad") == caffe2op.DeviceOption()
    assert_bit_identical(ws.fetch_blob("x_grad"), np.arange(4, dtype=np.float32))
    cpu_to_gpu_to_cpu = [
        cpu_to_gpu,
        caffe2op.create_operator("CopyGPUToCPU", "x_gpu", "y", device_option=opencl_device),
    ]
    sparse_ops, sparse_map = caffe2op.get_backward_pass(cpu_to_gpu_to_cpu, {"y": caffe2op.GradientSlice("y_i", "y_v")})
    assert [op.type for op in sparse_ops] == ["CopyCPUToGPU"] * 2 + ["CopyGPUToCPU"] * 2
    assert sparse_map["x"] == caffe2op.GradientSlice("x_grad_indices", "x_grad_values")
    # Caffe2 copy_op.cc GetCopyGradient: CopyOnDeviceLike([GO(0), I(0)]) -> GI(0).
    copy_ops, _ = caffe2op.get_gradient_defs(caffe2op.create_operator("Copy", "a", "b"), ["b_grad"])
    assert [(op.type, op.inputs, op.outputs) for op in copy_ops] == [("CopyOnDeviceLike", ["b_grad", "a"], ["a_grad"])]


def test_copy_on_device_like_copies_onto_the_device_of_its_second_input(opencl_device):
    ws = caffe2op.Workspace()
    ws.feed_blob("g_dev", np.arange(3, dtype=np.float32), opencl_device)
    ws.feed_blob("x_cpu", np.zeros(3, np.float32))
    ws.feed_blob("g_cpu", np.arange(3, dtype=np.float32) + 1)
    ws.feed_blob("x_dev", np.zeros(3, np.float32), opencl_device)
    for device in (None, opencl_device):  # the operator's own device does not matter
        ws.run_operator_once(
            caffe2op.create_operator("CopyOnDeviceLike", ["g_dev", "x_cpu"], "to_cpu", device_option=device)
        )
        ws.run_operator_once(
            caffe2op.create_operator("CopyOnDeviceLike", ["g_cpu", "x_dev"], "to_dev", device_option=device)
        )
        ws.run_operator_once(
            caffe2op.create_operator("CopyOnDeviceLike", ["g_dev", "x_dev"], "same", device_option=device)
        )
        assert ws.blob_device("to_cpu") == caffe2op.DeviceOption()
        assert ws.blob_device("to_dev") == opencl_device and ws.blob_device("same") == opencl_device
        assert_bit_identical(ws.fetch_blob("to_cpu"), np.arange(3, dtype=np.float32))
        assert_bit_identical(ws.fetch_blob("to_dev"), np.arange(3, dtype=np.float32) + 1)
        assert_bit_identical(ws.fetch_blob("same"), np.arange(3, dtype=np.float32))
    # Copy's gradient run through a net: the input's gradient lands on the input's device.
    net = caffe2op.Net("copy_grad")
    net.Copy("x_dev", "y_dev", device_option=opencl_device)
    net.add_gradient_operators({"y_dev": "g_dev"})
    ws.run_net(net)
    assert ws.blob_device("x_dev_grad") == opencl_device
    assert_bit_identical(ws.fetch_blob("x_dev_grad"), np.arange(3, dtype=np.float32))
