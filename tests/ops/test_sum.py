# SPDX-License-Identifier: BSD-3-Clause
"""Sum: n inputs of identical shape and dtype."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import caffe2op
from tests._helpers import assert_allclose_dtype


@given(
    st.integers(1, 5).flatmap(
        lambda n: st.tuples(
            st.sampled_from([np.float16, np.float32, np.float64]),
            hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
        ).flatmap(
            lambda ds: st.lists(
                hnp.arrays(ds[0], ds[1], elements=st.floats(-100, 100, width=16)), min_size=n, max_size=n
            )
        )
    )
)
def test_sum_matches_numpy(arrays):
    ws = caffe2op.Workspace()
    names = [f"x{k}" for k in range(len(arrays))]
    for name, a in zip(names, arrays, strict=True):
        ws.feed_blob(name, a)
    ws.run_operator_once(caffe2op.create_operator("Sum", names, "s"))
    expected = np.sum(np.stack([a.astype(np.float64) for a in arrays]), axis=0)
    tol = dict(atol=1e-1) if arrays[0].dtype == np.float16 else {}
    assert_allclose_dtype(ws.fetch_blob("s"), expected, arrays[0].dtype, **tol)


def test_in_place_on_first_input():
    ws = caffe2op.Workspace()
    ws.feed_blob("a", np.array([1, 2], np.int64))
    ws.feed_blob("b", np.array([10, 20], np.int64))
    blob = ws._blobs["a"]
    ws.run_operator_once(caffe2op.create_operator("Sum", ["a", "b", "b"], "a"))
    assert ws._blobs["a"] is blob
    np.testing.assert_array_equal(ws.fetch_blob("a"), [21, 42])
    with pytest.raises(caffe2op.SchemaError, match="AllowInplace"):
        caffe2op.create_operator("Sum", ["a", "b"], "b")


def test_mismatches_raise_and_write_nothing():
    ws = caffe2op.Workspace()
    ws.feed_blob("a", np.ones(3))
    ws.feed_blob("b", np.ones(4))
    ws.feed_blob("c", np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"Sum: input 1 has shape \(4,\) but input 0 has shape \(3,\)"):
        ws.run_operator_once(caffe2op.create_operator("Sum", ["a", "b"], "s"))
    with pytest.raises(TypeError, match="Sum: input 1 has dtype float32 but input 0 has dtype float64"):
        ws.run_operator_once(caffe2op.create_operator("Sum", ["a", "c"], "s"))
    assert not ws.has_blob("s")
    with pytest.raises(caffe2op.SchemaError, match="Sum: expects at least 1 input, got 0"):
        caffe2op.create_operator("Sum", [], "s")


def test_single_input_copies():
    ws = caffe2op.Workspace()
    ws.feed_blob("a", np.arange(3.0))
    ws.run_operator_once(caffe2op.create_operator("Sum", ["a"], "s"))
    np.testing.assert_array_equal(ws.fetch_blob("s"), np.arange(3.0))
    assert not np.shares_memory(ws._blobs["a"], ws._blobs["s"])
