# SPDX-License-Identifier: BSD-3-Clause
"""Gradient makers, their registry and get_gradient_defs (Caffe2's operator_gradient.h semantics)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import caffe2op
from caffe2op import (
    DeviceOption,
    DeviceType,
    GradientMakerBase,
    GradientNotRegisteredError,
    GradientSlice,
    OperatorDef,
    get_gradient_defs,
    register_gradient,
)

OPENCL_1 = DeviceOption(DeviceType.OPENCL, 1)


# --- makers used by the tests ---------------------------------------------------------------------


@register_gradient("GtDense")
class _DenseMaker(GradientMakerBase):
    """(x, w) -> y: GtDenseGradient(x, w, y_grad) -> (x_grad, w_grad)."""

    def get_gradient_defs(self):
        return self.single_gradient_def(
            "GtDenseGradient", "", [self.I(0), self.I(1), self.GO(0)], [self.GI(0), self.GI(1)], mode="own"
        )


@register_gradient("GtSparse")
class _SparseMaker(GradientMakerBase):
    """(table, idx) -> rows: a gather whose table gradient is a GradientSlice made by one operator."""

    def get_gradient_defs(self):
        return self.single_gradient_def("GtSparseGradient", "", [self.I(1), self.GO(0)], [self.GI_I(0), self.GI_V(0)])


@register_gradient("GtGather")
class _GatherMaker(GradientMakerBase):
    """(table, idx) -> rows: indices and values both passed through, no operator (as Caffe2's Gather)."""

    def get_gradient_defs(self):
        self.set_sparse(0, self.I(1), self.GO(0))
        return []


# --- GradientSlice --------------------------------------------------------------------------------


def test_gradient_slice_is_a_named_pair():
    g = GradientSlice(indices="i", values="v")
    assert g == ("i", "v") and g.indices == "i" and g.values == "v"
    assert isinstance(g, tuple) and len(g) == 2


# --- helpers of GradientMakerBase -----------------------------------------------------------------


def _maker(g_output=("y_grad",), inputs=("x", "w"), outputs=("y",)):
    op = OperatorDef(type="GtDense", inputs=list(inputs), outputs=list(outputs))
    return GradientMakerBase(op, list(g_output))


def test_names_of_inputs_outputs_and_gradients():
    m = _maker(g_output=[GradientSlice("yi", "yv")], outputs=["y"])
    assert (m.I(0), m.I(1), m.O(0)) == ("x", "w", "y")
    assert m.GI(0) == "x_grad"
    assert (m.GI_I(1), m.GI_V(1)) == ("w_grad_indices", "w_grad_values")
    assert (m.GO_I(0), m.GO_V(0)) == ("yi", "yv")
    assert m.g_input() == ["x_grad", GradientSlice("w_grad_indices", "w_grad_values")]


@pytest.mark.parametrize("call", ["I", "O", "GI", "GI_I", "GI_V", "GO", "GO_I", "GO_V"])
@pytest.mark.parametrize("index", [-1, 2, 5])
def test_out_of_range_index_raises_index_error(call, index):
    m = _maker()
    with pytest.raises(IndexError, match="GtDense"):
        getattr(m, call)(index)


def test_go_of_missing_gradient_says_not_provided():
    m = _maker(g_output=[None])
    with pytest.raises(ValueError, match=r"GtDense: gradient of output 0 \('y'\) is either sparse or not provided"):
        m.GO(0)
    with pytest.raises(ValueError, match="either dense or not provided"):
        m.GO_I(0)


def test_go_of_sparse_and_go_i_of_dense_raise():
    with pytest.raises(ValueError, match="either sparse or not provided"):
        _maker(g_output=[GradientSlice("i", "v")]).GO(0)
    with pytest.raises(ValueError, match="either dense or not provided"):
        _maker(g_output=["y_grad"]).GO_V(0)


@pytest.mark.parametrize(
    "first, second",
    [
        (lambda m: m.GI(0), lambda m: m.GI_I(0)),
        (lambda m: m.GI(0), lambda m: m.GI_V(0)),
        (lambda m: m.GI(0), lambda m: m.set_sparse(0, "i", "v")),
        (lambda m: m.GI_I(0), lambda m: m.GI(0)),
        (lambda m: m.set_sparse(0, "i", "v"), lambda m: m.set_dense(0, "d")),
        (lambda m: m.set_dense(0, "d"), lambda m: m.GI_V(0)),
    ],
)
def test_mixing_dense_and_sparse_for_one_input_raises(first, second):
    m = _maker()
    first(m)
    with pytest.raises(ValueError, match=r"input 0 \('x'\).*both a dense and a sparse"):
        second(m)


def test_sparse_gradient_needs_indices_and_values():
    m = _maker()
    m.GI_I(0)
    with pytest.raises(ValueError, match="needs both indices and values"):
        m.g_input()
    m.GI_V(0)
    assert m.g_input() == [GradientSlice("x_grad_indices", "x_grad_values"), None]


def test_set_dense_and_set_sparse_record_custom_names():
    m = _maker()
    m.set_dense(0, "custom")
    m.set_sparse(1, "ci", "cv")
    assert m.g_input() == ["custom", GradientSlice("ci", "cv")]
    with pytest.raises(TypeError, match="blob name"):
        m.set_dense(0, 3)


def test_maker_checks_g_output():
    op = OperatorDef(type="GtDense", inputs=["x", "w"], outputs=["y"])
    with pytest.raises(ValueError, match="one entry per output"):
        GradientMakerBase(op, ["a", "b"])
    with pytest.raises(TypeError, match="GradientSlice"):
        GradientMakerBase(op, [3])
    with pytest.raises(TypeError, match="OperatorDef"):
        GradientMakerBase("GtDense", ["y_grad"])
    assert GradientMakerBase(op, [("i", "v")]).g_output == [GradientSlice("i", "v")]


def test_base_get_gradient_defs_is_abstract():
    with pytest.raises(NotImplementedError):
        _maker().get_gradient_defs()


def test_single_gradient_def_builds_one_unchecked_operator():
    [op] = GradientMakerBase.single_gradient_def("Anything", "n", "a", ["b", "c"], k=1)
    assert op == OperatorDef(type="Anything", inputs=["a"], outputs=["b", "c"], args={"k": 1}, name="n")


# --- get_gradient_defs ----------------------------------------------------------------------------


def test_get_gradient_defs_copies_device_engine_and_args_and_flags():
    fwd = OperatorDef(
        type="GtDense",
        inputs=["x", "w"],
        outputs=["y"],
        args={"alpha": 0.5, "mode": "forward"},
        device_option=OPENCL_1,
        engine="FAST",
    )
    ops, g_input = get_gradient_defs(fwd, ["y_grad"])
    [op] = ops
    assert op.type == "GtDenseGradient"
    assert op.inputs == ["x", "w", "y_grad"] and op.outputs == ["x_grad", "w_grad"]
    assert op.device_option == OPENCL_1 and op.engine == "FAST"
    # Every forward argument is copied; the gradient operator's own value of a shared name is kept.
    assert op.args == {"alpha": 0.5, "mode": "own"}
    assert op.is_gradient_op is True
    assert g_input == ["x_grad", "w_grad"]
    assert fwd.args == {"alpha": 0.5, "mode": "forward"}


def test_get_gradient_defs_without_device_or_engine_leaves_them_unset():
    fwd = OperatorDef(type="GtDense", inputs=["x", "w"], outputs=["y"])
    [op], _ = get_gradient_defs(fwd, ["y_grad"])
    assert op.device_option is None and op.engine == "" and op.args == {"mode": "own"}


@given(
    args=st.dictionaries(
        st.text("abcdefgh", min_size=1, max_size=6).filter(lambda k: k != "mode"),
        st.one_of(st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=3)),
        max_size=5,
    ),
    device=st.sampled_from([None, DeviceOption(), OPENCL_1, DeviceOption(DeviceType.CUDA, 0)]),
)
def test_every_forward_argument_reaches_every_gradient_operator(args, device):
    @register_gradient("GtTwoOps")
    class TwoOps(GradientMakerBase):
        def get_gradient_defs(self):
            return [
                OperatorDef(type="GtA", inputs=[self.GO(0)], outputs=["tmp"]),
                OperatorDef(type="GtB", inputs=["tmp"], outputs=[self.GI(0)]),
            ]

    fwd = OperatorDef(type="GtTwoOps", inputs=["x"], outputs=["y"], args=args, device_option=device)
    ops, _ = get_gradient_defs(fwd, ["y_grad"])
    assert len(ops) == 2
    for op in ops:
        assert op.args == args
        assert op.device_option == device
        assert op.is_gradient_op


