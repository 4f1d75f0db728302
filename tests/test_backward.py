# SPDX-License-Identifier: BSD-3-Clause
"""The backward-pass builder on hand-built operators: which gradient operators, in which order, with which names.

The operator types here have gradient makers and nothing else (no schema,
no implementation), as in Caffe2's own tests of its ``IR``:

* ``BwDirect``: ``(x...) -> (y...)`` with gradient ``BwDirectGradient(y_grad...) -> (x_grad...)``;
* ``BwUseOutput``: its gradient also reads the forward outputs;
* ``BwUseInput``: its gradient also reads the forward inputs;
* ``BwNoGrad``: no gradient for any input;
* ``BwPassThrough``: input gradients are the output gradient itself (like Add);
* ``BwNeedAll``: needs the gradient of every output (like an LSTM unit);
* ``BwGather`` / ``BwSparse``: sparse gradients, passed through or made by an operator.
"""

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

import caffe2op
from caffe2op import DeviceOption, DeviceType, GradientMakerBase, GradientSlice, OperatorDef, register_gradient
from caffe2op.backward import get_backward_pass


def op(op_type, inputs, outputs, **fields):
    return OperatorDef(type=op_type, inputs=inputs, outputs=outputs, **fields)


def grads(op_def):
    return [name + "_grad" for name in op_def.inputs]


# Gradient functions' operators are used as they are made (Caffe2's Python registry), so these copy
# the forward device option themselves, as the functions of Caffe2's core_gradients_test.py do.


@register_gradient("BwDirect")
def _direct(op_def, g_output):
    if any(g is None for g in g_output):
        raise ValueError(f"BwDirect needs every output gradient, got {g_output}")
    device = op_def.device_option
    return [op("BwDirectGradient", list(g_output), grads(op_def), device_option=device)], grads(op_def)


@register_gradient("BwUseOutput")
def _use_output(op_def, g_output):
    device = op_def.device_option
    return [op("BwUseOutputGradient", op_def.outputs + list(g_output), grads(op_def), device_option=device)], grads(
        op_def
    )


@register_gradient("BwUseInput")
def _use_input(op_def, g_output):
    device = op_def.device_option
    return [op("BwUseInputGradient", op_def.inputs + list(g_output), grads(op_def), device_option=device)], grads(
        op_def
    )


@register_gradient("BwNoGrad")
def _no_grad(op_def, g_output):
    return [], [None] * len(op_def.inputs)


@register_gradient("BwPassThrough")
def _pass_through(op_def, g_output):
    return [], [g_output[0]] * len(op_def.inputs)


@register_gradient("BwNeedAll")
class _NeedAll(GradientMakerBase):
    def get_gradient_defs(self):
        return self.single_gradient_def(
            "BwNeedAllGradient", "", [self.GO(0), self.GO(1)], [self.GI(i) for i in range(len(self.def_.inputs))]
        )


@register_gradient("BwGather")
def _gather(op_def, g_output):
    # d rows / d table: the rows' gradient at the looked-up indices, no operator (Caffe2's Gather).
    return [], [GradientSlice(op_def.inputs[1], g_output[0]), None]


@register_gradient("BwSparse")
class _Sparse(GradientMakerBase):
    def get_gradient_defs(self):
        return self.single_gradient_def("BwSparseGradient", "", [self.I(1), self.GO(0)], [self.GI_I(0), self.GI_V(0)])


@register_gradient("BwDot")
def _dot(op_def, g_output):
    return [op("BwDotGradient", op_def.inputs + [g_output[0]], grads(op_def))], grads(op_def)


def describe(ops):
    return [o.describe() for o in ops]


def assert_ops(actual, expected):
    assert describe(actual) == describe(expected)
    assert actual == expected


DEVICES = [None, DeviceOption(DeviceType.OPENCL, 1)]


# --- chains ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_direct_chain(device):
    ops = [op("BwDirect", "in", "hidden", device_option=device), op("BwDirect", "hidden", "out", device_option=device)]
    grad_ops, grad_map = get_backward_pass(ops, {"out": "out_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDirectGradient", "out_grad", "hidden_grad", device_option=device),
            op("BwDirectGradient", "hidden_grad", "in_grad", device_option=device),
        ],
    )
    # Made by a gradient function: not flagged, as in Caffe2's Python registry.
    assert not any(g.is_gradient_op for g in grad_ops)
    assert grad_map == {"out": "out_grad", "hidden": "hidden_grad", "in": "in_grad"}


def test_list_of_ys_autogenerates_a_constant_fill_first():
    ops = [op("BwDirect", "in", "hidden"), op("BwDirect", "hidden", "out")]
    grad_ops, grad_map = get_backward_pass(ops, ["out"])
    assert_ops(
        grad_ops,
        [
            op("ConstantFill", "out", "out_autogen_grad", args={"value": 1.0}),
            op("BwDirectGradient", "out_autogen_grad", "hidden_grad"),
            op("BwDirectGradient", "hidden_grad", "in_grad"),
        ],
    )
    assert [g.is_gradient_op for g in grad_ops] == [False, False, False]
    assert grad_map["out"] == "out_autogen_grad"


