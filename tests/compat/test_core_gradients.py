# SPDX-License-Identifier: BSD-3-Clause
"""The backward pass through caffe2op.compat, the way Caffe2's ``core_gradients_test.py`` exercises it.

The operator lists and the expected gradient operators are the facts of
Caffe2's test (``caffe2/python/core_gradients_test.py``); the code is ours.
Gradient functions are registered with ``GradientRegistry.RegisterGradient``
and see OperatorDef messages; the C++-style makers of FC, Relu ... live in
:mod:`tests.compat.caffe2_ops`.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from caffe2op.compat import caffe2_pb2, core, workspace
from caffe2op.compat.core import CreateOperator, GradientRegistry
from tests.compat import caffe2_ops  # noqa: F401 - registers FC, Relu, ... gradient makers


def _grads(op):
    return [name + "_grad" for name in op.input]


def _with_device(new, op):
    if op.HasField("device_option"):
        new.device_option.CopyFrom(op.device_option)
    return new


def _need_all(op, g_output):
    for name, g in zip(op.output, g_output, strict=True):
        if g is None:
            raise RuntimeError(f"need the gradient of {name}")
    return list(g_output)


@GradientRegistry.RegisterGradient("CgDirect")
def _direct(op, g_output):
    return _with_device(CreateOperator("CgDirectGradient", _need_all(op, g_output), _grads(op)), op), _grads(op)


@GradientRegistry.RegisterGradient("CgUseOutput")
def _use_output(op, g_output):
    inputs = list(op.output) + _need_all(op, g_output)
    return _with_device(CreateOperator("CgUseOutputGradient", inputs, _grads(op)), op), _grads(op)


@GradientRegistry.RegisterGradient("CgUseInput")
def _use_input(op, g_output):
    inputs = list(op.input) + _need_all(op, g_output)
    return _with_device(CreateOperator("CgUseInputGradient", inputs, _grads(op)), op), _grads(op)


@GradientRegistry.RegisterGradient("CgNoGradient")
def _no_gradient(op, g_output):
    return [], [None for _ in op.input]


def ops(*specs):
    """OperatorDef messages from ``(type, inputs, outputs)`` (``Cg`` prefixes our test types)."""
    return [CreateOperator(t, i, o, **(a[0] if a else {})) for t, i, o, *a in specs]


def backward(forward, ys):
    grad_ops, grad_map = GradientRegistry.GetBackwardPass(forward, ys)
    return grad_ops, grad_map


D, DG = "CgDirect", "CgDirectGradient"

CASES = {
    # Caffe2 testDirect / testDirectImplicitGradientSource / testDoesNotGenerateUnnecessaryGradients.
    "direct": (
        [(D, "in", "hidden"), (D, "hidden", "out")],
        {"out": "out_grad"},
        [(DG, "out_grad", "hidden_grad"), (DG, "hidden_grad", "in_grad")],
    ),
    "implicit_source": (
        [(D, "in", "hidden"), (D, "hidden", "out")],
        ["out"],
        [
            ("ConstantFill", "out", "out_autogen_grad", {"value": 1.0}),
            (DG, "out_autogen_grad", "hidden_grad"),
            (DG, "hidden_grad", "in_grad"),
        ],
    ),
    "no_unnecessary": (
        [(D, "in", "hidden"), (D, "hidden", "out")],
        {"hidden": "hidden_grad"},
        [(DG, "hidden_grad", "in_grad")],
    ),
    "no_output_gradient": ([(D, "in", "hidden"), (D, "hidden", "out")], {}, []),
    "in_place": (
        [(D, "in", "in"), (D, "in", "out")],
        {"out": "out_grad"},
        [(DG, "out_grad", "in_grad"), (DG, "in_grad", "in_grad")],
    ),
    "use_output": (
        [("CgUseOutput", "in", "hidden"), ("CgUseOutput", "hidden", "out"), (D, "out", "sink")],
        {"sink": "sink_grad"},
        [
            (DG, "sink_grad", "out_grad"),
            ("CgUseOutputGradient", ["out", "out_grad"], "hidden_grad"),
            ("CgUseOutputGradient", ["hidden", "hidden_grad"], "in_grad"),
        ],
    ),
    "use_output_in_place": (
        [("CgUseOutput", "in", "in"), ("CgUseOutput", "in", "out"), (D, "out", "sink")],
        {"sink": "sink_grad"},
        [
            (DG, "sink_grad", "out_grad"),
            ("CgUseOutputGradient", ["out", "out_grad"], "in_grad"),
            ("CgUseOutputGradient", ["in", "in_grad"], "in_grad"),
        ],
    ),
    "use_input": (
        [(D, "in", "hidden"), ("CgUseInput", "hidden", "out"), (D, "out", "sink")],
        {"sink": "sink_grad"},
        [
            (DG, "sink_grad", "out_grad"),
            ("CgUseInputGradient", ["hidden", "out_grad"], "hidden_grad"),
            (DG, "hidden_grad", "in_grad"),
        ],
    ),
    "multi_use_no_gradient": (
        [(D, "in", "hidden1"), ("CgNoGradient", "in", "hidden2"), (D, ["hidden1", "hidden2"], "out")],
        {"out": "out_grad"},
        [(DG, "out_grad", ["hidden1_grad", "hidden2_grad"]), (DG, "hidden1_grad", "in_grad")],
    ),
    "multi_use_multiple_versions": (
        [(D, "in", "in"), (D, "in", "hidden1"), (D, "in", "hidden2"), (D, ["hidden1", "hidden2"], "out")],
        {"out": "out_grad"},
        [
            (DG, "out_grad", ["hidden1_grad", "hidden2_grad"]),
            (DG, "hidden2_grad", "in_grad"),
            (DG, "hidden1_grad", "_in_grad_autosplit_0"),
            ("Sum", ["in_grad", "_in_grad_autosplit_0"], "in_grad"),
            (DG, "in_grad", "in_grad"),
        ],
    ),
    "multi_use_big": (
        [
            (D, "in", "in"),
            (D, "in", "hidden1"),
            (D, "in", "hidden2"),
            (D, ["hidden1", "hidden2"], "in"),
            (D, "in", "hidden3"),
            (D, "in", "hidden4"),
            (D, "in", "hidden5"),
            (D, ["hidden3", "hidden4", "hidden5"], "out"),
        ],
        {"out": "out_grad"},
        [
            (DG, "out_grad", ["hidden3_grad", "hidden4_grad", "hidden5_grad"]),
            (DG, "hidden5_grad", "in_grad"),
            (DG, "hidden4_grad", "_in_grad_autosplit_0"),
            (DG, "hidden3_grad", "_in_grad_autosplit_1"),
            ("Sum", ["in_grad", "_in_grad_autosplit_0", "_in_grad_autosplit_1"], "in_grad"),
            (DG, "in_grad", ["hidden1_grad", "hidden2_grad"]),
            (DG, "hidden2_grad", "in_grad"),
            (DG, "hidden1_grad", "_in_grad_autosplit_0"),
            ("Sum", ["in_grad", "_in_grad_autosplit_0"], "in_grad"),
            (DG, "in_grad", "in_grad"),
        ],
    ),
    "stop_gradient": (
        [(D, "in", "hidden"), ("StopGradient", "hidden", "hidden2"), (D, "hidden2", "out")],
        {"out": "out_grad"},
        [(DG, "out_grad", "hidden2_grad")],
    ),
    "stop_gradient_in_place": (
        [(D, "in", "hidden"), ("StopGradient", "hidden", "hidden"), (D, "hidden", "out")],
        {"out": "out_grad"},
        [(DG, "out_grad", "hidden_grad")],
    ),
    "stop_gradient_multi_use": (
        [
            (D, "in", "hidden"),
            (D, "hidden", "hidden2"),
            ("StopGradient", "hidden", "hidden3"),
            (D, ["hidden2", "hidden3"], "out"),
        ],
        {"out": "out_grad"},
        [
            (DG, "out_grad", ["hidden2_grad", "hidden3_grad"]),
            (DG, "hidden2_grad", "hidden_grad"),
            (DG, "hidden_grad", "in_grad"),
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_operators_are_caffe2s(case):
    forward, ys, expected = CASES[case]
    grad_ops, _ = backward(ops(*forward), ys)
    assert grad_ops == ops(*expected)
    assert all(isinstance(g, caffe2_pb2.OperatorDef) for g in grad_ops)


@given(device=st.sampled_from([None, core.DeviceOption(workspace.GpuDeviceType, 1)]))
def test_multi_use_input_keeps_the_device_option(device):
    """Caffe2 testMultiUseInput / testDirect with a device: every gradient operator, Sum included, on it."""
    forward = ops((D, "in", "hidden1"), (D, "in", "hidden2"), (D, ["hidden1", "hidden2"], "out"))
    expected = ops(
        (DG, "out_grad", ["hidden1_grad", "hidden2_grad"]),
        (DG, "hidden2_grad", "in_grad"),
        (DG, "hidden1_grad", "_in_grad_autosplit_0"),
        ("Sum", ["in_grad", "_in_grad_autosplit_0"], "in_grad"),
    )
    if device is not None:
        for op in forward + expected:
            op.device_option.CopyFrom(device)
    assert backward(forward, {"out": "out_grad"})[0] == expected


@pytest.mark.parametrize(
    "forward, ys, error, match",
    [
        # testVersionMismatch, testUseOutputButOutputHasBeenChanged, testUseInputButInputHasBeenChanged.
        ([(D, "x", "x"), (D, "y", "x"), (D, "x", "y")], {"y": "y_grad"}, RuntimeError, "version"),
        (
            [
                ("CgUseOutput", "in", "hidden"),
                (D, "hidden", "hidden"),
                ("CgUseOutput", "hidden", "out"),
                (D, "out", "sink"),
            ],
            {"sink": "sink_grad"},
            RuntimeError,
            "version",
        ),
        ([("CgUseInput", "in", "out"), (D, "in", "in")], {"out": "out_grad"}, RuntimeError, "version"),
        # testStopGradientOrphan.
        (
            [(D, "in", "hidden"), ("StopGradient", "hidden", "auto_blobx"), (D, "hidden", "out")],
            {"out": "out_grad"},
            ValueError,
            "orphan",
        ),
    ],
)
def test_invalid_forward_passes_raise(forward, ys, error, match):
    with pytest.raises(error, match=match):
        backward(ops(*forward), ys)


def test_stop_gradient_grad_maps():
    _, grad_map = backward(ops(*CASES["stop_gradient_in_place"][0]), {"out": "out_grad"})
    assert grad_map == {"out": "out_grad"}
    _, grad_map = backward(ops(*CASES["stop_gradient_multi_use"][0]), {"out": "out_grad"})
    assert grad_map == {
        "out": "out_grad",
        "hidden2": "hidden2_grad",
        "hidden3": "hidden3_grad",
        "hidden": "hidden_grad",
        "in": "in_grad",
    }


def test_maker_classes_flag_their_operators_and_print_has_no_gradient():
    """Caffe2 testGradientCalculationWithPrint: C++ makers' operators are gradient operators."""
    forward = ops(("FC", ["in", "w", "b"], "fc"), ("Print", "fc", []), ("AveragedLoss", "fc", "loss"))
    expected = ops(
        ("AveragedLossGradient", ["fc", "loss_grad"], "fc_grad"),
        ("FCGradient", ["in", "w", "fc_grad"], ["w_grad", "b_grad", "in_grad"]),
    )
    for g in expected:
        g.is_gradient_op = 1
    assert backward(forward, {"loss": "loss_grad"})[0] == expected
    # testGradientMappingUsingSumOp: a Sum of the forward pass is differentiated like any operator.
    backward(
        ops(("FC", ["in", "w", "b"], "fc"), ("Sum", "fc", "agg"), ("AveragedLoss", "agg", "loss")),
        {"loss": "loss_grad"},
    )