@given(
    args=st.dictionaries(st.text("abcdefgh", min_size=1, max_size=6), st.integers(-5, 5), max_size=5),
    device=st.sampled_from([None, OPENCL_1]),
)
def test_gradient_function_operators_are_returned_untouched(args, device):
    """Caffe2 ``core.py`` ``GradientRegistry.GetGradientForOp``: a Python gradient function's
    operators are used as it made them (only C++ makers copy the forward settings)."""

    @register_gradient("GtFunctionOps")
    def function_ops(op_def, g_output):
        return [OperatorDef(type="GtA", inputs=[g_output[0]], outputs=["x_grad"], engine="OWN")], ["x_grad"]

    fwd = OperatorDef(type="GtFunctionOps", inputs=["x"], outputs=["y"], args=args, device_option=device, engine="E")
    [op], _ = get_gradient_defs(fwd, ["y_grad"])
    assert op == OperatorDef(type="GtA", inputs=["y_grad"], outputs=["x_grad"], engine="OWN")
    assert op.args == {} and op.device_option is None and op.is_gradient_op is False


def test_gradient_maker_must_return_g_input_as_a_list():
    """issue 10 item 14: ``g_input="xy"`` was read as two gradients."""

    @register_gradient("GtStringGInput")
    def string_g_input(op_def, g_output):
        return [], "xy"

    fwd = OperatorDef(type="GtStringGInput", inputs=["a", "b"], outputs=["y"])
    with pytest.raises(TypeError, match=r"GtStringGInput: .*g_input as a list.*'xy'"):
        get_gradient_defs(fwd, ["y_grad"])