def test_dict_with_none_autogenerates_too():
    ops = [op("BwDirect", "a", "b")]
    grad_ops, grad_map = get_backward_pass(ops, {"b": None})
    assert grad_ops[0] == op("ConstantFill", "b", "b_autogen_grad", args={"value": 1.0})
    assert grad_map == {"b": "b_autogen_grad", "a": "a_grad"}


def test_autogenerated_gradient_follows_the_device_scope_else_the_producer():
    dev = DeviceOption(DeviceType.OPENCL, 0)
    ops = [op("BwDirect", "a", "b", device_option=dev)]
    grad_ops, _ = get_backward_pass(ops, ["b"])
    assert grad_ops[0].device_option == dev and grad_ops[1].device_option == dev
    other = DeviceOption(DeviceType.CUDA, 0)
    with caffe2op.device_scope(other):
        grad_ops, _ = get_backward_pass(ops, ["b"])
    assert grad_ops[0].device_option == other
    # A y that no operator writes: the CPU.
    grad_ops, _ = get_backward_pass([op("BwDirect", "a", "b")], ["a"])
    assert grad_ops == [op("ConstantFill", "a", "a_autogen_grad", args={"value": 1.0})]


def test_only_the_needed_gradients_are_generated():
    ops = [op("BwDirect", "in", "hidden"), op("BwDirect", "hidden", "out")]
    grad_ops, grad_map = get_backward_pass(ops, {"hidden": "hidden_grad"})
    assert_ops(grad_ops, [op("BwDirectGradient", "hidden_grad", "in_grad")])
    assert grad_map == {"hidden": "hidden_grad", "in": "in_grad"}


def test_no_ys_no_gradients():
    ops = [op("BwDirect", "in", "hidden"), op("BwDirect", "hidden", "out")]
    assert get_backward_pass(ops, {}) == ([], {})
    assert get_backward_pass([], []) == ([], {})


def test_forward_operators_are_not_modified():
    ops = [op("BwDirect", "in", "h1"), op("BwDirect", "in", "h2"), op("BwDirect", ["h1", "h2"], "out")]
    before = copy.deepcopy(ops)
    get_backward_pass(ops, ["out"])
    assert ops == before and not any(o.is_gradient_op for o in ops)


# --- in place and versions ------------------------------------------------------------------------


def test_direct_in_place():
    ops = [op("BwDirect", "in", "in"), op("BwDirect", "in", "out")]
    grad_ops, grad_map = get_backward_pass(ops, {"out": "out_grad"})
    assert_ops(grad_ops, [op("BwDirectGradient", "out_grad", "in_grad"), op("BwDirectGradient", "in_grad", "in_grad")])
    assert grad_map == {"out": "out_grad", "in": "in_grad"}


def test_version_mismatch_names_the_blob_and_says_version():
    ops = [op("BwDirect", "x", "x"), op("BwDirect", "y", "x"), op("BwDirect", "x", "y")]
    with pytest.raises(RuntimeError, match="version") as info:
        get_backward_pass(ops, {"y": "y_grad"})
    message = str(info.value)
    assert "'x_grad'" in message and "'x'" in message
    assert "version 1" in message and "version 2" in message


@pytest.mark.parametrize(
    ("ops", "ys", "message"),
    [
        (
            [op("BwDirect", "x", "x"), op("BwDirect", "y", "x"), op("BwDirect", "x", "y")],
            {"y": "y_grad"},
            "Gradient name 'x_grad' is expected to correspond to version 1 of 'x', but currently we have version 2. "
            "Maybe the same output blob is written by two operators?\n"
            "== version history of blob 'x' (written by):\n"
            "  version (out) 1 <- op 0: BwDirect(x) -> (x)\n"
            "  version (out) 2 <- op 1: BwDirect(y) -> (x)",
        ),
        (  # a blob read twice by one operator is listed twice; written twice by one, it moves two versions
            [op("BwUseInput", ["in", "in"], "out"), op("BwDirect", "in", ["in", "in"])],
            {"out": "out_grad"},
            "Gradient operator of BwUseInput(in, in) -> (out) needs input 'in' at version 0, but the forward pass "
            "leaves it at version 2 (it is overwritten later).\n"
            "== version history of blob 'in' (read by):\n"
            "  version (in) 0 <- op 0: BwUseInput(in, in) -> (out)\n"
            "  version (in) 0 <- op 0: BwUseInput(in, in) -> (out)\n"
            "  version (in) 0 <- op 1: BwDirect(in) -> (in, in)",
        ),
        (
            [op("BwUseOutput", "in", ["h", "h"]), op("BwDirect", ["h", "h"], "h"), op("BwUseOutput", "h", "out")],
            {"out": "out_grad"},
            "Gradient operator of BwUseOutput(in) -> (h, h) needs output 'h' at version 1, but the forward pass "
            "leaves it at version 2 (it is overwritten later).\n"
            "== version history of blob 'h' (written by):\n"
            "  version (out) 0 <- op 0: BwUseOutput(in) -> (h, h)\n"
            "  version (out) 1 <- op 0: BwUseOutput(in) -> (h, h)\n"
            "  version (out) 2 <- op 1: BwDirect(h, h) -> (h)",
        ),
    ],
)
def test_version_errors_list_the_blob_history(ops, ys, message):
    """The whole message: every read or write of the blob with its version (the history is replayed for it)."""
    with pytest.raises(RuntimeError) as info:
        get_backward_pass(ops, ys)
    assert str(info.value) == message