def _net_sum(net, position):
    op = net.Proto().op[position]
    return op.type, list(op.input), list(op.output)


def test_accumulation_in_nets():
    """Caffe2 testNormalAccumulation, testAccumulationWithNoGradientBranch, testAddOpInMiddle, testSubOpInMiddle."""
    expected = ("Sum", ["x2_grad", "_x2_grad_autosplit_0"], ["x2_grad"])
    for middle, extra in (("DotProduct", False), ("DotProduct", True), ("Add", False), ("Sub", False)):
        net = core.Net("test_net")
        net.Relu("x1", "x2")
        if extra:
            net.Print("x2", [])
        net.Softmax("x2", "x3")
        getattr(net, middle)(["x2", "x3"], "x4")
        grad_map = net.AddGradientOperators(["x4"] if middle == "DotProduct" else {"x4": "x4_grad"})
        assert _net_sum(net, -2) == expected
        assert grad_map["x1"] == "x1_grad"


@pytest.mark.parametrize("op_type", ["Add", "Sub"])
@pytest.mark.parametrize("top", ["DotProduct", "same"])
def test_accumulation_at_leaves(op_type, top):
    """Caffe2 testAddOpAtLeaf, testSubOpAtLeaf, testMultiLayerAddOps, testMultiLayerSubOps."""
    net = core.Net("test_net")
    getattr(net, op_type)(["x1", "x2"], "x4")
    getattr(net, op_type)(["x2", "x3"], "x5")
    getattr(net, op_type if top == "same" else top)(["x4", "x5"], "x6")
    grad_map = net.AddGradientOperators({"x6": "x6_grad"})
    assert _net_sum(net, -1) == ("Sum", ["x2_grad", "_x2_grad_autosplit_0"], ["x2_grad"])
    assert [grad_map[x] for x in ("x1", "x2", "x3")] == ["x1_grad", "x2_grad", "x3_grad"]