def test_g_output_must_be_a_list():
    """issue 10 item 13: ``get_gradient_defs(op, None)`` said "'NoneType' object is not iterable"."""
    fwd = OperatorDef(type="GtTwoOps", inputs=["x"], outputs=["y"])
    with pytest.raises(TypeError, match=r"GtTwoOps: g_output must be a list .*None"):
        get_gradient_defs(fwd, None)


def test_forward_operator_is_verified_against_its_schema():
    """Caffe2 ``operator_gradient.h``: ``GradientMakerBase::Get`` calls ``VerifyOp`` on the forward operator."""
    bad = OperatorDef(type="Sum", inputs=[], outputs=["s"])
    with pytest.raises(caffe2op.SchemaError, match=r"Sum: the forward operator does not pass its schema.*VerifyOp"):
        get_gradient_defs(bad, ["s_grad"])
    with pytest.raises(caffe2op.SchemaError, match="VerifyOp"):
        caffe2op.get_backward_pass([bad], ["s"])


def test_gradient_operators_are_fresh_objects():
    shared = OperatorDef(type="GtShared", inputs=["y_grad"], outputs=["x_grad"])

    @register_gradient("GtShared")
    def shared_maker(op_def, g_output):
        return [shared], ["x_grad"]

    fwd = OperatorDef(type="GtShared", inputs=["x"], outputs=["y"], args={"k": 1})
    [op], _ = get_gradient_defs(fwd, ["y_grad"])
    op.outputs[0] = "renamed"
    assert shared.outputs == ["x_grad"] and shared.args == {}


class _Name(str):
    """A str subclass: operator definitions hold plain str."""


def test_gradient_operators_edited_by_their_maker_are_copied_through_the_checks():
    """A maker may edit its operators after making them; the copies are what the constructor makes of them."""
    edited = OperatorDef(type="GtEdited", inputs=["y_grad"], outputs=["x_grad"], args={"shape": [1, 2]})
    edited.inputs = ("y_grad", _Name("y"))
    edited.args = {"scale": np.float32(2.0), "shape": (3, np.int64(4)), "plain": [5]}

    @register_gradient("GtEdited")
    def edited_maker(op_def, g_output):
        return [edited], ["x_grad"]

    [op], _ = get_gradient_defs(OperatorDef(type="GtEdited", inputs=["x"], outputs=["y"]), ["y_grad"])
    assert op == OperatorDef(
        type="GtEdited", inputs=["y_grad", "y"], outputs=["x_grad"], args={"scale": 2.0, "shape": [3, 4], "plain": [5]}
    )
    assert [type(name) for name in op.inputs] == [str, str] and type(op.args["scale"]) is float
    assert op.args["plain"] is not edited.args["plain"] and op.inputs is not edited.inputs


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda op: op.inputs.append(3), TypeError, r"GtBadEdit: inputs must be blob names \(str\), got int \(3\)"),
        (lambda op: op.outputs.append(""), ValueError, r"GtBadEdit: outputs must be non-empty blob names"),
        (lambda op: setattr(op, "name", 7), TypeError, r"GtBadEdit: name must be a str, got int \(7\)"),
        (lambda op: setattr(op, "device_option", "cpu"), TypeError, r"GtBadEdit: device_option must be a DeviceOp"),
    ],
)
def test_gradient_operators_edited_wrongly_by_their_maker_raise_what_the_constructor_raises(edit, error, match):
    made = OperatorDef(type="GtBadEdit", inputs=["y_grad"], outputs=["x_grad"])
    edit(made)

    @register_gradient("GtBadEdit")
    def bad_maker(op_def, g_output):
        return [made], ["x_grad"]

    with pytest.raises(error, match=match):
        get_gradient_defs(OperatorDef(type="GtBadEdit", inputs=["x"], outputs=["y"]), ["y_grad"])


