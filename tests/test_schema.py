# SPDX-License-Identifier: BSD-3-Clause
"""OpSchema rules (Caffe2's counts, in-place rules, arguments) and the schema registry."""

import math

import numpy as np
import pytest

import caffe2op
from caffe2op import Argument, OperatorDef, OpSchema, SchemaError, SchemaTypeError


def _op(op_type, inputs, outputs, **args):
    return OperatorDef(type=op_type, inputs=inputs, outputs=outputs, args=args)


def test_counts_exact_range_and_unbounded():
    exact = OpSchema("T1", num_inputs=2, num_outputs=1)
    ranged = OpSchema("T2", num_inputs=(1, 3), num_outputs=(0, 2))
    unbounded = OpSchema("T3", num_inputs=(1, None))
    exact.verify(_op("T1", ["a", "b"], ["c"]))
    with pytest.raises(SchemaError, match=r"T1: expects 2 inputs, got 1 \(NumInputs\)"):
        exact.verify(_op("T1", ["a"], ["c"]))
    with pytest.raises(SchemaError, match=r"T1: expects 1 output, got 2 \(NumOutputs\)"):
        exact.verify(_op("T1", ["a", "b"], ["c", "d"]))
    with pytest.raises(SchemaError, match="T2: expects 1 to 3 inputs, got 4"):
        ranged.verify(_op("T2", list("abcd"), []))
    unbounded.verify(_op("T3", [f"x{i}" for i in range(100)], ["y"]))
    with pytest.raises(SchemaError, match="T3: expects at least 1 input, got 0"):
        unbounded.verify(_op("T3", [], ["y"]))
    assert unbounded.input_range == (1, math.inf)


def test_inplace_is_refused_unless_allowed():
    schema = OpSchema("NoInplace", num_inputs=2, num_outputs=1)
    with pytest.raises(SchemaError, match=r"input 1 and output 0 are the same blob \('b'\).*AllowInplace"):
        schema.verify(_op("NoInplace", ["a", "b"], ["b"]))


def test_allow_inplace_pairs_and_callable():
    pairs = OpSchema("Pairs", num_inputs=2, num_outputs=1, allow_inplace=[(1, 0)])
    pairs.verify(_op("Pairs", ["a", "b"], ["b"]))
    pairs.verify(_op("Pairs", ["a", "b"], ["c"]))
    with pytest.raises(SchemaError):
        pairs.verify(_op("Pairs", ["a", "b"], ["a"]))
    anything = OpSchema("Fn", num_inputs=2, num_outputs=2, allow_inplace=lambda i, o: True)
    anything.verify(_op("Fn", ["a", "b"], ["b", "a"]))


def test_enforce_inplace():
    schema = OpSchema("Enf", num_inputs=2, num_outputs=1, enforce_inplace=[(1, 0)])
    schema.verify(_op("Enf", ["a", "b"], ["b"]))
    expected = r"output 0 \('c'\) must be the same blob as input 1 \('b'\) \(EnforceInplace\)"
    with pytest.raises(SchemaError, match=expected):
        schema.verify(_op("Enf", ["a", "b"], ["c"]))


def test_one_to_one_inplace_rules():
    allow = OpSchema("Allow11", num_inputs=2, num_outputs=2, allow_one_to_one_inplace=True)
    allow.verify(_op("Allow11", ["a", "b"], ["a", "b"]))
    allow.verify(_op("Allow11", ["a", "b"], ["c", "d"]))
    with pytest.raises(SchemaError):
        allow.verify(_op("Allow11", ["a", "b"], ["b", "x"]))
    enforce = OpSchema("Enf11", num_inputs=(2, 3), num_outputs=1, enforce_one_to_one_inplace=True)
    enforce.verify(_op("Enf11", ["a", "b", "c"], ["a"]))
    with pytest.raises(SchemaError, match="EnforceOneToOneInplace"):
        enforce.verify(_op("Enf11", ["a", "b"], ["z"]))
    assert enforce.inplace_enforced(0, 0) and not enforce.inplace_enforced(1, 0)
    assert enforce.inplace_allowed(0, 0) and not enforce.inplace_allowed(1, 0)


