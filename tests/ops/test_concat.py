# SPDX-License-Identifier: BSD-3-Clause
"""Concat on the CPU and every OpenCL device: against an independent reference, split_info, add_axis, bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import caffe2op
from tests._helpers import assert_bit_identical

DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_]


def concat_ref(arrays, axis):
    """Concatenation by writing each input into its slot of a preallocated result."""
    ndim = arrays[0].ndim
    axis %= ndim
    sizes = [a.shape[axis] for a in arrays]
    shape = list(arrays[0].shape)
    shape[axis] = sum(sizes)
    out = np.empty(shape, arrays[0].dtype)
    start = 0
    for a, size in zip(arrays, sizes, strict=True):
        index = [slice(None)] * ndim
        index[axis] = slice(start, start + size)
        out[tuple(index)] = a
        start += size
    return out, np.array(sizes, dtype=np.int32)


def stack_ref(arrays, axis):
    """Stacking as concatenation of inputs with a length-1 axis inserted."""
    return concat_ref([np.expand_dims(a, axis) for a in arrays], axis)


def run_concat(arrays, outputs=("out", "split"), device=None, **args):
    ws = caffe2op.Workspace()
    names = [f"x{k}" for k in range(len(arrays))]
    for name, a in zip(names, arrays, strict=True):
        ws.feed_blob(name, a, device)
    ws.run_operator_once(caffe2op.create_operator("Concat", names, list(outputs), device_option=device, **args))
    for o in outputs:
        assert ws.blob_device(o) == (device or caffe2op.DeviceOption())
    return ws, [ws.fetch_blob(o) for o in outputs]


def _skip_float64_without_fp64(device, arrays):
    from caffe2op.devices import backend_for

    if device.device_type != caffe2op.DeviceType.CPU and arrays[0].dtype == np.float64:
        if not backend_for(device).info.fp64:
            pytest.skip("device without fp64")


@st.composite
def concat_cases(draw, add_axis=False):
    ndim = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(DTYPES))
    base = draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim))
    n = draw(st.integers(1, 4))
    axis = draw(st.integers(-(ndim + add_axis), ndim + add_axis - 1))
    arrays = []
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    for _ in range(n):
        shape = list(base)
        if not add_axis:
            shape[axis % ndim] = draw(st.integers(0, 4))
        arrays.append((rng.normal(size=shape) * 10).astype(dtype))
    return arrays, axis


@given(case=concat_cases())
def test_concat_matches_reference(device, case):
    arrays, axis = case
    _skip_float64_without_fp64(device, arrays)
    _, (out, split) = run_concat(arrays, device=device, axis=axis)
    expected, sizes = concat_ref(arrays, axis)
    assert_bit_identical(out, expected)
    assert_bit_identical(split, sizes)


@given(case=concat_cases(add_axis=True))
def test_concat_add_axis_stacks(device, case):
    arrays, axis = case
    _skip_float64_without_fp64(device, arrays)
    _, (out, split) = run_concat(arrays, device=device, axis=axis, add_axis=True)
    expected, _ = stack_ref(arrays, axis)
    assert_bit_identical(out, expected)
    assert_bit_identical(split, np.ones(len(arrays), dtype=np.int32))


def test_default_axis_is_one_as_in_caffe2(device):
    a, b = np.zeros((2, 3), np.float32), np.ones((2, 1), np.float32)
    _, (out, _) = run_concat([a, b], device=device)
    assert out.shape == (2, 4)
    assert caffe2op.get_schema("Concat").arg("axis").default == 1


def test_axis_comes_from_order_when_not_given(device):
    """Caffe2 ``concat_split_op.h``: without ``axis`` the axis is ``GetDimFromOrder(order)`` and add_axis is 0."""
    a, b = np.zeros((2, 3, 4, 5), np.float32), np.ones((2, 3, 4, 2), np.float32)
    _, (out, split) = run_concat([a, b], device=device, order="NHWC")
    assert out.shape == (2, 3, 4, 7) and split.tolist() == [5, 2]
    _, (out, _) = run_concat([a[:, :1], a], device=device, order="NCHW")
    assert out.shape == (2, 4, 4, 5)


def test_add_axis_without_axis_and_axis_with_order_are_refused():
    with pytest.raises(caffe2op.SchemaError, match="either axis or order"):
        caffe2op.create_operator("Concat", ["a", "b"], ["c", "s"], axis=0, order="NHWC")
    with pytest.raises(caffe2op.SchemaError, match="add_axis is read only together with axis"):
        caffe2op.create_operator("Concat", ["a", "b"], ["c", "s"], add_axis=True)
    with pytest.raises(caffe2op.SchemaError, match="'order' must be one of NCHW, NHWC"):
        caffe2op.create_operator("Concat", ["a", "b"], ["c", "s"], order="CHW")


def test_sparse_gradient_style_concat_of_indices_and_values(device):
    _, (idx, split) = run_concat([np.array([3, 1]), np.array([1, 0, 2])], device=device, axis=0)
    assert idx.tolist() == [3, 1, 1, 0, 2] and split.tolist() == [2, 3]
    ones, zeros = np.ones((2, 4), np.float32), np.zeros((3, 4), np.float32)
    _, (vals, _) = run_concat([ones, zeros], outputs=["v", "v_split"], device=device, axis=0)
    assert vals.shape == (5, 4) and vals[:2].all() and not vals[2:].any()


def test_output_blob_memory_is_reused_when_shapes_match(device):
    ws, _ = run_concat([np.ones(2, np.float32), np.ones(3, np.float32)], device=device, axis=0)
    before = ws._blobs["out"]
    ws.feed_blob("x0", np.full(2, 7.0, np.float32), device)
    ws.run_operator_once(
        caffe2op.create_operator("Concat", ["x0", "x1"], ["out", "split"], axis=0, device_option=device)
    )
    assert ws._blobs["out"] is before and ws.fetch_blob("out").tolist() == [7, 7, 1, 1, 1]


def _failing(arrays, exc, match, device=None, **args):
    ws = caffe2op.Workspace()
    names = [f"x{k}" for k in range(len(arrays))]
    for name, a in zip(names, arrays, strict=True):
        ws.feed_blob(name, a, device)
    ws.feed_blob("out", np.array([42.0]), device)
    with pytest.raises(exc, match=match):
        ws.run_operator_once(caffe2op.create_operator("Concat", names, ["out", "split"], device_option=device, **args))
    # Nothing half-written.
    assert_bit_identical(ws.fetch_blob("out"), np.array([42.0]))
    assert not ws.has_blob("split")


def test_mismatched_dtypes_raise_type_error(device):
    _failing(
        [np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float64)],
        TypeError,
        r"Concat: input 1 has dtype float64",
        device=device,
    )


def test_mismatched_shapes_raise_value_error(device):
    _failing(
        [np.zeros((2, 3)), np.zeros((3, 3))],
        ValueError,
        r"Concat: input 1 has shape \(3, 3\).*axis 1",
        axis=1,
        device=device,
    )


def test_mismatched_ranks_raise_value_error(device):
    _failing(
        [np.zeros((2, 3)), np.zeros(3)], ValueError, "input 1 has 1 dimensions but input 0 has 2", axis=0, device=device
    )


@pytest.mark.parametrize("axis", [2, -3, 7])
def test_axis_out_of_range_raises_value_error(device, axis):
    _failing(
        [np.zeros((2, 3)), np.zeros((2, 3))],
        ValueError,
        f"Concat: axis {axis} is out of range",
        axis=axis,
        device=device,
    )


def test_add_axis_needs_identical_shapes(device):
    _failing(
        [np.zeros((2, 3)), np.zeros((2, 4))],
        ValueError,
        "with add_axis every input",
        axis=0,
        add_axis=True,
        device=device,
    )


def test_zero_dimensional_inputs_need_add_axis(device):
    _failing([np.array(1.0), np.array(2.0)], ValueError, "0-d inputs", axis=0, device=device)
    _, (out, _) = run_concat([np.array(1.0), np.array(2.0)], device=device, axis=0, add_axis=True)
    assert out.tolist() == [1.0, 2.0]


def test_schema_counts_and_argument_types():
    with pytest.raises(caffe2op.SchemaError, match="at least 1 input,"):
        caffe2op.create_operator("Concat", [], ["c", "s"])
    # Exactly the result and split_info, as Caffe2's NumOutputs(2).
    with pytest.raises(caffe2op.SchemaError, match="expects 2 outputs, got 3"):
        caffe2op.create_operator("Concat", ["a"], ["c", "s", "t"])
    with pytest.raises(caffe2op.SchemaError, match="expects 2 outputs, got 1"):
        caffe2op.create_operator("Concat", ["a"], "c")
    with pytest.raises(TypeError, match="'axis' must be an int"):
        caffe2op.create_operator("Concat", ["a"], ["c", "s"], axis=0.5)


def test_concat_gradient_is_a_split_by_split_info():
    """Caffe2 ``concat_split_op.cc`` ``GetConcatGradient``: ``Split([GO(0), O(1)]) -> GI(i)``, arguments copied."""
    fwd = caffe2op.create_operator("Concat", ["a", "b"], ["c", "c_split"], axis=0)
    [op], g_input = caffe2op.get_gradient_defs(fwd, ["c_grad", None])
    assert op == caffe2op.OperatorDef(
        type="Split", inputs=["c_grad", "c_split"], outputs=["a_grad", "b_grad"], args={"axis": 0}
    )
    assert op.is_gradient_op and g_input == ["a_grad", "b_grad"]
    assert caffe2op.get_gradient_defs(fwd, [None, None]) == ([], [None, None])