def test_operator_names_of_a_str_subclass_become_str():
    op = OperatorDef(type="GtNames", inputs=[_Name("a"), "b"], outputs=(_Name("c"),))
    assert op.inputs == ["a", "b"] and op.outputs == ["c"]
    assert {type(name) for name in op.inputs + op.outputs} == {str}


def test_operator_names_are_copied_from_the_callers_lists():
    """A definition owns its name lists: editing the caller's list afterwards changes nothing."""
    inputs, outputs = ["a", "b"], ["c"]
    op = OperatorDef(type="GtOwnNames", inputs=inputs, outputs=outputs)
    inputs.append("z")
    outputs[0] = "renamed"
    assert op.inputs == ["a", "b"] and op.outputs == ["c"]
    with pytest.raises(ValueError, match="GtOwnNames: inputs must be non-empty blob names"):
        OperatorDef(type="GtOwnNames", inputs=["a", ""])


def test_copy_flags_can_be_turned_off():
    @register_gradient("GtNoCopy")
    class NoCopy(GradientMakerBase):
        copy_device_option = False
        copy_engine = False
        copy_arguments = False

        def get_gradient_defs(self):
            return self.single_gradient_def("GtNoCopyGradient", "", [self.GO(0)], [self.GI(0)])

    fwd = OperatorDef(type="GtNoCopy", inputs="x", outputs="y", args={"a": 1}, device_option=OPENCL_1, engine="E")
    [op], _ = get_gradient_defs(fwd, ["y_grad"])
    assert op.args == {} and op.device_option is None and op.engine == ""


def test_function_maker_may_return_one_operator_or_none():
    @register_gradient("GtOneOp")
    def one(op_def, g_output):
        return OperatorDef(type="GtOneOpGradient", inputs=g_output, outputs=["x_grad"]), ["x_grad"]

    @register_gradient("GtNoOps")
    def none(op_def, g_output):
        return None, [g_output[0]]

    [op], g_input = get_gradient_defs(OperatorDef(type="GtOneOp", inputs="x", outputs="y"), ["y_grad"])
    assert op.type == "GtOneOpGradient" and not op.is_gradient_op and g_input == ["x_grad"]
    assert get_gradient_defs(OperatorDef(type="GtNoOps", inputs="x", outputs="y"), ["g"]) == ([], ["g"])


def test_function_maker_sparse_gradient_as_tuple_becomes_gradient_slice():
    @register_gradient("GtTuple")
    def tuple_maker(op_def, g_output):
        return [], [("i", "v"), None]

    _, g_input = get_gradient_defs(OperatorDef(type="GtTuple", inputs=["t", "i"], outputs="y"), ["y_grad"])
    assert g_input == [GradientSlice("i", "v"), None] and isinstance(g_input[0], GradientSlice)


def test_g_input_must_have_one_entry_per_input():
    @register_gradient("GtShort")
    def short(op_def, g_output):
        return [], ["x_grad"]

    with pytest.raises(ValueError, match="GtShort: the gradient maker returned 1 input gradients for 2 inputs"):
        get_gradient_defs(OperatorDef(type="GtShort", inputs=["x", "w"], outputs="y"), ["y_grad"])


@pytest.mark.parametrize(
    "result, match",
    [
        ("not a pair", "must return"),
        (([3], ["x_grad"]), "expected OperatorDef"),
        (([], [42]), "GradientSlice"),
        (([], 5), "g_input as a list"),
        ((7, ["x_grad"]), "list of OperatorDef"),
    ],
)
def test_maker_returning_garbage_raises_type_error(result, match):
    @register_gradient("GtGarbage")
    def garbage(op_def, g_output):
        return result

    with pytest.raises(TypeError, match=match):
        get_gradient_defs(OperatorDef(type="GtGarbage", inputs="x", outputs="y"), ["y_grad"])


