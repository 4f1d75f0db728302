# SPDX-License-Identifier: BSD-3-Clause
"""Split on the CPU and every OpenCL device (Caffe2's ``concat_split_op.h`` rules), and Concat's gradient through it."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import caffe2op
from tests._helpers import assert_bit_identical


def split_ref(x, sizes, axis):
    """Pieces by slicing with running offsets (independent of the operator's np.take)."""
    pieces, start = [], 0
    for n in sizes:
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + n)
        pieces.append(x[tuple(index)].copy())
        start += n
    return pieces


def run_split(x, n_out, device=None, sizes_input=None, **args):
    ws = caffe2op.Workspace()
    ws.feed_blob("x", x, device)
    inputs = ["x"]
    if sizes_input is not None:
        ws.feed_blob("sizes", np.asarray(sizes_input, np.int32), device)
        inputs.append("sizes")
    outputs = [f"y{k}" for k in range(n_out)]
    ws.run_operator_once(caffe2op.create_operator("Split", inputs, outputs, device_option=device, **args))
    for name in outputs:
        assert ws.blob_device(name) == (device or caffe2op.DeviceOption())
    return [ws.fetch_blob(name) for name in outputs]


@st.composite
def split_cases(draw):
    ndim = draw(st.integers(1, 4))
    axis = draw(st.integers(-ndim, ndim - 1))
    sizes = draw(st.lists(st.integers(0, 3), min_size=1, max_size=4))
    shape = draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))
    shape[axis] = sum(sizes)
    dtype = draw(st.sampled_from([np.float16, np.float32, np.int64, np.bool_]))
    x = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    return x, axis, sizes


@given(case=split_cases(), how=st.sampled_from(["argument", "input"]))
def test_split_matches_slicing(device, case, how):
    x, axis, sizes = case
    if how == "argument":
        got = run_split(x, len(sizes), device, axis=axis, split=sizes)
    else:
        got = run_split(x, len(sizes), device, sizes_input=sizes, axis=axis)
    for piece, want in zip(got, split_ref(x, sizes, axis), strict=True):
        assert_bit_identical(piece, want)


def test_equal_parts_order_and_add_axis(device):
    x = np.arange(24, dtype=np.float32).reshape(2, 6, 2)
    for piece, want in zip(run_split(x, 3, device), split_ref(x, [2, 2, 2], 1), strict=True):
        assert_bit_identical(piece, want)  # default: NCHW -> axis 1, equal parts
    y = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    for piece, want in zip(run_split(y, 2, device, order="NHWC"), split_ref(y, [2, 2], 3), strict=True):
        assert_bit_identical(piece, want)
    stacked = run_split(x, 2, device, axis=0, add_axis=True)
    assert [p.shape for p in stacked] == [(6, 2), (6, 2)]
    assert_bit_identical(stacked[1], x[1])


@pytest.mark.parametrize(
    "n_out, args, sizes_input, error, match",
    [
        (4, {}, None, ValueError, "must divide into 4 equal parts"),
        (2, {"split": [1, 1]}, None, ValueError, r"add up to 2, but axis 1 has length 6"),
        (2, {}, [1, 2, 3], ValueError, "one size per output"),
        (2, {"axis": 3}, None, ValueError, "axis 3 is out of range"),
        (3, {"axis": 1, "add_axis": True}, None, ValueError, "one output per element of axis 1 \\(6\\)"),
    ],
)
def test_bad_splits_raise_and_write_nothing(device, n_out, args, sizes_input, error, match):
    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.ones((2, 6), np.float32), device)
    inputs = ["x"]
    if sizes_input is not None:
        ws.feed_blob("sizes", np.asarray(sizes_input, np.int32), device)
        inputs.append("sizes")
    ws.feed_blob("y0", np.array([42.0]), device)
    with pytest.raises(error, match=match):
        ws.run_operator_once(
            caffe2op.create_operator("Split", inputs, [f"y{k}" for k in range(n_out)], device_option=device, **args)
        )
    assert_bit_identical(ws.fetch_blob("y0"), np.array([42.0]))


def test_schema_rules():
    with pytest.raises(caffe2op.SchemaError, match="either as the second input or as the split argument"):
        caffe2op.create_operator("Split", ["x", "s"], ["a", "b"], split=[1, 1])
    with pytest.raises(caffe2op.SchemaError, match="split has 3 sizes for 2 outputs"):
        caffe2op.create_operator("Split", "x", ["a", "b"], split=[1, 1, 1])
    with pytest.raises(caffe2op.SchemaError, match="either axis or order"):
        caffe2op.create_operator("Split", "x", ["a", "b"], axis=1, order="NCHW")
    with pytest.raises(caffe2op.SchemaError, match="must not contain negative sizes"):
        caffe2op.create_operator("Split", "x", ["a", "b"], split=[3, -1])


def test_split_gradient_is_a_concat():
    """Caffe2 ``GetSplitGradient``: ``Concat(GO...) -> [GI(0), _GI(0)_dims]``."""
    fwd = caffe2op.create_operator("Split", "x", ["a", "b"], axis=0)
    [op], g_input = caffe2op.get_gradient_defs(fwd, ["a_grad", "b_grad"])
    assert (op.type, op.inputs, op.outputs, op.args) == (
        "Concat",
        ["a_grad", "b_grad"],
        ["x_grad", "_x_grad_dims"],
        {"axis": 0},
    )
    assert g_input == ["x_grad"]
    assert caffe2op.get_gradient_defs(fwd, [None, None]) == ([], [None])
    with pytest.raises(ValueError, match="ZeroGradient"):
        caffe2op.get_gradient_defs(fwd, ["a_grad", None])


@pytest.mark.parametrize("add_axis", [False, True])
def test_concat_gradient_runs_and_splits_back(device, add_axis):
    """Concat's gradient (Split by split_info) gives each input the slice of the output gradient it made."""
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = (
        (np.arange(6, dtype=np.float32) + 10).reshape(2, 3)
        if add_axis
        else np.arange(4, dtype=np.float32).reshape(2, 2)
    )
    net = caffe2op.Net("concat_grad")
    net.Concat(["a", "b"], ["c", "c_split"], axis=1, add_axis=add_axis, device_option=device)
    ws = caffe2op.Workspace()
    for name, value in (("a", a), ("b", b)):
        ws.feed_blob(name, value, device)
    ws.run_net(net)
    g = np.random.default_rng(0).standard_normal(ws.fetch_blob("c").shape).astype(np.float32)
    ws.feed_blob("c_grad", g, device)
    net.add_gradient_operators({"c": "c_grad"})
    ws.run_net(net)
    if add_axis:
        assert_bit_identical(ws.fetch_blob("a_grad"), g[:, 0])
        assert_bit_identical(ws.fetch_blob("b_grad"), g[:, 1])
    else:
        assert_bit_identical(ws.fetch_blob("a_grad"), g[:, :3])
        assert_bit_identical(ws.fetch_blob("b_grad"), g[:, 3:])