def test_arguments_defaults_conversion_and_unknown():
    schema = OpSchema(
        "Args",
        args=[
            Argument("f", float, default=1.5),
            Argument("i", int, default=3),
            Argument("b", bool, default=False),
            Argument("s", str, default="x"),
            Argument("shape", list[int], default=[]),
            Argument("scales", list[float], default=[1.0]),
            Argument("anything", object),
        ],
    )
    assert schema.verify(_op("Args", ["x"], ["y"])) == dict(
        f=1.5, i=3, b=False, s="x", shape=[], scales=[1.0], anything=None
    )
    resolved = schema.verify(
        _op("Args", ["x"], ["y"], f=2, i=np.int64(4), b=1, s="z", shape=(2, 3), scales=[1, 2.5], anything={"k": 1})
    )
    assert resolved == dict(f=2.0, i=4, b=True, s="z", shape=[2, 3], scales=[1.0, 2.5], anything={"k": 1})
    assert isinstance(resolved["f"], float) and isinstance(resolved["b"], bool)
    with pytest.raises(SchemaError, match=r"Args: unknown argument 'g' \(known arguments: anything, b, f, i, s, "):
        schema.verify(_op("Args", ["x"], ["y"], g=1))


@pytest.mark.parametrize(
    "name, value",
    [
        ("f", "1.0"),
        ("f", True),
        ("i", 1.5),
        ("i", "3"),
        ("b", 2),
        ("b", "true"),
        ("s", 3),
        ("shape", [1.5]),
        ("shape", 3),
        ("shape", "ab"),
        ("scales", ["x"]),
    ],
)
def test_argument_type_errors_are_type_and_schema_errors(name, value):
    schema = OpSchema(
        "Typed",
        args=[
            Argument("f", float),
            Argument("i", int),
            Argument("b", bool),
            Argument("s", str),
            Argument("shape", list[int]),
            Argument("scales", list[float]),
        ],
    )
    with pytest.raises(SchemaTypeError, match=f"Typed: argument '{name}' must be") as err:
        schema.verify(_op("Typed", ["x"], ["y"], **{name: value}))
    assert isinstance(err.value, TypeError) and isinstance(err.value, ValueError)


def test_validators_and_required_arguments():
    schema = OpSchema(
        "Val",
        args=[
            Argument("norm", float, default=1.0, validator=caffe2op.schema.non_negative_finite),
            Argument("k", int, required=True, validator=lambda v: None if v > 0 else "must be > 0"),
        ],
    )
    assert schema.verify(_op("Val", ["x"], ["y"], k=2)) == {"norm": 1.0, "k": 2}
    with pytest.raises(SchemaError, match="Val: missing required argument 'k'"):
        schema.verify(_op("Val", ["x"], ["y"]))
    with pytest.raises(SchemaError, match="Val: argument 'k' must be > 0, got 0"):
        schema.verify(_op("Val", ["x"], ["y"], k=0))
    with pytest.raises(SchemaError, match="Val: argument 'norm' must be finite and >= 0, got -1"):
        schema.verify(_op("Val", ["x"], ["y"], k=1, norm=-1))


def test_cross_argument_validate_hook():
    schema = OpSchema(
        "Cross",
        num_inputs=(0, 1),
        args=[Argument("shape", list[int], default=[])],
        validate=lambda op, args: "shape and input" if op.inputs and args["shape"] else None,
    )
    schema.verify(_op("Cross", [], ["y"], shape=[2]))
    with pytest.raises(SchemaError, match="Cross: shape and input"):
        schema.verify(_op("Cross", ["x"], ["y"], shape=[2]))


def test_gradient_ops_may_carry_unknown_arguments():
    schema = OpSchema("G", args=[Argument("a", int, default=0)])
    op = OperatorDef(type="G", inputs=["x"], outputs=["y"], args={"forward_only_arg": 1}, is_gradient_op=True)
    assert schema.verify(op) == {"a": 0, "forward_only_arg": 1}
    with pytest.raises(SchemaError):
        schema.verify(op, allow_unknown_args=False)


def test_identical_type_and_shape_inference():
    schema = caffe2op.get_schema("StopGradient")
    assert schema.identical_type_and_shape
    assert schema.infer_types_and_shapes([((2, 3), np.float16)]) == [((2, 3), np.dtype(np.float16))]
    assert caffe2op.get_schema("SparseNormalize").infer_types_and_shapes([((2, 3), np.float32)]) is None