def test_use_output():
    ops = [op("BwUseOutput", "in", "hidden"), op("BwUseOutput", "hidden", "out"), op("BwDirect", "out", "sink")]
    grad_ops, _ = get_backward_pass(ops, {"sink": "sink_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDirectGradient", "sink_grad", "out_grad"),
            op("BwUseOutputGradient", ["out", "out_grad"], "hidden_grad"),
            op("BwUseOutputGradient", ["hidden", "hidden_grad"], "in_grad"),
        ],
    )


def test_use_output_in_place():
    ops = [op("BwUseOutput", "in", "in"), op("BwUseOutput", "in", "out"), op("BwDirect", "out", "sink")]
    grad_ops, _ = get_backward_pass(ops, {"sink": "sink_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDirectGradient", "sink_grad", "out_grad"),
            op("BwUseOutputGradient", ["out", "out_grad"], "in_grad"),
            op("BwUseOutputGradient", ["in", "in_grad"], "in_grad"),
        ],
    )


def test_use_output_overwritten_later_raises():
    ops = [
        op("BwUseOutput", "in", "hidden"),
        op("BwDirect", "hidden", "hidden"),  # overwrites what the first gradient needs
        op("BwUseOutput", "hidden", "out"),
        op("BwDirect", "out", "sink"),
    ]
    with pytest.raises(RuntimeError, match=r"needs output 'hidden' at version 0, but .* version 1"):
        get_backward_pass(ops, {"sink": "sink_grad"})


def test_use_input():
    ops = [op("BwDirect", "in", "hidden"), op("BwUseInput", "hidden", "out"), op("BwDirect", "out", "sink")]
    grad_ops, _ = get_backward_pass(ops, {"sink": "sink_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDirectGradient", "sink_grad", "out_grad"),
            op("BwUseInputGradient", ["hidden", "out_grad"], "hidden_grad"),
            op("BwDirectGradient", "hidden_grad", "in_grad"),
        ],
    )


def test_use_input_overwritten_later_raises():
    ops = [op("BwUseInput", "in", "out"), op("BwDirect", "in", "in")]
    with pytest.raises(RuntimeError, match=r"needs input 'in' at version 0, but .* version 1"):
        get_backward_pass(ops, {"out": "out_grad"})


def test_gradient_operator_reading_a_foreign_blob_raises():
    @register_gradient("BwForeign")
    def foreign(op_def, g_output):
        return [op("BwForeignGradient", ["elsewhere", g_output[0]], "x_grad")], ["x_grad"]

    with pytest.raises(RuntimeError, match=r"'elsewhere' is not in the scope of operator BwForeign"):
        get_backward_pass([op("BwForeign", "x", "y")], {"y": "y_grad"})


def test_gradient_operators_may_read_blobs_made_by_earlier_ones_of_the_same_operator():
    @register_gradient("BwTwoStep")
    def two_step(op_def, g_output):
        return [op("BwStep1", [g_output[0]], "tmp"), op("BwStep2", ["tmp", op_def.inputs[0]], "x_grad")], ["x_grad"]

    grad_ops, grad_map = get_backward_pass([op("BwTwoStep", "x", "y")], {"y": "y_grad"})
    assert [g.type for g in grad_ops] == ["BwStep1", "BwStep2"] and grad_map["x"] == "x_grad"


# --- several consumers: dense accumulation --------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_multi_use_input_is_summed(device):
    ops = [
        op("BwDirect", "in", "hidden1", device_option=device),
        op("BwDirect", "in", "hidden2", device_option=device),
        op("BwDirect", ["hidden1", "hidden2"], "out", device_option=device),
    ]
    grad_ops, grad_map = get_backward_pass(ops, {"out": "out_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDirectGradient", "out_grad", ["hidden1_grad", "hidden2_grad"], device_option=device),
            # The last forward consumer keeps the plain name ...
            op("BwDirectGradient", "hidden2_grad", "in_grad", device_option=device),
            # ... the others are renamed.
            op("BwDirectGradient", "hidden1_grad", "_in_grad_autosplit_0", device_option=device),
            op("Sum", ["in_grad", "_in_grad_autosplit_0"], "in_grad", device_option=device),
        ],
    )
    assert not grad_ops[-1].is_gradient_op
    assert grad_map["in"] == "in_grad"


def test_multi_use_input_with_a_no_gradient_branch_is_not_summed():
    ops = [
        op("BwDirect", "in", "hidden1"),
        op("BwNoGrad", "in", "hidden2"),
        op("BwDirect", ["hidden1", "hidden2"], "out"),
    ]
    grad_ops, _ = get_backward_pass(ops, {"out": "out_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDirectGradient", "out_grad", ["hidden1_grad", "hidden2_grad"]),
            op("BwDirectGradient", "hidden1_grad", "in_grad"),
        ],
    )


