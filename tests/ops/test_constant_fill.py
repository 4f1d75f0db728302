# SPDX-License-Identifier: BSD-3-Clause
"""ConstantFill: Caffe2's shape and dtype rules."""

import numpy as np
import pytest

import caffe2op
from caffe2op import DataType


def run(inputs=(), **args):
    ws = caffe2op.Workspace()
    names = []
    for k, value in enumerate(inputs):
        ws.feed_blob(f"in{k}", value)
        names.append(f"in{k}")
    ws.run_operator_once(caffe2op.create_operator("ConstantFill", names, "out", **args))
    return ws.fetch_blob("out")


def test_shape_from_argument_and_default_dtype():
    out = run(shape=[2, 3])
    assert out.shape == (2, 3) and out.dtype == np.float32 and (out == 0).all()
    scalar = run()
    assert scalar.shape == () and scalar.dtype == np.float32


def test_shape_from_input_plus_extra_shape_dtype_never_from_input():
    out = run([np.ones((2, 3), np.float16)], value=1.0, extra_shape=[4])
    assert out.shape == (2, 3, 4) and out.dtype == np.float32 and (out == 1).all()
    out = run([np.ones(3, np.int32)])
    assert out.dtype == np.float32  # ZeroGradient's gradient of an int blob is float32 zeros


def test_input_as_shape():
    out = run([np.array([2, 5], np.int64)], input_as_shape=True, value=7)
    assert out.shape == (2, 5) and out.dtype == np.int64 and (out == 7).all()
    with pytest.raises(ValueError, match="non-empty 1-D integer tensor"):
        run([np.ones((2, 2), np.int64)], input_as_shape=True)
    with pytest.raises(ValueError, match="negative dimensions"):
        run([np.array([-1])], input_as_shape=True)


@pytest.mark.parametrize(
    "value, dtype, expected_dtype, expected",
    [
        (2.5, None, np.float32, 2.5),
        (3, None, np.int64, 3),
        (True, None, np.int64, 1),  # Caffe2 stored bools as ints
        (1, DataType.BOOL, np.bool_, True),
        (1, DataType.FLOAT, np.float32, 1.0),  # Caffe2 raises (value in the int field); exact here
        (0.5, DataType.FLOAT16, np.float16, 0.5),
        (0.5, DataType.DOUBLE, np.float64, 0.5),
        (4, "uint8", np.uint8, 4),
        (1.5, np.float64, np.float64, 1.5),
    ],
)
def test_dtype_rules(value, dtype, expected_dtype, expected):
    args = dict(value=value) if dtype is None else dict(value=value, dtype=dtype)
    out = run(shape=[3], **args)
    assert out.dtype == expected_dtype
    np.testing.assert_array_equal(out, np.full(3, expected, expected_dtype))


def test_in_place_replaces_the_input():
    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.ones((2, 2), np.float32))
    blob = ws._blobs["x"]
    ws.run_operator_once(caffe2op.create_operator("ConstantFill", "x", "x", value=3.0))
    assert ws._blobs["x"] is blob  # same shape and dtype: filled in place
    np.testing.assert_array_equal(ws.fetch_blob("x"), np.full((2, 2), 3.0, np.float32))


@pytest.mark.parametrize(
    "inputs, args, match",
    [
        (["x"], dict(shape=[2]), "cannot set the shape argument and pass in an input"),
        ([], dict(extra_shape=[2]), "cannot set extra_shape when there is no input"),
        ([], dict(input_as_shape=True), "an input must be given if input_as_shape is true"),
        ([], dict(shape=[-1]), "must not contain negative dimensions"),
        ([], dict(value="one"), "argument 'value' must be a number or bool"),
        ([], dict(dtype=DataType.STRING), "argument 'dtype'"),
        ([], dict(dtype=99), "argument 'dtype'"),
        ([], dict(dtype="complex64"), "argument 'dtype'"),
    ],
)
def test_schema_errors(inputs, args, match):
    with pytest.raises(caffe2op.SchemaError, match=match):
        caffe2op.create_operator("ConstantFill", inputs, "out", **args)


def test_value_that_does_not_fit_the_dtype():
    with pytest.raises(ValueError, match="value 300 does not fit dtype uint8"):
        run(shape=[2], value=300, dtype="uint8")


@pytest.mark.parametrize(
    "value, dtype", [(1.5, DataType.INT32), (2.0, DataType.INT64), (float("inf"), "int64"), (1.0, DataType.BOOL)]
)
def test_integer_dtype_needs_an_integer_value(value, dtype):
    """Caffe2 ``proto_utils.cc``: ``GetSingleArgument<int>`` of a value stored in ``f`` raises (no truncation)."""
    with pytest.raises(TypeError, match=r"ConstantFill: dtype \w+ needs an integer value, got float"):
        run(shape=[2], value=value, dtype=dtype)


def test_second_input_gives_the_fill_value():
    """Caffe2 ``filler_op.h`` ``FillWithType``: with 2 inputs the value is ``V``'s only element."""
    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.zeros((2, 3), np.float32))
    ws.feed_blob("v", np.array([7.0], np.float32))
    ws.run_operator_once(caffe2op.create_operator("ConstantFill", ["x", "v"], "y"))
    np.testing.assert_array_equal(ws.fetch_blob("y"), np.full((2, 3), 7.0, np.float32))
    ws.feed_blob("v2", np.array([7.0, 8.0], np.float32))
    with pytest.raises(ValueError, match="V must have exactly 1 element, got shape \\(2,\\)"):
        ws.run_operator_once(caffe2op.create_operator("ConstantFill", ["x", "v2"], "y"))
    ws.feed_blob("v64", np.array([7.0]))
    with pytest.raises(TypeError, match="V must have the output's dtype float32 .*, got float64"):
        ws.run_operator_once(caffe2op.create_operator("ConstantFill", ["x", "v64"], "y"))