def test_registry_of_schemas():
    schema = caffe2op.register_schema(OpSchema("TestRegistryOfSchemas", doc="d"))
    assert caffe2op.get_schema("TestRegistryOfSchemas") is schema
    assert "TestRegistryOfSchemas" in caffe2op.registered_schemas()
    with pytest.raises(ValueError, match="already has a schema"):
        caffe2op.register_schema(OpSchema("TestRegistryOfSchemas"))
    replacement = caffe2op.register_schema(OpSchema("TestRegistryOfSchemas"), overwrite=True)
    assert caffe2op.get_schema("TestRegistryOfSchemas") is replacement
    with pytest.raises(TypeError):
        caffe2op.register_schema("not a schema")


def test_get_schema_unknown_suggests_names_and_default():
    with pytest.raises(caffe2op.UnknownOperatorError, match="Did you mean: SparseNormalize"):
        caffe2op.get_schema("SparseNormalise")
    with pytest.raises(KeyError):
        caffe2op.get_schema("Nope")
    assert caffe2op.get_schema("Nope", default=None) is None


def test_builtin_schemas_follow_caffe2():
    zg = caffe2op.get_schema("ZeroGradient")
    assert zg.input_range == (1, 1) and zg.output_range == (0, 0)
    sg = caffe2op.get_schema("StopGradient")
    assert sg.input_range == (1, 1) and sg.output_range == (1, 1) and sg.inplace_allowed(0, 0)
    sn = caffe2op.get_schema("SparseNormalize")
    assert sn.enforce_one_to_one_inplace and sn.input_range == (2, 3)
    f16 = caffe2op.get_schema("Float16SparseNormalize")
    assert f16.enforce_one_to_one_inplace and f16.input_range == (2, 3)
    cf = caffe2op.get_schema("ConstantFill")
    assert cf.input_range == (0, 2) and cf.inplace_allowed(0, 0) and cf.arg("value").default == 0.0
    s = caffe2op.get_schema("Sum")
    assert s.input_range == (1, math.inf) and s.inplace_allowed(0, 0) and not s.inplace_allowed(1, 0)


def test_schema_constructor_checks():
    with pytest.raises(TypeError):
        OpSchema("")
    with pytest.raises(TypeError, match="Argument objects"):
        OpSchema("BadArgs", args=["norm"])
    assert "BadArgs" not in caffe2op.registered_schemas()
    assert repr(caffe2op.get_schema("Sum")) == "OpSchema('Sum', inputs=1..inf, outputs=1, args=[])"


def test_counts_are_inferred_from_named_inputs_and_outputs():
    """issue 11: a schema naming two inputs kept num_inputs=1 and failed only at add_gradient_operators."""
    schema = caffe2op.OpSchema(
        "CountsSquareGradient", inputs=[("X", "input"), ("dY", "gradient")], outputs=[("dX", "gradient")]
    )
    assert schema.input_range == (2, 2) and schema.output_range == (1, 1)
    assert caffe2op.OpSchema("CountsNothingNamed").input_range == (1, 1)
    caffe2op.register_schema(schema)
    caffe2op.create_operator("CountsSquareGradient", ["x", "dy"], "dx")


@pytest.mark.parametrize(
    "counts, names, match",
    [
        (dict(num_inputs=1), dict(inputs=[("X", ""), ("dY", "")]), r"2 named inputs \(X, dY\) but num_inputs=1"),
        (dict(num_inputs=3), dict(inputs=[("X", "")]), r"1 named inputs \(X\) but num_inputs=3"),
        (dict(num_outputs=(0, 1)), dict(outputs=[("A", ""), ("B", "")]), r"2 named outputs .* num_outputs=0..1"),
    ],
)
def test_counts_that_disagree_with_the_names_are_refused(counts, names, match):
    with pytest.raises(ValueError, match=rf"register_schema: CountsBad: {match}"):
        caffe2op.register_schema(caffe2op.OpSchema("CountsBad", **counts, **names))
    assert caffe2op.get_schema("CountsBad", None) is None


def test_variadic_schema_may_name_only_its_first_inputs():
    schema = caffe2op.OpSchema("CountsVariadic", num_inputs=(2, None), inputs=[("data_0", "")])
    assert caffe2op.register_schema(schema) is schema