def test_multi_use_of_one_version_after_an_in_place_operator():
    ops = [
        op("BwDirect", "in", "in"),
        op("BwDirect", "in", "hidden1"),
        op("BwDirect", "in", "hidden2"),
        op("BwDirect", ["hidden1", "hidden2"], "out"),
    ]
    grad_ops, _ = get_backward_pass(ops, {"out": "out_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDirectGradient", "out_grad", ["hidden1_grad", "hidden2_grad"]),
            op("BwDirectGradient", "hidden2_grad", "in_grad"),
            op("BwDirectGradient", "hidden1_grad", "_in_grad_autosplit_0"),
            op("Sum", ["in_grad", "_in_grad_autosplit_0"], "in_grad"),
            op("BwDirectGradient", "in_grad", "in_grad"),
        ],
    )


def test_several_versions_each_with_several_consumers():
    ops = [
        op("BwDirect", "in", "in"),
        op("BwDirect", "in", "hidden1"),
        op("BwDirect", "in", "hidden2"),
        op("BwDirect", ["hidden1", "hidden2"], "in"),
        op("BwDirect", "in", "hidden3"),
        op("BwDirect", "in", "hidden4"),
        op("BwDirect", "in", "hidden5"),
        op("BwDirect", ["hidden3", "hidden4", "hidden5"], "out"),
    ]
    grad_ops, _ = get_backward_pass(ops, {"out": "out_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDirectGradient", "out_grad", ["hidden3_grad", "hidden4_grad", "hidden5_grad"]),
            op("BwDirectGradient", "hidden5_grad", "in_grad"),
            op("BwDirectGradient", "hidden4_grad", "_in_grad_autosplit_0"),
            op("BwDirectGradient", "hidden3_grad", "_in_grad_autosplit_1"),
            op("Sum", ["in_grad", "_in_grad_autosplit_0", "_in_grad_autosplit_1"], "in_grad"),
            op("BwDirectGradient", "in_grad", ["hidden1_grad", "hidden2_grad"]),
            op("BwDirectGradient", "hidden2_grad", "in_grad"),
            op("BwDirectGradient", "hidden1_grad", "_in_grad_autosplit_0"),
            op("Sum", ["in_grad", "_in_grad_autosplit_0"], "in_grad"),
            op("BwDirectGradient", "in_grad", "in_grad"),
        ],
    )


def test_a_y_that_is_also_consumed_sums_its_autogenerated_gradient():
    # ys = [m2, m1] where m1 also feeds m2: m1's gradient is 1 + dm2/dm1.
    ops = [op("BwDirect", "input", "m1"), op("BwDirect", "m1", "m2")]
    grad_ops, grad_map = get_backward_pass(ops, ["m2", "m1"])
    assert_ops(
        grad_ops,
        [
            op("ConstantFill", "m2", "m2_autogen_grad", args={"value": 1.0}),
            op("ConstantFill", "m1", "m1_autogen_grad", args={"value": 1.0}),
            op("BwDirectGradient", "m2_autogen_grad", "_m1_grad_autosplit_0"),
            op("Sum", ["m1_autogen_grad", "_m1_grad_autosplit_0"], "m1_autogen_grad"),
            op("BwDirectGradient", "m1_autogen_grad", "input_grad"),
        ],
    )
    assert grad_map == {"m2": "m2_autogen_grad", "m1": "m1_autogen_grad", "input": "input_grad"}


def test_sum_op_in_the_forward_pass_and_accumulation():
    ops = [op("BwDirect", "x", "h"), op("Sum", ["h", "h"], "s"), op("BwDirect", "s", "loss")]
    grad_ops, grad_map = get_backward_pass(ops, {"loss": "loss_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDirectGradient", "loss_grad", "s_grad"),
            op("Sum", ["s_grad", "s_grad"], "h_grad"),
            op("BwDirectGradient", "h_grad", "x_grad"),
        ],
    )
    assert grad_map == {"loss": "loss_grad", "s": "s_grad", "h": "h_grad", "x": "x_grad"}


# --- pass-through gradients -----------------------------------------------------------------------


def test_pass_through_in_the_middle():
    #  x1 -> Direct -> x2 ---------------> PassThrough -> x4
    #                   \-> Direct -> x3 -/
    ops = [
        op("BwDirect", "x1", "x2"),
        op("BwDirect", "x2", "x3"),
        op("BwPassThrough", ["x2", "x3"], "x4"),
    ]
    grad_ops, grad_map = get_backward_pass(ops, {"x4": "x4_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDirectGradient", "x4_grad", "x2_grad"),
            op("Sum", ["x2_grad", "x4_grad"], "x2_grad"),
            op("BwDirectGradient", "x2_grad", "x1_grad"),
        ],
    )
    assert grad_map["x1"] == "x1_grad" and grad_map["x3"] == "x4_grad"


def test_pass_through_at_the_leaves():
    ops = [
        op("BwPassThrough", ["x1", "x2"], "x4"),
        op("BwPassThrough", ["x2", "x3"], "x5"),
        op("BwDot", ["x4", "x5"], "x6"),
    ]
    grad_ops, grad_map = get_backward_pass(ops, {"x6": "x6_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDotGradient", ["x4", "x5", "x6_grad"], ["x4_grad", "x5_grad"]),
            op("Sum", ["x5_grad", "x4_grad"], "x2_grad"),
        ],
    )
    assert grad_map == {
        "x6": "x6_grad",
        "x4": "x4_grad",
        "x5": "x5_grad",
        "x2": "x2_grad",
        "x3": "x5_grad",
        "x1": "x4_grad",
    }


