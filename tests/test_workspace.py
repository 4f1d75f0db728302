# SPDX-License-Identifier: BSD-3-Clause
"""Workspace: feeding, fetching, running operators and nets, errors with context."""

import numpy as np
import pytest

import caffe2op
from caffe2op import OperatorDef


def test_feed_copies_and_fetch_copies():
    ws = caffe2op.Workspace()
    data = np.arange(6.0).reshape(2, 3)
    ws.feed_blob("x", data)
    data[0, 0] = 100
    fetched = ws.fetch_blob("x")
    assert fetched[0, 0] == 0
    fetched[0, 1] = 100
    assert ws.fetch_blob("x")[0, 1] == 1
    assert ws.blob_device("x") == caffe2op.DeviceOption()


# --- fetch_blob(name, copy=False): a read-only view with lifetime rules ------------------------------


def test_fetch_view_is_read_only_and_shares_the_blobs_memory():
    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.arange(6.0).reshape(2, 3))
    view = ws.fetch_blob("x", copy=False)
    assert not view.flags.writeable
    assert np.shares_memory(view, ws._blobs["x"]) and view is not ws._blobs["x"]
    assert view.dtype == np.float64 and view.shape == (2, 3)
    with pytest.raises(ValueError, match="read-only"):
        view[0, 0] = 100.0
    assert ws._blobs["x"].flags.writeable  # the blob itself stays writable for operators
    np.testing.assert_array_equal(ws.fetch_blob("x"), np.arange(6.0).reshape(2, 3))
    scalar = caffe2op.Workspace()
    scalar.feed_blob("s", 2.5)
    assert scalar.fetch_blob("s", copy=False).shape == () and float(scalar.fetch_blob("s", copy=False)) == 2.5


def test_fetch_view_shows_later_in_place_updates():
    ws = caffe2op.Workspace()
    table = np.array([[3.0, 4.0], [6.0, 8.0], [0.3, 0.4]], dtype=np.float32)
    ws.feed_blob("w", table)
    ws.feed_blob("idx", np.array([0, 1]))
    view = ws.fetch_blob("w", copy=False)
    copied = ws.fetch_blob("w")
    ws.run_operator_once(caffe2op.create_operator("SparseNormalize", ["w", "idx"], "w", norm=1.0))
    expected = np.array([[0.6, 0.8], [0.6, 0.8], [0.3, 0.4]], dtype=np.float32)
    np.testing.assert_allclose(view, expected, rtol=1e-6)
    np.testing.assert_array_equal(copied, table)  # a copy does not follow the blob
    # An operator output of the same shape and dtype is written into the stored array: the view follows it.
    ws.feed_blob("src", np.full((3, 2), 7.0, np.float32))
    ws.run_operator_once(caffe2op.create_operator("StopGradient", "src", "w"))
    np.testing.assert_array_equal(view, np.full((3, 2), 7.0, np.float32))


def test_fetch_view_keeps_the_old_data_when_a_new_array_takes_the_name():
    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.arange(4.0))
    view = ws.fetch_blob("x", copy=False)
    ws.feed_blob("x", np.full(4, -1.0))  # feeding again stores a new array under the name
    np.testing.assert_array_equal(view, np.arange(4.0))
    np.testing.assert_array_equal(ws.fetch_blob("x"), np.full(4, -1.0))
    # An operator output of another shape replaces the stored array: the view keeps the old one.
    ws.feed_blob("long", np.ones(6))
    view = ws.fetch_blob("x", copy=False)
    ws.run_operator_once(caffe2op.create_operator("StopGradient", "long", "x"))
    np.testing.assert_array_equal(view, np.full(4, -1.0))
    assert ws.fetch_blob("x").shape == (6,)
    # Removing the blob or dropping the workspace leaves the view valid: it holds a reference to the memory.
    view = ws.fetch_blob("x", copy=False)
    ws.remove_blob("x")
    del ws
    np.testing.assert_array_equal(view, np.ones(6))


def test_fetch_view_rejects_a_bad_copy_argument_and_missing_blobs():
    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.zeros(2))
    with pytest.raises(TypeError, match="fetch_blob: copy must be a bool, got str"):
        ws.fetch_blob("x", copy="no")
    with pytest.raises(TypeError, match="got NoneType"):
        ws.fetch_blob("x", copy=None)
    with pytest.raises(caffe2op.MissingBlobError, match="fetch_blob: blob 'y' does not exist"):
        ws.fetch_blob("y", copy=False)
    assert ws.fetch_blob("x", copy=np.bool_(False)).flags.writeable is False


def test_feed_makes_c_contiguous_arrays_from_array_likes():
    ws = caffe2op.Workspace()
    ws.feed_blob("t", np.arange(12.0).reshape(3, 4).T)
    assert ws._blobs["t"].flags.c_contiguous
    ws.feed_blob("l", [[1, 2], [3, 4]])
    assert ws.fetch_blob("l").dtype == np.int_
    ws.feed_blob("s", 3.5)
    assert ws.fetch_blob("s").shape == ()


