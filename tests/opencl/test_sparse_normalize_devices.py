# SPDX-License-Identifier: BSD-3-Clause
"""SparseNormalize and Float16SparseNormalize on the CPU and every OpenCL device.

Reference checks against the NumPy formula, CPU-vs-OpenCL comparisons on
random tables (duplicates, empty indices, zero rows, rows exactly at
``norm``), and every bad input leaving the table bit-identical.
"""

import dataclasses
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import caffe2op
from caffe2op.devices import backend_for
from caffe2op.ops.sparse_normalize import opencl_impl as sparse_normalize_module

from .._helpers import assert_allclose_dtype, assert_bit_identical
from .._reference import sparse_normalize_ref
from ._device_helpers import is_cpu, on_device, run_op

DTYPES = [np.float16, np.float32, np.float64]


@st.composite
def tables(draw):
    """(param, indices, use_max_norm, norm) with duplicates, zero rows and rows exactly at norm."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    n_rows = draw(st.integers(0, 40))
    row_shape = draw(st.sampled_from([(), (1,), (2,), (7,), (3, 5), (64,), (300,)]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    param = (rng.standard_normal((n_rows, *row_shape)) * draw(st.sampled_from([0.1, 1.0, 4.0]))).astype(dtype)
    rows = param.reshape(n_rows, int(np.prod(row_shape, dtype=np.int64)))
    use_max_norm = draw(st.booleans())
    norm = draw(st.sampled_from([0.0, 0.5, 1.0, 2.5, 5.0]))
    if n_rows:
        special = draw(st.lists(st.integers(0, n_rows - 1), max_size=4))
        for i in special:
            rows[i] = 0
            if rows.shape[1] >= 2 and i % 2:
                rows[i, :2] = (3, 4)  # norm exactly 5 in every dtype and summation order
        n_idx = draw(st.integers(0, 3 * n_rows))
        indices = rng.integers(0, n_rows, n_idx)
        if n_idx and draw(st.booleans()):
            indices = np.concatenate([indices, indices[: n_idx // 2 + 1]])  # force duplicates
    else:
        indices = np.zeros(0, np.int64)
    index_dtype = draw(st.sampled_from([np.int32, np.int64]))
    if indices.size % 2 == 0 and indices.size and draw(st.booleans()):
        indices = indices.reshape(2, -1)
    return param, indices.astype(index_dtype), use_max_norm, norm


@given(case=tables())
def test_reference(device, case):
    """Workspace operator on every device against the independent NumPy reference."""
    param, indices, use_max_norm, norm = case
    if param.dtype == np.float64 and not is_cpu(device) and not backend_for(device).info.fp64:
        pytest.skip("device without fp64")
    _, out = run_op(
        device, "SparseNormalize", {"w": param, "i": indices}, ["w", "i"], "w", use_max_norm=use_max_norm, norm=norm
    )
    assert_allclose_dtype(out["w"], sparse_normalize_ref(param, indices, use_max_norm, norm))


def gpu_launch_shape(enabled):
    """Run the GPU launch shape (work-group per row, local-memory reduction) on CPU devices too."""
    return mock.patch.object(sparse_normalize_module, "_CPU_SHAPE_ON_CPU_DEVICES", not enabled)


@given(case=tables(), gpu_shape=st.booleans())
def test_opencl_matches_cpu(opencl_device, case, gpu_shape):
    """The OpenCL kernel gives the CPU kernel's results (and twice the same bits), in both launch shapes."""
    param, indices, use_max_norm, norm = case
    if param.dtype == np.float64 and not backend_for(opencl_device).info.fp64:
        pytest.skip("device without fp64")
    cpu = caffe2op.sparse_normalize(param.copy(), indices, use_max_norm=use_max_norm, norm=norm)
    with gpu_launch_shape(gpu_shape):
        first = caffe2op.sparse_normalize(
            param.copy(), indices, use_max_norm=use_max_norm, norm=norm, device=opencl_device
        )
        again = caffe2op.sparse_normalize(
            param.copy(), indices, use_max_norm=use_max_norm, norm=norm, device=opencl_device
        )
    assert_allclose_dtype(first, cpu)
    assert_bit_identical(first, again)