def test_pass_through_whose_name_is_the_sum_name_raises():
    # x's gradient from b is passed through under the very name the Sum would write.
    ops = [op("BwDirect", "x", "a"), op("BwPassThrough", ["x"], "b")]
    with pytest.raises(RuntimeError, match="pass-through gradient 'x_grad' has the name the accumulated"):
        get_backward_pass(ops, {"a": "a_grad", "b": "x_grad"})


def test_multi_layer_pass_through():
    ops = [
        op("BwPassThrough", ["x1", "x2"], "x4"),
        op("BwPassThrough", ["x2", "x3"], "x5"),
        op("BwPassThrough", ["x4", "x5"], "x6"),
    ]
    grad_ops, grad_map = get_backward_pass(ops, {"x6": "x6_grad"})
    assert_ops(grad_ops, [op("Sum", ["x6_grad", "x6_grad"], "x2_grad")])
    assert grad_map == {n: "x6_grad" for n in ["x6", "x4", "x5", "x1", "x3"]} | {"x2": "x2_grad"}


# --- StopGradient ---------------------------------------------------------------------------------


def test_stop_gradient_out_of_place():
    ops = [op("BwDirect", "in", "hidden"), op("StopGradient", "hidden", "hidden2"), op("BwDirect", "hidden2", "out")]
    grad_ops, grad_map = get_backward_pass(ops, {"out": "out_grad"})
    assert_ops(grad_ops, [op("BwDirectGradient", "out_grad", "hidden2_grad")])
    assert grad_map == {"out": "out_grad", "hidden2": "hidden2_grad"}


def test_stop_gradient_in_place_cuts_every_earlier_producer():
    ops = [op("BwDirect", "in", "hidden"), op("StopGradient", "hidden", "hidden"), op("BwDirect", "hidden", "out")]
    grad_ops, grad_map = get_backward_pass(ops, {"out": "out_grad"})
    assert_ops(grad_ops, [op("BwDirectGradient", "out_grad", "hidden_grad")])
    # The in-place StopGradient overwrote hidden's gradient with None.
    assert grad_map == {"out": "out_grad"}


def test_stop_gradient_with_several_consumers():
    ops = [
        op("BwDirect", "in", "hidden"),
        op("BwDirect", "hidden", "hidden2"),
        op("StopGradient", "hidden", "hidden3"),
        op("BwDirect", ["hidden2", "hidden3"], "out"),
    ]
    grad_ops, grad_map = get_backward_pass(ops, {"out": "out_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDirectGradient", "out_grad", ["hidden2_grad", "hidden3_grad"]),
            op("BwDirectGradient", "hidden2_grad", "hidden_grad"),
            op("BwDirectGradient", "hidden_grad", "in_grad"),
        ],
    )
    assert grad_map == {
        "out": "out_grad",
        "hidden2": "hidden2_grad",
        "hidden3": "hidden3_grad",
        "hidden": "hidden_grad",
        "in": "in_grad",
    }


def test_stop_gradient_orphan_output_raises_value_error():
    ops = [op("BwDirect", "in", "hidden"), op("StopGradient", "hidden", "auto_blobx"), op("BwDirect", "hidden", "out")]
    with pytest.raises(ValueError, match="StopGradient's output 'auto_blobx' is orphan"):
        get_backward_pass(ops, {"out": "out_grad"})


def test_orphan_check_runs_before_ys_are_registered():
    # Even when the orphan output is itself a y (Caffe2 checks in IR.__init__).
    ops = [op("BwDirect", "in", "hidden"), op("StopGradient", "hidden", "frozen")]
    with pytest.raises(ValueError, match="orphan"):
        get_backward_pass(ops, ["frozen"])
    with pytest.raises(ValueError, match="orphan"):
        get_backward_pass(ops, {})


def test_stop_gradient_output_read_by_an_earlier_operator_is_not_orphan():
    ops = [op("BwDirect", "s", "t"), op("StopGradient", "x", "s")]
    assert get_backward_pass(ops, {}) == ([], {})


# --- ZeroGradient ---------------------------------------------------------------------------------


def test_a_needed_gradient_that_nothing_provides_is_an_error():
    ops = [op("BwNeedAll", ["h_prev", "c_prev"], ["hidden", "cell"]), op("BwDirect", "hidden", "loss")]
    with pytest.raises(ValueError, match=r"gradient of output 1 \('cell'\) is either sparse or not provided"):
        get_backward_pass(ops, ["loss"])


def test_zero_gradient_makes_it_possible():
    ops = [
        op("BwNeedAll", ["h_prev", "c_prev"], ["hidden", "cell"]),
        op("BwDirect", "hidden", "loss"),
        op("ZeroGradient", "cell", []),
    ]
    grad_ops, grad_map = get_backward_pass(ops, ["loss"])
    assert_ops(
        grad_ops,
        [
            op("ConstantFill", "loss", "loss_autogen_grad", args={"value": 1.0}),
            # ZeroGradient has no outputs, yet its maker runs.
            op("ConstantFill", "cell", "cell_grad", args={"value": 0.0}),
            op("BwDirectGradient", "loss_autogen_grad", "hidden_grad"),
            op("BwNeedAllGradient", ["hidden_grad", "cell_grad"], ["h_prev_grad", "c_prev_grad"]),
        ],
    )
    assert grad_ops[1].is_gradient_op
    assert grad_map["cell"] == "cell_grad" and grad_map["h_prev"] == "h_prev_grad"


