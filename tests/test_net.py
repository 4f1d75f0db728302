# SPDX-License-Identifier: BSD-3-Clause
"""Net: Caffe2-style builders, add_op, readable printing."""

import pytest

import caffe2op
from caffe2op import OperatorDef


def test_builders_create_check_and_append():
    net = caffe2op.Net("n")
    assert net.StopGradient("x", "y") == "y"
    assert net.SparseNormalize(["w", "idx"], ["w"], norm=2.0) == "w"
    assert net.ZeroGradient("y", []) is None
    assert [op.type for op in net.ops] == ["StopGradient", "SparseNormalize", "ZeroGradient"]
    assert net.ops[1].args == {"norm": 2.0}
    with pytest.raises(caffe2op.SchemaError, match="EnforceOneToOneInplace"):
        net.SparseNormalize(["w", "idx"], ["v"])
    assert len(net) == 3


def test_builders_name_outputs_automatically():
    net = caffe2op.Net("auto")
    first = net.StopGradient("x")
    second = net.StopGradient("x", 1)
    assert first == "auto/StopGradient_0" and second == "auto/StopGradient_1"
    assert net.next_blob_name("Sum") == "auto/Sum_2"


def test_builder_of_unknown_type_suggests():
    net = caffe2op.Net()
    with pytest.raises(caffe2op.UnknownOperatorError, match="Did you mean: StopGradient"):
        net.StopGradeint("x", "y")
    with pytest.raises(AttributeError):
        net.lowercase_attribute
    with pytest.raises(AttributeError):
        net._private


def test_add_op_checks_schema_and_type():
    net = caffe2op.Net()
    op = net.add_op(OperatorDef(type="NoSchemaType", inputs=["a"], outputs=["b"]))
    assert net.ops == [op]
    with pytest.raises(caffe2op.SchemaError):
        net.add_op(OperatorDef(type="StopGradient", inputs=["a", "b"], outputs=["c"]))
    with pytest.raises(TypeError, match="expected an OperatorDef"):
        net.add_op("StopGradient")
    assert len(net.ops) == 1


def test_str_lists_operators():
    net = caffe2op.Net("demo")
    net.ConstantFill([], "w", shape=[2], value=1.0)
    net.StopGradient("w", "w")
    assert str(net) == (
        "Net 'demo' (2 operators)\n  0: ConstantFill() -> (w)  shape=[2] value=1.0\n  1: StopGradient(w) -> (w)"
    )
    assert repr(net) == "Net('demo', 2 operators)"
    assert str(caffe2op.Net("one")) == "Net 'one' (0 operators)"
    with pytest.raises(TypeError):
        caffe2op.Net("")