@pytest.mark.parametrize("gpu_shape", [False, True], ids=["native-shape", "gpu-shape"])
def test_duplicates_are_deterministic(opencl_device, gpu_shape):
    """Many repeats of few rows (more positions than work-groups), device indices: same bits every run."""
    rng = np.random.default_rng(7)
    param = (rng.standard_normal((64, 300)) * 5).astype(np.float32)
    indices = rng.integers(0, 8, 200_000).astype(np.int32)
    backend = backend_for(opencl_device)
    results = []
    for _ in range(3):
        table = backend.from_host(param)
        with gpu_launch_shape(gpu_shape):
            caffe2op.sparse_normalize(table, backend.from_host(indices), use_max_norm=False, norm=2.0)
        results.append(table.get())
    for other in results[1:]:
        assert_bit_identical(results[0], other)
    assert_allclose_dtype(results[0], sparse_normalize_ref(param, indices, False, 2.0))


def test_rows_exactly_at_norm_are_kept(device):
    """Caffe2's ``n <= norm`` skip: a [3, 4] row with norm 5 is bit-identical afterwards."""
    param = np.array([[3.0, 4.0], [6.0, 8.0], [0.0, 0.0]], dtype=np.float32)
    _, out = run_op(device, "SparseNormalize", {"w": param, "i": np.array([0, 1, 2, 1])}, ["w", "i"], "w", norm=5.0)
    assert_bit_identical(out["w"][[0, 2]], param[[0, 2]])
    assert_allclose_dtype(out["w"][1], [3.0, 4.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_float16_operator_and_dtypes(device, dtype):
    """Float16SparseNormalize takes float16 only; SparseNormalize takes all three float dtypes."""
    param = np.array([[3.0, 4.0], [0.3, 0.4]], dtype=dtype)
    if dtype == np.float64 and not is_cpu(device) and not backend_for(device).info.fp64:
        pytest.skip("device without fp64")
    _, out = run_op(device, "SparseNormalize", {"w": param, "i": np.array([0, 1])}, ["w", "i"], "w")
    assert_allclose_dtype(out["w"], [[0.6, 0.8], [0.3, 0.4]])
    if dtype == np.float16:
        _, out = run_op(device, "Float16SparseNormalize", {"w": param, "i": np.array([0])}, ["w", "i"], "w")
        assert_allclose_dtype(out["w"], [[0.6, 0.8], [0.3, 0.4]])
    else:
        with pytest.raises(TypeError, match="Float16SparseNormalize: param must be float16"):
            run_op(device, "Float16SparseNormalize", {"w": param, "i": np.array([0])}, ["w", "i"], "w")


def test_three_input_form_and_empty_indices(device):
    """The optional grad input is ignored; empty indices change nothing."""
    param = np.arange(12, dtype=np.float32).reshape(4, 3)
    feeds = {"w": param, "i": np.zeros(0, np.int64), "g": np.ones((0, 3), np.float32)}
    _, out = run_op(device, "SparseNormalize", feeds, ["w", "i", "g"], "w")
    assert_bit_identical(out["w"], param)


# --- bad input: nothing is written ---------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 10, 2**31 - 1])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_out_of_range_device_indices(device, bad, index_dtype):
    """Checked before any row is written, wherever the indices live."""
    param = np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32) * 3
    indices = np.array([0, 1, bad, 2, bad], dtype=index_dtype)
    ws = caffe2op.Workspace()
    ws.feed_blob("w", param, device)
    ws.feed_blob("i", indices, device)
    with pytest.raises(
        IndexError, match=rf"index {bad} at position 2 of indices is out of range for param with 10 rows"
    ):
        ws.run_operator_once(caffe2op.create_operator("SparseNormalize", ["w", "i"], "w", device_option=device))
    assert_bit_identical(ws.fetch_blob("w"), param)


def test_out_of_range_functional(opencl_device):
    """Device table with host or device indices, and NumPy table with device=: IndexError, bit-identical."""
    param = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float16) * 4
    backend = backend_for(opencl_device)
    for indices in ([0, 5], backend.from_host(np.array([0, -3]))):
        table = backend.from_host(param)
        with pytest.raises(IndexError, match="out of range for param with 5 rows"):
            caffe2op.sparse_normalize(table, indices)
        assert_bit_identical(table.get(), param)
    host = param.copy()
    with pytest.raises(IndexError, match="index 7 at position 1"):
        caffe2op.sparse_normalize(host, [1, 7], device=opencl_device)
    assert_bit_identical(host, param)