@pytest.mark.parametrize("dynamic", [True, False])
def test_add_with_constants(dynamic):
    """Caffe2 testAddAndDynamicConstant / testAddAndStaticConstant: ConstantFill stops the gradient, no Sum."""
    net = core.Net("test_net")
    net.FC(["x1", "x1_w", "x1_b"], ["x2"])
    net.Relu("x2", "x2")
    if dynamic:
        net.ConstantFill(["x2"], ["x3"])
        net.Add(["x2", "x3"], "x4")
    else:
        net.ConstantFill([], ["x3"], shape=[1])
        net.Add(["x2", "x3"], "x4", broadcast=1)
    net.FC(["x4", "x4_w", "x4_b"], ["x5"])
    net.SoftmaxWithLoss(["x5", "labels"], ["softmax", "loss"])
    grad_map = net.AddGradientOperators(["loss"])
    assert not any(op.type == "Sum" for op in net.Proto().op)
    assert "x4" in grad_map and grad_map["x1"] == "x1_grad"


def test_zero_gradient_gives_a_missing_output_gradient():
    """Caffe2 test_zero_gradient: LSTMUnit needs both output gradients until ZeroGradient gives the cell one."""
    net = core.Net("zero_grad_test")
    hidden_prev, cell, gates, seq_lengths, timestep = net.AddExternalInput("h", "c", "g", "s", "t")
    hidden, cell = net.LSTMUnit([hidden_prev, cell, gates, seq_lengths, timestep], ["hidden_t", "cell_t"])
    with pytest.raises(ValueError, match="ZeroGradient"):
        net.AddGradientOperators([hidden])
    net.ZeroGradient(cell, [])
    net.AddGradientOperators([hidden])