def test_feed_rejects_non_numeric_and_bad_names():
    ws = caffe2op.Workspace()
    with pytest.raises(TypeError, match="feed_blob: blob 'x' must hold numeric or bool data, got dtype <U3"):
        ws.feed_blob("x", "abc")
    with pytest.raises(TypeError, match="object"):
        ws.feed_blob("x", [object()])
    with pytest.raises(TypeError, match="blob name must be a non-empty str"):
        ws.feed_blob("", 1.0)
    assert ws.blobs() == []


def test_has_blobs_remove():
    ws = caffe2op.Workspace()
    ws.feed_blob("b", 1)
    ws.feed_blob("a", 2)
    assert ws.has_blob("a") and not ws.has_blob("c")
    assert ws.blobs() == ["a", "b"]
    ws.remove_blob("a")
    assert ws.blobs() == ["b"]
    with pytest.raises(caffe2op.MissingBlobError, match="remove_blob: blob 'a' does not exist"):
        ws.remove_blob("a")
    with pytest.raises(KeyError, match="fetch_blob: blob 'zz' does not exist in the workspace"):
        ws.fetch_blob("zz")


def test_missing_input_names_blob_and_operator():
    ws = caffe2op.Workspace()
    ws.feed_blob("w", np.ones((2, 2)))
    op = caffe2op.create_operator("SparseNormalize", ["w", "idx"], ["w"])
    with pytest.raises(caffe2op.MissingBlobError) as err:
        ws.run_operator_once(op)
    assert str(err.value) == "SparseNormalize: input 1 'idx' does not exist in the workspace."
    assert err.value.__notes__ == ["while running operator SparseNormalize(w, idx) -> (w)"]
    # ZeroGradient reads nothing, but its input must exist, as in Caffe2.
    with pytest.raises(caffe2op.MissingBlobError, match="ZeroGradient: input 0 'q'"):
        ws.run_operator_once(caffe2op.create_operator("ZeroGradient", "q", []))


def test_hand_built_definitions_are_schema_checked_before_running():
    ws = caffe2op.Workspace()
    ws.feed_blob("w", np.ones((2, 2)))
    ws.feed_blob("i", np.array([0]))
    bad = OperatorDef(type="SparseNormalize", inputs=["w", "i"], outputs=["other"])
    with pytest.raises(caffe2op.SchemaError, match="EnforceOneToOneInplace"):
        ws.run_operator_once(bad)
    assert not ws.has_blob("other")
    with pytest.raises(caffe2op.SchemaError, match="'norm' must be finite"):
        ws.run_operator_once(OperatorDef(type="SparseNormalize", inputs=["w", "i"], outputs=["w"], args={"norm": -2}))
    np.testing.assert_array_equal(ws.fetch_blob("w"), np.ones((2, 2)))


def test_run_net_runs_in_order_and_reports_the_failing_operator():
    net = caffe2op.Net("train")
    net.ConstantFill([], "w", shape=[3, 2], value=2.0)
    net.StopGradient("w", "w_copy")
    net.SparseNormalize(["w", "idx"], "w")
    ws = caffe2op.Workspace()
    ws.feed_blob("idx", np.array([0, 2]))
    ws.run_net(net)
    np.testing.assert_allclose(ws.fetch_blob("w")[[0, 2]], np.full((2, 2), np.sqrt(0.5)), rtol=1e-6)
    np.testing.assert_array_equal(ws.fetch_blob("w_copy"), np.full((3, 2), 2.0, np.float32))
    ws.feed_blob("idx", np.array([3]))
    with pytest.raises(IndexError) as err:
        ws.run_net(net)
    assert err.value.__notes__ == ["while running operator 2 of net 'train': SparseNormalize(w, idx) -> (w)"]


def test_workspaces_are_independent():
    a, b = caffe2op.Workspace(), caffe2op.Workspace()
    a.feed_blob("x", 1.0)
    assert not b.has_blob("x")


def test_a_definition_run_again_is_rechecked_when_edited_and_sees_new_registrations():
    ws = caffe2op.Workspace()
    ws.feed_blob("w", np.full((2, 2), 3.0))
    ws.feed_blob("i", np.array([0]))
    op = caffe2op.create_operator("SparseNormalize", ["w", "i"], ["w"], norm=1.0)
    ws.run_operator_once(op)
    ws.run_operator_once(op)  # prepared once, run twice
    op.args["norm"] = -1.0  # edited in place after it was prepared: checked again
    with pytest.raises(caffe2op.SchemaError, match="'norm' must be finite"):
        ws.run_operator_once(op)
    op.args["norm"] = 1.0
    op.outputs[0] = "other"  # a list edited in place
    with pytest.raises(caffe2op.SchemaError, match="EnforceOneToOneInplace"):
        ws.run_operator_once(op)
    calls = []

    class Tagged(caffe2op.Operator):
        def run_on_device(self):
            calls.append(self.op_def.engine)

    probe = OperatorDef(type="TestPreparedEngines", engine="FAST")
    caffe2op.register_cpu_operator("TestPreparedEngines", Tagged)
    ws.run_operator_once(probe)
    caffe2op.register_cpu_operator("TestPreparedEngines", type("Fast", (Tagged,), {}), engine="FAST")
    ws.run_operator_once(probe)  # a registration after it was prepared takes effect
    assert calls == ["FAST", "FAST"]
    assert type(ws._create_operator(probe)).__name__ == "Fast"