def test_blob_on_another_device(opencl_device):
    """An OpenCL operator given a CPU blob (and the reverse) names the blob and both devices."""
    ws = caffe2op.Workspace()
    ws.feed_blob("w", np.ones((3, 2), np.float32))
    ws.feed_blob("i", np.array([0]), opencl_device)
    with pytest.raises(ValueError, match=r"input 0 'w' lives on CPU but the operator runs on OPENCL:\d"):
        ws.run_operator_once(caffe2op.create_operator("SparseNormalize", ["w", "i"], "w", device_option=opencl_device))
    with pytest.raises(ValueError, match=r"input 1 'i' lives on OPENCL:\d.* but the operator runs on CPU"):
        ws.run_operator_once(caffe2op.create_operator("SparseNormalize", ["w", "i"], "w"))
    assert_bit_identical(ws.fetch_blob("w"), np.ones((3, 2), np.float32))


def test_float64_without_fp64(opencl_device, monkeypatch):
    """A device without cl_khr_fp64 (simulated) refuses float64 tables with a TypeError, writing nothing."""
    backend = backend_for(opencl_device)
    monkeypatch.setattr(backend, "info", dataclasses.replace(backend.info, fp64=False))
    param = np.array([[3.0, 4.0]])
    ws = caffe2op.Workspace()
    ws.feed_blob("w", param, opencl_device)
    ws.feed_blob("i", np.array([0]), opencl_device)
    with pytest.raises(TypeError, match="float64 needs an OpenCL device with double precision"):
        ws.run_operator_once(caffe2op.create_operator("SparseNormalize", ["w", "i"], "w", device_option=opencl_device))
    assert_bit_identical(ws.fetch_blob("w"), param)
    host = param.copy()
    with pytest.raises(TypeError, match="cl_khr_fp64"):
        caffe2op.sparse_normalize(host, [0], device=opencl_device)
    assert_bit_identical(host, param)
    # float32 still works, accumulating in float
    ws.feed_blob("w32", param.astype(np.float32), opencl_device)
    ws.run_operator_once(caffe2op.create_operator("SparseNormalize", ["w32", "i"], "w32", device_option=opencl_device))
    assert_allclose_dtype(ws.fetch_blob("w32"), [[0.6, 0.8]])


def test_bad_arguments_on_device(opencl_device):
    """Typed errors naming the operator; the device table is unchanged."""
    backend = backend_for(opencl_device)
    param = np.ones((4, 2), np.float32)
    table = backend.from_host(param)
    with pytest.raises(TypeError, match="SparseNormalize: indices must be integers"):
        caffe2op.sparse_normalize(table, backend.from_host(np.array([0.0])))
    with pytest.raises(TypeError, match="SparseNormalize: indices must be integers"):
        caffe2op.sparse_normalize(table, [0.5])
    with pytest.raises(ValueError, match="norm"):
        caffe2op.sparse_normalize(table, [0], norm=-1.0)
    with pytest.raises(TypeError, match="param must be float16, float32 or float64"):
        caffe2op.sparse_normalize(backend.from_host(np.ones((2, 2), np.int32)), [0])
    with pytest.raises(ValueError, match="C-contiguous"):
        caffe2op.sparse_normalize(backend.from_host(np.ones((4, 4), np.float32))[:, ::2], [0])
    with pytest.raises(ValueError, match="param lives on OPENCL"):
        caffe2op.sparse_normalize(table, [0], device="cpu")
    assert_bit_identical(table.get(), param)