@pytest.mark.parametrize(
    "build, expected",
    [
        # Caffe2 test_two_grads: d(mul_2)/d(input) + d(mul_1)/d(input) = 2 * 3 + 2.
        (lambda n, i, one, two, three: [n.Mul([n.Mul([i, two], "mul_1"), three], "mul_2"), "mul_1"], 8.0),
        # Caffe2 testAccumulationRuns: 3 + 2.
        (lambda n, i, one, two, three: [n.Mul([i, three], "mul_2"), n.Sub([n.Mul([i, two], "mul_1"), one])], 5.0),
    ],
)
def test_gradients_run(build, expected):
    net = core.Net("test_net")
    blobs = net.AddExternalInput("input", "one", "two", "three")
    grad_map = net.AddGradientOperators(build(net, *blobs))
    workspace.ResetWorkspace()
    for blob, value in zip(blobs, (1, 1, 2, 3), strict=True):
        workspace.blobs[blob] = np.array([value], np.float32)
    workspace.RunNetOnce(net)
    assert workspace.blobs[grad_map["input"]] == expected


def test_incorrect_operator_fails_its_schema():
    """Caffe2 testIncorrectOperator: Mul with one input fails VerifyOp when its gradient is asked for."""
    net = core.Net("test_net")
    a, b, one = net.AddExternalInput("a", "b", "one")
    m1 = net.Mul(a, b)
    sub = net.Sub([m1, one])
    with pytest.raises(Exception, match="schema") as err:
        net.AddGradientOperators([sub])
    assert "VerifyOp" in str(err.value)