def test_zero_gradient_alongside_a_real_gradient_is_summed():
    ops = [op("BwDirect", "x", "y"), op("ZeroGradient", "x", []), op("BwDirect", "y", "loss")]
    grad_ops, grad_map = get_backward_pass(ops, {"loss": "loss_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDirectGradient", "loss_grad", "y_grad"),
            op("ConstantFill", "x", "x_grad", args={"value": 0.0}),
            op("BwDirectGradient", "y_grad", "_x_grad_autosplit_0"),
            op("Sum", ["x_grad", "_x_grad_autosplit_0"], "x_grad"),
        ],
    )
    assert grad_map["x"] == "x_grad"


# --- sparse gradients -----------------------------------------------------------------------------


def test_sparse_accumulation_of_passed_through_gradients():
    ops = [
        op("BwGather", ["table", "ids1"], "rows1"),
        op("BwGather", ["table", "ids2"], "rows2"),
        op("BwDot", ["rows1", "rows2"], "score"),
    ]
    grad_ops, grad_map = get_backward_pass(ops, ["score"])
    indices_concat, values_concat = grad_ops[-2:]
    assert indices_concat == op(
        "Concat",
        ["ids2", "ids1"],
        ["table_grad_indices_concat", "table_grad_indices_concat_split"],
        args={"axis": 0},
    )
    assert values_concat == op(
        "Concat",
        ["rows2_grad", "rows1_grad"],
        ["table_grad_values_concat", "table_grad_values_concat_split"],
        args={"axis": 0},
    )
    assert grad_map["table"] == GradientSlice("table_grad_indices_concat", "table_grad_values_concat")
    assert isinstance(grad_map["table"], GradientSlice)


def test_sparse_accumulation_renames_every_generated_part():
    ops = [
        op("BwSparse", ["emb", "ids1"], "v1"),
        op("BwSparse", ["emb", "ids2"], "v2"),
        op("BwDot", ["v1", "v2"], "score"),
    ]
    grad_ops, grad_map = get_backward_pass(ops, {"score": "score_grad"})
    assert_ops(
        grad_ops,
        [
            op("BwDotGradient", ["v1", "v2", "score_grad"], ["v1_grad", "v2_grad"]),
            op(
                "BwSparseGradient",
                ["ids2", "v2_grad"],
                ["_emb_grad_indices_autosplit_0", "_emb_grad_values_autosplit_0"],
            ),
            op(
                "BwSparseGradient",
                ["ids1", "v1_grad"],
                ["_emb_grad_indices_autosplit_1", "_emb_grad_values_autosplit_1"],
            ),
            op(
                "Concat",
                ["_emb_grad_indices_autosplit_0", "_emb_grad_indices_autosplit_1"],
                ["emb_grad_indices_concat", "emb_grad_indices_concat_split"],
                args={"axis": 0},
            ),
            op(
                "Concat",
                ["_emb_grad_values_autosplit_0", "_emb_grad_values_autosplit_1"],
                ["emb_grad_values_concat", "emb_grad_values_concat_split"],
                args={"axis": 0},
            ),
        ],
    )
    assert grad_map["emb"] == GradientSlice("emb_grad_indices_concat", "emb_grad_values_concat")


@register_gradient("BwHalfSparse")
def _half_sparse(op_def, g_output):
    # Indices passed through from the ids input, values computed by an operator.
    values = op_def.inputs[0] + "_grad_values"
    return [op("BwHalfSparseGradient", [g_output[0]], values)], [GradientSlice(op_def.inputs[1], values), None]


@register_gradient("BwTwoOpSparse")
def _two_op_sparse(op_def, g_output):
    # Indices and values written by two different operators (on the devices given in the args).
    indices, values = op_def.inputs[0] + "_grad_indices", op_def.inputs[0] + "_grad_values"
    devices = op_def.args.get("devices", [None, None])
    return (
        [
            op("BwMakeIndices", [op_def.inputs[1]], indices, device_option=devices[0]),
            op("BwMakeValues", [g_output[0]], values, device_option=devices[1]),
        ],
        [GradientSlice(indices, values), None],
    )


def test_sparse_accumulation_with_passed_through_indices_and_computed_values():
    ops = [
        op("BwHalfSparse", ["table", "ids1"], "v1"),
        op("BwHalfSparse", ["table", "ids2"], "v2"),
        op("BwDot", ["v1", "v2"], "score"),
    ]
    grad_ops, grad_map = get_backward_pass(ops, {"score": "score_grad"})
    assert [g.outputs for g in grad_ops[1:3]] == [
        ["_table_grad_values_autosplit_0"],
        ["_table_grad_values_autosplit_1"],
    ]
    assert grad_ops[3].inputs == ["ids2", "ids1"] and grad_ops[3].outputs[0] == "table_grad_indices_concat"
    assert grad_ops[4].inputs == ["_table_grad_values_autosplit_0", "_table_grad_values_autosplit_1"]
    assert grad_map["table"] == GradientSlice("table_grad_indices_concat", "table_grad_values_concat")


