# SPDX-License-Identifier: BSD-3-Clause
"""Typed errors naming the operator and the value for bad calls of the workspace, registries and makers.

Regressions of issue 10 items 12-14 (façade cases) and issue 15 item 6.
"""

import numpy as np
import pytest

import caffe2op
from caffe2op import OperatorDef, Workspace, create_operator, register_gradient


def test_run_operator_once_needs_an_operator_def():
    with pytest.raises(TypeError, match=r"run_operator_once: expected an OperatorDef .*'StopGradient'"):
        Workspace().run_operator_once("StopGradient")


def test_run_net_needs_a_net():
    with pytest.raises(TypeError, match=r"run_net: expected a Net, got list \(\[1\]\)"):
        Workspace().run_net([1])
    net = caffe2op.Net("bad")
    net.ops.append("StopGradient")
    with pytest.raises(TypeError, match=r"run_net: operator 0 of net 'bad' is a str"):
        Workspace().run_net(net)


@pytest.mark.parametrize("engine", [3, None, ["CUDNN"]])
def test_engine_must_be_a_str(engine):
    with pytest.raises(TypeError, match=rf"StopGradient: engine must be a str .*{engine!r}"[:60]):
        create_operator("StopGradient", "x", "y", engine=engine)
    with pytest.raises(TypeError, match="StopGradient: engine must be a str"):
        OperatorDef(type="StopGradient", inputs="x", outputs="y", engine=engine)


def test_get_schema_of_a_non_str():
    with pytest.raises(TypeError, match=r"get_schema: op_type must be an operator type name \(str\), got int \(3\)"):
        caffe2op.get_schema(3)


def test_get_gradient_defs_without_a_g_output_list():
    op = create_operator("StopGradient", "x", "y")
    with pytest.raises(TypeError, match=r"StopGradient: g_output must be a list .*None"):
        caffe2op.get_gradient_defs(op, None)


def test_gradient_maker_returning_a_str_g_input():
    @register_gradient("FeStrGInput")
    def maker(op_def, g_output):
        return [], "xy"

    with pytest.raises(TypeError, match=r"FeStrGInput: .*g_input as a list .*'xy'"):
        caffe2op.get_gradient_defs(OperatorDef(type="FeStrGInput", inputs=["a", "b"], outputs="y"), ["g"])


@pytest.mark.parametrize("inputs", [{"x": 1}, ["x", ""], ""])
def test_blob_names_must_be_non_empty_str_not_dict_keys(inputs):
    with pytest.raises((TypeError, ValueError), match="StopGradient: inputs"):
        create_operator("StopGradient", inputs, "y")
    with pytest.raises((TypeError, ValueError), match="StopGradient: inputs"):
        OperatorDef(type="StopGradient", inputs=inputs, outputs="y")


def test_feed_blob_device_names():
    ws = Workspace()
    ws.feed_blob("x", np.zeros(2), "cpu")
    assert ws.blob_device("x") == caffe2op.DeviceOption()
    with pytest.raises(TypeError, match=r"feed_blob: blob 'x': device 'tpu' is not"):
        ws.feed_blob("x", np.zeros(2), "tpu")
    with pytest.raises(
        TypeError, match=r"feed_blob: blob 'x': device_option must be a DeviceOption, a device name .*int \(4\)"
    ):
        ws.feed_blob("x", np.zeros(2), 4)
    assert ws.fetch_blob("x").tolist() == [0.0, 0.0]  # nothing modified by the failed calls


@pytest.mark.opencl
def test_feed_blob_opencl_name(opencl_device):
    ws = Workspace()
    ws.feed_blob("x", np.arange(3.0, dtype=np.float32), "opencl")
    assert ws.blob_device("x").device_type == caffe2op.DeviceType.OPENCL
    ws.feed_blob("y", np.arange(3.0, dtype=np.float32), f"opencl:{opencl_device.device_id}")
    assert ws.blob_device("y") == opencl_device


def test_missing_blob_suggests_close_names():
    """issue 15 item 6: MissingBlobError says "did you mean", like UnknownOperatorError."""
    ws = Workspace()
    ws.feed_blob("embedding_table", np.zeros(2))
    with pytest.raises(
        caffe2op.MissingBlobError, match=r"'embeding_table' does not exist .*Did you mean: embedding_table\?"
    ):
        ws.fetch_blob("embeding_table")
    with pytest.raises(
        caffe2op.MissingBlobError, match=r"StopGradient: input 0 'embedding_tabel' .*Did you mean: embedding_table\?"
    ):
        ws.run_operator_once(create_operator("StopGradient", "embedding_tabel", "y"))
    with pytest.raises(caffe2op.MissingBlobError) as err:
        ws.fetch_blob("zzz")
    assert "Did you mean" not in str(err.value)
