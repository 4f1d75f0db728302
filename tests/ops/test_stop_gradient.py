# SPDX-License-Identifier: BSD-3-Clause
"""StopGradient forward: a fresh copy out of place, nothing in place."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import caffe2op
from tests._helpers import assert_bit_identical

DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_, np.uint8])


@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, max_side=6)))
def test_copy_is_identical_and_independent(x):
    y = caffe2op.stop_gradient(x)
    assert_bit_identical(y, x)
    assert y is not x and not np.shares_memory(x, y)


@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6)))
def test_operator_copies_out_of_place(x):
    ws = caffe2op.Workspace()
    ws.feed_blob("x", x)
    ws.run_operator_once(caffe2op.create_operator("StopGradient", "x", "y"))
    assert_bit_identical(ws.fetch_blob("y"), x)
    assert not np.shares_memory(ws._blobs["x"], ws._blobs["y"])


def test_large_copies_use_threads_and_match():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3_000_001).astype(np.float32)  # 12 MB: the parallel path, odd length
    for threads in (1, 2):
        caffe2op.set_num_threads(threads)
        assert_bit_identical(caffe2op.stop_gradient(x), x)
    out = np.empty_like(x)
    assert caffe2op.stop_gradient(x, out=out) is out
    assert_bit_identical(out, x)


def test_non_contiguous_input_and_out():
    x = np.arange(40.0).reshape(5, 8)[:, ::2]
    y = caffe2op.stop_gradient(x)
    assert_bit_identical(y, x)
    assert y.flags.c_contiguous
    out = np.zeros((4, 5)).T
    caffe2op.stop_gradient(x, out=out)
    np.testing.assert_array_equal(out, x)


def test_in_place_does_nothing():
    x = np.arange(4.0)
    assert caffe2op.stop_gradient(x, out=x) is x
    ws = caffe2op.Workspace()
    ws.feed_blob("x", x)
    blob = ws._blobs["x"]
    ws.run_operator_once(caffe2op.create_operator("StopGradient", "x", "x"))
    assert ws._blobs["x"] is blob
    np.testing.assert_array_equal(ws.fetch_blob("x"), x)


def test_operator_reuses_existing_output_memory():
    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.arange(5.0))
    ws.feed_blob("y", np.zeros(5))
    y = ws._blobs["y"]
    ws.run_operator_once(caffe2op.create_operator("StopGradient", "x", "y"))
    assert ws._blobs["y"] is y
    np.testing.assert_array_equal(y, np.arange(5.0))
    ws.feed_blob("y", np.zeros(2, np.int8))  # wrong shape and dtype: replaced
    ws.run_operator_once(caffe2op.create_operator("StopGradient", "x", "y"))
    assert ws.fetch_blob("y").dtype == np.float64


def test_array_likes_are_copied():
    assert_bit_identical(caffe2op.stop_gradient([[1, 2], [3, 4]]), np.array([[1, 2], [3, 4]]))


@pytest.mark.parametrize(
    "out, error, match",
    [
        (np.zeros(4, np.float32), TypeError, "StopGradient: out must have dtype float64, got float32"),
        (np.zeros(5), ValueError, r"StopGradient: out must have shape \(4,\), got \(5,\)"),
        ([0.0] * 4, TypeError, "StopGradient: out must be a numpy.ndarray, got list"),
    ],
)
def test_bad_out(out, error, match):
    with pytest.raises(error, match=match):
        caffe2op.stop_gradient(np.arange(4.0), out=out)


def test_read_only_out():
    out = np.zeros(4)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="StopGradient: out is read-only"):
        caffe2op.stop_gradient(np.arange(4.0), out=out)
    assert (out == 0).all()


def test_schema_rules():
    with pytest.raises(caffe2op.SchemaError, match="StopGradient: expects 1 output, got 0"):
        caffe2op.create_operator("StopGradient", "x", [])
    with pytest.raises(caffe2op.SchemaError, match="unknown argument"):
        caffe2op.create_operator("StopGradient", "x", "y", axis=0)