def test_indices_from_another_context(opencl_device):
    """Indices in a different pyopencl context than the table are refused."""
    cl = pytest.importorskip("pyopencl")
    import pyopencl.array as cla

    backend = backend_for(opencl_device)
    queue = cl.CommandQueue(cl.Context([backend.device]))
    table = backend.from_host(np.ones((3, 2), np.float32))
    with pytest.raises(
        ValueError, match="indices live on a caller's own pyopencl context on OPENCL.* but param lives on"
    ):
        caffe2op.sparse_normalize(table, cla.to_device(queue, np.array([0])))


def test_caller_arrays_run_on_their_queue(opencl_device):
    """Arrays of a caller's own context and queue work in place, views with offsets included."""
    cl = pytest.importorskip("pyopencl")
    import pyopencl.array as cla

    backend = backend_for(opencl_device)
    queue = cl.CommandQueue(cl.Context([backend.device]))
    param = np.arange(1, 41, dtype=np.float32).reshape(10, 4)
    table = cla.to_device(queue, param)
    assert caffe2op.sparse_normalize(table, cla.to_device(queue, np.array([1, 1, 3]))) is table
    view = table[5:]  # a view starting at an offset into the buffer
    caffe2op.sparse_normalize(view, np.array([0, 2]), use_max_norm=False, norm=2.0)
    expected = sparse_normalize_ref(param, [1, 3])
    expected = sparse_normalize_ref(expected, [5, 7], use_max_norm=False, norm=2.0)
    assert_allclose_dtype(table.get(), expected)


def test_numpy_param_in_place_through_device(opencl_device):
    """device= copies in and out: the NumPy param (even a non-contiguous one) is updated in place."""
    base = np.arange(1, 49, dtype=np.float64).reshape(6, 8)
    if not backend_for(opencl_device).info.fp64:
        base = base.astype(np.float32)
    param = base[:, ::2]
    expected = sparse_normalize_ref(param, [0, 4])
    assert caffe2op.sparse_normalize(param, [0, 4, 0], device=opencl_device) is param
    assert_allclose_dtype(param, expected)
    assert_bit_identical(base[:, 1::2], np.arange(1, 49, dtype=base.dtype).reshape(6, 8)[:, 1::2])


def test_cuda_alias_and_missing_cuda():
    """DeviceType.CUDA means an NVIDIA OpenCL platform's devices; without one the error lists what exists."""
    cuda = [d for d in caffe2op.opencl_devices() if d.cuda_index is not None]
    option = caffe2op.DeviceOption(caffe2op.DeviceType.CUDA, len(cuda))
    with pytest.raises(RuntimeError, match=r"no CUDA device .* number \d+.*(available|no OpenCL device)"):
        caffe2op.sparse_normalize(np.ones((2, 2), np.float32), [0], device=option)
    if cuda:
        param = np.array([[3.0, 4.0]], np.float32)
        _, out = run_op(
            caffe2op.DeviceOption(caffe2op.DeviceType.CUDA, 0),
            "SparseNormalize",
            {"w": param, "i": np.array([0])},
            ["w", "i"],
            "w",
        )
        assert_allclose_dtype(out["w"], [[0.6, 0.8]])


def test_cpu_path_unchanged(device):
    """device='cpu' and None give the CPU kernel; on_device copies work for the helpers."""
    param = np.array([[3.0, 4.0]], np.float32)
    assert caffe2op.sparse_normalize(param, [0], device="cpu") is param
    assert_allclose_dtype(param, [[0.6, 0.8]])
    value = on_device(device, param)
    assert backend_for(device).owns(value)