def test_unregistered_type_raises_key_error_with_suggestions():
    op = OperatorDef(type="GtDenze", inputs=["x", "w"], outputs="y")
    with pytest.raises(GradientNotRegisteredError) as info:
        get_gradient_defs(op, ["y_grad"])
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert "'GtDenze'" in message and "register_gradient" in message and "Did you mean: GtDense" in message


def test_get_gradient_defs_rejects_non_operator_and_wrong_g_output():
    with pytest.raises(TypeError, match="OperatorDef"):
        get_gradient_defs({"type": "Sum"}, ["g"])
    with pytest.raises(ValueError, match="one entry per output"):
        get_gradient_defs(OperatorDef(type="Sum", inputs=["a"], outputs=["s"]), [])


# --- the three "no gradient" flavours -------------------------------------------------------------


def test_no_gradient_gives_no_operators_and_no_gradients():
    caffe2op.no_gradient("GtPrint")
    op = OperatorDef(type="GtPrint", inputs=["a", "b"], outputs=[])
    assert get_gradient_defs(op, []) == ([], [None, None])


def test_should_not_do_gradient_raises_runtime_error():
    caffe2op.should_not_do_gradient("GtProjection")
    op = OperatorDef(type="GtProjection", inputs=["w"], outputs=["w"])
    with pytest.raises(RuntimeError, match=r"^One should not call gradient for operator GtProjection\.$") as info:
        get_gradient_defs(op, ["w_grad"])
    assert not isinstance(info.value, NotImplementedError)


def test_gradient_not_implemented_yet_raises_a_different_error():
    caffe2op.gradient_not_implemented_yet("GtLater")
    op = OperatorDef(type="GtLater", inputs=["x"], outputs=["y"])
    with pytest.raises(NotImplementedError, match=r"^Operator GtLater should have a gradient but is not implemented"):
        get_gradient_defs(op, ["y_grad"])


@pytest.mark.parametrize(
    "register", [caffe2op.no_gradient, caffe2op.should_not_do_gradient, caffe2op.gradient_not_implemented_yet]
)
def test_registration_helpers_check_the_type(register):
    with pytest.raises(TypeError, match="non-empty str"):
        register("")
    with pytest.raises(TypeError, match="non-empty str"):
        caffe2op.register_gradient(None)


def test_register_gradient_rejects_non_makers():
    with pytest.raises(TypeError, match="GradientMakerBase subclass or a function"):
        register_gradient("GtBad")(int)
    with pytest.raises(TypeError, match="GradientMakerBase subclass or a function"):
        register_gradient("GtBad")("not callable")


def test_register_gradient_returns_the_object_and_later_registration_wins():
    def first(op_def, g_output):
        return [], ["first"]

    def second(op_def, g_output):
        return [], ["second"]

    assert register_gradient("GtTwice")(first) is first
    register_gradient("GtTwice")(second)
    assert get_gradient_defs(OperatorDef(type="GtTwice", inputs="x", outputs="y"), ["g"])[1] == ["second"]
    assert "GtTwice" in caffe2op.registered_gradients()


def test_a_type_with_only_a_gradient_maker_is_a_known_operator_type():
    @register_gradient("GtOnlyGradient")
    def only(op_def, g_output):
        return [], [g_output[0]]

    op = caffe2op.create_operator("GtOnlyGradient", "x", "y")
    assert op.type == "GtOnlyGradient"
    net = caffe2op.Net("known")
    assert net.GtOnlyGradient("x", "y") == "y"


# --- the built-in operators' gradients ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
def test_zero_gradient_maker_emits_float32_zeros_shaped_like_x(dtype):
    fwd = caffe2op.create_operator("ZeroGradient", "h", [])
    [op], g_input = get_gradient_defs(fwd, [])
    assert op == OperatorDef(type="ConstantFill", inputs=["h"], outputs=["h_grad"], args={"value": 0.0})
    assert op.is_gradient_op and g_input == ["h_grad"]
    assert caffe2op.GetZeroGradientOpGradient is not None
    ws = caffe2op.Workspace()
    ws.feed_blob("h", np.ones((2, 3), dtype=dtype))
    ws.run_operator_once(op)
    grad = ws.fetch_blob("h_grad")
    # Caffe2's ConstantFill takes its dtype from value, never from the input.
    assert grad.dtype == np.float32 and grad.shape == (2, 3) and not grad.any()