def test_sparse_indices_and_values_from_two_operators_make_one_gradient():
    ops = [
        op("BwTwoOpSparse", ["table", "ids1"], "v1"),
        op("BwTwoOpSparse", ["table", "ids2"], "v2"),
        op("BwDot", ["v1", "v2"], "score"),
    ]
    grad_ops, grad_map = get_backward_pass(ops, {"score": "score_grad"})
    assert [g.outputs[0] for g in grad_ops[1:5]] == [
        "_table_grad_indices_autosplit_0",
        "_table_grad_values_autosplit_0",
        "_table_grad_indices_autosplit_1",
        "_table_grad_values_autosplit_1",
    ]
    assert [g.type for g in grad_ops[5:]] == ["Concat", "Concat"]
    assert grad_map["table"] == GradientSlice("table_grad_indices_concat", "table_grad_values_concat")


def test_sparse_indices_and_values_on_different_devices_raise():
    gpu = DeviceOption(DeviceType.OPENCL, 0)
    ops = [op("BwTwoOpSparse", ["table", "ids"], "v", args={"devices": [None, gpu]}), op("BwDirect", "v", "y")]
    with pytest.raises(RuntimeError, match=r"'table'.*different devices \(CPU:0 and OPENCL:0\)"):
        get_backward_pass(ops, {"y": "y_grad"})


def test_a_sparse_part_written_twice_raises():
    @register_gradient("BwTwiceSparse")
    def twice(op_def, g_output):
        g = GradientSlice("t_grad_indices", "t_grad_values")
        return [op("BwA", "ids", g.indices), op("BwB", "ids", g.indices), op("BwC", g_output[0], g.values)], [g, None]

    with pytest.raises(RuntimeError, match="more than once"):
        get_backward_pass([op("BwTwiceSparse", ["t", "ids"], "v")], {"v": "v_grad"})


def test_a_single_sparse_gradient_is_not_concatenated():
    ops = [op("BwSparse", ["emb", "ids"], "v"), op("BwDirect", "v", "loss")]
    grad_ops, grad_map = get_backward_pass(ops, {"loss": "loss_grad"})
    assert [g.type for g in grad_ops] == ["BwDirectGradient", "BwSparseGradient"]
    assert grad_map["emb"] == GradientSlice("emb_grad_indices", "emb_grad_values")


def test_sparse_gradient_of_a_y():
    ops = [op("BwPassThrough", "x", "y")]
    _, grad_map = get_backward_pass(ops, {"y": GradientSlice("yi", "yv")})
    assert grad_map == {"y": GradientSlice("yi", "yv"), "x": GradientSlice("yi", "yv")}
    _, grad_map = get_backward_pass([], {"y": ("yi", "yv")})
    assert grad_map == {"y": GradientSlice("yi", "yv")}


def test_mixing_sparse_and_dense_gradients_raises():
    ops = [
        op("BwGather", ["table", "ids"], "rows"),
        op("BwDirect", "table", "dense"),
        op("BwDot", ["rows", "dense"], "score"),
    ]
    with pytest.raises(RuntimeError, match=r"'table'.*mix of sparse and dense"):
        get_backward_pass(ops, ["score"])


def test_gradients_on_different_devices_raise():
    gpu = DeviceOption(DeviceType.OPENCL, 0)
    ops = [
        op("BwDirect", "in", "h1"),
        op("BwDirect", "in", "h2", device_option=gpu),
        op("BwDirect", ["h1", "h2"], "out"),
    ]
    with pytest.raises(RuntimeError, match=r"'in'.*same device option \(OPENCL:0, CPU:0\)"):
        get_backward_pass(ops, {"out": "out_grad"})


def test_cpu_options_with_different_ids_are_the_same_device():
    """Caffe2 ``core.py`` ``device_option_equal``: any two CPU options are equal; the Sum is made."""
    ops = [
        op("BwDirect", "in", "h1", device_option=DeviceOption(DeviceType.CPU, 1)),
        op("BwDirect", "in", "h2", device_option=DeviceOption(DeviceType.CPU, 0)),
        op("BwDirect", ["h1", "h2"], "out"),
    ]
    grad_ops, grad_map = get_backward_pass(ops, {"out": "out_grad"})
    assert grad_ops[-1].type == "Sum" and grad_map["in"] == "in_grad"


def test_same_id_on_different_device_types_raises():
    """Caffe2 compares only device_id between non-CPU options; a Sum cannot read two devices, so we raise."""
    ops = [
        op("BwDirect", "in", "h1", device_option=DeviceOption(DeviceType.OPENCL, 1)),
        op("BwDirect", "in", "h2", device_option=DeviceOption(DeviceType.CUDA, 1)),
        op("BwDirect", ["h1", "h2"], "out"),
    ]
    with pytest.raises(RuntimeError, match=r"same device option \(CUDA:1, OPENCL:1\)"):
        get_backward_pass(ops, {"out": "out_grad"})