def test_zero_gradient_maker_copies_the_device():
    fwd = caffe2op.create_operator("ZeroGradient", "h", [], device_option=OPENCL_1)
    [op], _ = get_gradient_defs(fwd, [])
    assert op.device_option == OPENCL_1


@pytest.mark.parametrize("op_type", ["StopGradient", "ConstantFill"])
def test_stop_gradient_and_constant_fill_have_no_gradient(op_type):
    fwd = caffe2op.create_operator(op_type, "x", "y")
    assert get_gradient_defs(fwd, ["y_grad"]) == ([], [None])


@pytest.mark.parametrize("op_type", ["SparseNormalize", "Float16SparseNormalize"])
def test_sparse_normalize_should_not_do_gradient(op_type):
    fwd = caffe2op.create_operator(op_type, ["w", "idx"], "w")
    with pytest.raises(RuntimeError, match=f"One should not call gradient for operator {op_type}"):
        get_gradient_defs(fwd, ["w_grad"])


@given(n=st.integers(1, 6))
def test_sum_gradient_passes_the_output_gradient_through(n):
    inputs = [f"x{i}" for i in range(n)]
    fwd = caffe2op.create_operator("Sum", inputs, "s")
    assert get_gradient_defs(fwd, ["s_grad"]) == ([], ["s_grad"] * n)


def test_sum_gradient_needs_a_dense_output_gradient():
    fwd = caffe2op.create_operator("Sum", ["a", "b"], "s")
    with pytest.raises(ValueError, match="either sparse or not provided"):
        get_gradient_defs(fwd, [GradientSlice("i", "v")])


def test_sparse_makers_record_gradient_slices():
    fwd = OperatorDef(type="GtSparse", inputs=["table", "idx"], outputs=["rows"])
    [op], g_input = get_gradient_defs(fwd, ["rows_grad"])
    assert op.outputs == ["table_grad_indices", "table_grad_values"]
    assert g_input == [GradientSlice("table_grad_indices", "table_grad_values"), None]
    fwd = OperatorDef(type="GtGather", inputs=["table", "idx"], outputs=["rows"])
    assert get_gradient_defs(fwd, ["rows_grad"]) == ([], [GradientSlice("idx", "rows_grad"), None])


# --- describe_gradient (the Gradient section of the operator pages) ---------------------------------


def test_describe_gradient_of_the_declarations():
    from caffe2op.gradient import describe_gradient

    caffe2op.no_gradient("GtDescribeNone")
    caffe2op.should_not_do_gradient("GtDescribeNever")
    caffe2op.gradient_not_implemented_yet("GtDescribeLater")
    assert describe_gradient("GtDescribeNone").startswith("No gradient (``NO_GRADIENT``")
    assert describe_gradient("GtDescribeNever").startswith("Asking for a gradient raises :class:`RuntimeError`")
    assert "raises :class:`NotImplementedError`" in describe_gradient("GtDescribeLater")
    assert describe_gradient("GtNothingRegisteredForThis") is None


def test_describe_gradient_names_the_maker_and_its_summary():
    from caffe2op.gradient import describe_gradient

    # A public maker class is linked; a private class or function is named; the summary is its own first line.
    assert describe_gradient("ZeroGradient") == (
        "Gradient maker: :class:`~caffe2op.GetZeroGradientOpGradient` (a class).\n\n"
        "The gradient maker of ZeroGradient: ``ConstantFill([X], [X_grad], value=0.0)``."
    )
    assert describe_gradient("GtDense") == (
        "Gradient maker: ``_DenseMaker`` (a class).\n\n(x, w) -> y: GtDenseGradient(x, w, y_grad) -> (x_grad, w_grad)."
    )
    assert describe_gradient("Sum").startswith("Gradient maker: ``sum_gradient`` (a function).\n\nSum's gradient: ")

    @register_gradient("GtDescribeUndocumented")
    class _Undocumented(GradientMakerBase):
        def get_gradient_defs(self):
            return []

    # No docstring of its own: no summary (not GradientMakerBase's).
    assert describe_gradient("GtDescribeUndocumented") == "Gradient maker: ``_Undocumented`` (a class)."