def test_cpu_default_and_explicit_cpu_are_the_same_device():
    ops = [
        op("BwDirect", "in", "h1"),
        op("BwDirect", "in", "h2", device_option=DeviceOption()),
        op("BwDirect", ["h1", "h2"], "out"),
    ]
    grad_ops, _ = get_backward_pass(ops, {"out": "out_grad"})
    # The Sum takes the device option of the first generator (the last consumer's gradient).
    assert grad_ops[-1].type == "Sum" and grad_ops[-1].device_option == DeviceOption()


# --- errors from makers and arguments -------------------------------------------------------------


def test_operator_without_gradient_maker_on_the_path_raises():
    ops = [op("BwUnknownType", "x", "y")]
    with pytest.raises(caffe2op.GradientNotRegisteredError, match="BwUnknownType"):
        get_backward_pass(ops, ["y"])
    # Off the gradient path it is never asked for.
    assert get_backward_pass([op("BwUnknownType", "x", "y"), op("BwDirect", "x", "z")], ["z"])[1]["x"] == "x_grad"


def test_should_not_do_gradient_on_the_path_raises():
    ops = [op("SparseNormalize", ["w", "idx"], "w"), op("BwDirect", "w", "loss")]
    with pytest.raises(RuntimeError, match="One should not call gradient for operator SparseNormalize"):
        get_backward_pass(ops, ["loss"])


@pytest.mark.parametrize("ys", ["loss", 3, None, {"loss": 3}, [3], {"": None}, {"loss": ("a",)}])
def test_bad_ys_raise_type_error(ys):
    with pytest.raises(TypeError, match="get_backward_pass"):
        get_backward_pass([op("BwDirect", "x", "loss")], ys)


def test_bad_ops_raise_type_error():
    with pytest.raises(TypeError, match="ops must be a list"):
        get_backward_pass(5, ["y"])
    with pytest.raises(TypeError, match=r"ops\[1\] must be an OperatorDef"):
        get_backward_pass([op("BwDirect", "x", "y"), "BwDirect"], ["y"])


# --- larger nets ----------------------------------------------------------------------------------


def test_a_long_chain_is_handled():
    n = 3000
    ops = [op("BwDirect", f"b{i}", f"b{i + 1}") for i in range(n)]
    grad_ops, grad_map = get_backward_pass(ops, [f"b{n}"])
    assert len(grad_ops) == n + 1 and grad_map["b0"] == "b0_grad"
    assert grad_ops[-1] == op("BwDirectGradient", "b1_grad", "b0_grad")


@given(n_consumers=st.integers(2, 8))
def test_any_number_of_consumers_gives_one_sum_with_autosplit_names(n_consumers):
    ops = [op("BwDirect", "x", f"h{i}") for i in range(n_consumers)]
    ops.append(op("BwDirect", [f"h{i}" for i in range(n_consumers)], "y"))
    grad_ops, _ = get_backward_pass(ops, {"y": "y_grad"})
    *per_consumer, total = grad_ops[1:]
    # Backward order: the last consumer first, with the plain name.
    assert [g.inputs[0] for g in per_consumer] == [f"h{i}_grad" for i in reversed(range(n_consumers))]
    assert [g.outputs[0] for g in per_consumer] == ["x_grad"] + [
        f"_x_grad_autosplit_{k}" for k in range(n_consumers - 1)
    ]
    assert total == op("Sum", ["x_grad"] + [f"_x_grad_autosplit_{k}" for k in range(n_consumers - 1)], "x_grad")


# --- Net.add_gradient_operators -------------------------------------------------------------------


def test_net_add_gradient_operators_appends_and_returns_the_map():
    net = caffe2op.Net("bw")
    net.add_op(op("BwDirect", "in", "hidden"))
    net.add_op(op("BwDirect", "hidden", "out"))
    grad_map = net.add_gradient_operators(["out"])
    assert [o.type for o in net.ops] == ["BwDirect", "BwDirect", "ConstantFill", "BwDirectGradient", "BwDirectGradient"]
    assert grad_map == {"out": "out_autogen_grad", "hidden": "hidden_grad", "in": "in_grad"}


def test_net_is_unchanged_when_the_backward_pass_fails():
    net = caffe2op.Net("bw_fail")
    net.add_op(op("BwDirect", "x", "x"))
    net.add_op(op("BwDirect", "y", "x"))
    net.add_op(op("BwDirect", "x", "y"))
    before = copy.deepcopy(net.ops)
    with pytest.raises(RuntimeError, match="version"):
        net.add_gradient_operators({"y": "y_grad"})
    assert net.ops == before


def test_get_backward_pass_accepts_a_net():
    net = caffe2op.Net("as_ops")
    net.add_op(op("BwDirect", "a", "b"))
    assert get_backward_pass(net, {"b": "g"})[1] == {"b": "g", "a": "a_grad"}
    assert caffe2op.get_backward_pass is get_backward_pass


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("fails", [False, True])
def test_get_backward_pass_leaves_the_garbage_collector_as_it_found_it(enabled, fails):
    # The pass pauses the collector while it runs (see get_backward_pass); it must restore it, even on error.
    import gc

    ops = [op("BwDirect", "x", "x"), op("BwDirect", "y", "x"), op("BwDirect", "x", "y")]
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        if fails:
            with pytest.raises(RuntimeError, match="version"):
                get_backward_pass(ops, {"y": "y_grad"})
        else:
            get_backward_pass(ops[:1], ["x"])
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
