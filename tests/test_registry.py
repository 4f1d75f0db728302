# SPDX-License-Identifier: BSD-3-Clause
"""Registries per device, the Operator base class, and user-defined operators."""

import numpy as np
import pytest

import caffe2op
from caffe2op import DeviceOption, DeviceType, OperatorDef


def test_user_defined_operator_in_a_handful_of_lines():
    # The README's example: schema + CPU class + registration, run through a workspace.
    caffe2op.register_schema(
        caffe2op.OpSchema(
            "TestScaleBy",
            inputs=[("X", "input")],
            outputs=[("Y", "X * scale")],
            args=[caffe2op.Argument("scale", float, default=2.0, doc="Multiplier.")],
            allow_inplace=[(0, 0)],
        )
    )

    @caffe2op.register_cpu_operator("TestScaleBy")
    class ScaleBy(caffe2op.Operator):
        def run_on_device(self):
            x = self.input(0)
            y = self.output(0, x.shape, x.dtype)
            np.multiply(x, self.arg("scale"), out=y)

    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.arange(4.0))
    ws.run_operator_once(caffe2op.create_operator("TestScaleBy", "x", "y", scale=3))
    np.testing.assert_array_equal(ws.fetch_blob("y"), [0.0, 3.0, 6.0, 9.0])
    ws.run_operator_once(caffe2op.create_operator("TestScaleBy", "x", "x"))
    np.testing.assert_array_equal(ws.fetch_blob("x"), [0.0, 2.0, 4.0, 6.0])
    assert "TestScaleBy" in caffe2op.registered_operators(DeviceType.CPU)
    assert "TestScaleBy" not in caffe2op.registered_operators(DeviceType.OPENCL)
    with pytest.raises(caffe2op.SchemaError, match="unknown argument 'factor'"):
        caffe2op.create_operator("TestScaleBy", "x", "y", factor=3)


def test_operator_base_class_accessors():
    seen = {}

    @caffe2op.register_cpu_operator("TestAccessors")
    class Accessors(caffe2op.Operator):
        def run_on_device(self):
            seen.update(
                type=self.type,
                n_in=self.num_inputs,
                n_out=self.num_outputs,
                in_name=self.input_name(1),
                out_name=self.output_name(0),
                alpha=self.arg("alpha"),
                missing=self.arg("nope", 7),
                has_alpha=self.has_arg("alpha"),
                device=self.device_option,
                inputs=[v.tolist() for v in self.inputs],
            )
            self.set_output(0, self.input(0) + self.input(1))

    ws = caffe2op.Workspace()
    ws.feed_blob("a", np.ones(2))
    ws.feed_blob("b", np.full(2, 2.0))
    ws.run_operator_once(OperatorDef(type="TestAccessors", inputs=["a", "b"], outputs=["c"], args={"alpha": 0.5}))
    assert seen == dict(
        type="TestAccessors",
        n_in=2,
        n_out=1,
        in_name="b",
        out_name="c",
        alpha=0.5,
        missing=7,
        has_alpha=True,
        device=DeviceOption(),
        inputs=[[1.0, 1.0], [2.0, 2.0]],
    )
    np.testing.assert_array_equal(ws.fetch_blob("c"), [3.0, 3.0])


def test_set_output_requires_an_array_of_the_device():
    @caffe2op.register_cpu_operator("TestBadOutput")
    class BadOutput(caffe2op.Operator):
        def run_on_device(self):
            self.set_output(0, [1, 2, 3])

    ws = caffe2op.Workspace()
    with pytest.raises(TypeError, match=r"TestBadOutput: output 0 \('y'\) must be an array on CPU, got list"):
        ws.run_operator_once(OperatorDef(type="TestBadOutput", outputs=["y"]))
    assert not ws.has_blob("y")


def test_output_reuses_matching_blob_but_never_an_input():
    @caffe2op.register_cpu_operator("TestReuse")
    class Reuse(caffe2op.Operator):
        def run_on_device(self):
            x = self.input(0)
            self.output(0, x.shape, x.dtype)[...] = x + 1

    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.zeros(3))
    ws.feed_blob("y", np.zeros(3))
    before = ws._blobs["y"]
    ws.run_operator_once(OperatorDef(type="TestReuse", inputs=["x"], outputs=["y"]))
    assert ws._blobs["y"] is before  # same shape and dtype: memory reused, as Caffe2's Resize kept it
    ws.feed_blob("y", np.zeros(5))
    ws.run_operator_once(OperatorDef(type="TestReuse", inputs=["x"], outputs=["y"]))
    assert ws.fetch_blob("y").shape == (3,)
    ws._blobs["alias"] = ws._blobs["x"]  # an alias of the input must not be overwritten
    ws.run_operator_once(OperatorDef(type="TestReuse", inputs=["x"], outputs=["alias"]))
    np.testing.assert_array_equal(ws.fetch_blob("x"), np.zeros(3))


def test_registration_errors():
    with pytest.raises(TypeError, match="must subclass caffe2op.Operator"):
        caffe2op.register_cpu_operator("TestNotAnOperator", object)
    with pytest.raises(TypeError, match="non-empty str"):
        caffe2op.register_cpu_operator("")
    with pytest.raises(TypeError, match="run_on_device"):

        class Incomplete(caffe2op.Operator):
            pass

        Incomplete(OperatorDef(type="X"), caffe2op.Workspace(), {}, None)
    with pytest.raises(ValueError, match="unknown device type"):
        caffe2op.registered_operators(99)


def test_each_registry_is_keyed_by_device_type():
    class Impl(caffe2op.Operator):
        def run_on_device(self):
            pass

    assert caffe2op.register_opencl_operator("TestOnlyOpenCL", Impl) is Impl
    caffe2op.register_cuda_operator("TestOnlyCuda")(Impl)
    assert "TestOnlyOpenCL" in caffe2op.registered_operators(DeviceType.OPENCL)
    assert "TestOnlyOpenCL" not in caffe2op.registered_operators(DeviceType.CUDA)
    assert "TestOnlyCuda" in caffe2op.registered_operators(DeviceType.CUDA)
    assert {"TestOnlyOpenCL", "TestOnlyCuda"} <= set(caffe2op.registered_operators())
    ws = caffe2op.Workspace()
    with pytest.raises(
        caffe2op.UnknownOperatorError,
        match="TestOnlyOpenCL has no implementation for CPU; it is implemented for: OPENCL",
    ):
        ws.run_operator_once(OperatorDef(type="TestOnlyOpenCL"))


def test_engines_are_tried_in_order_then_the_default():
    calls = []

    def impl(tag):
        class Impl(caffe2op.Operator):
            def run_on_device(self):
                calls.append(tag)

        return Impl

    caffe2op.register_cpu_operator("TestEngines", impl("default"))
    caffe2op.register_cpu_operator("TestEngines", impl("fast"), engine="FAST")
    ws = caffe2op.Workspace()
    for engine in ["", "FAST", "MISSING,FAST", "MISSING"]:
        ws.run_operator_once(OperatorDef(type="TestEngines", engine=engine))
    assert calls == ["default", "fast", "fast", "default"]
    caffe2op.register_cpu_operator("TestEnginesOnly", impl("x"), engine="X")
    with pytest.raises(caffe2op.UnknownOperatorError, match="no CPU implementation for engine"):
        ws.run_operator_once(OperatorDef(type="TestEnginesOnly"))


def test_unknown_operator_at_run_time_suggests_names():
    ws = caffe2op.Workspace()
    with pytest.raises(
        caffe2op.UnknownOperatorError,
        match="'StopGradeint' is not a registered operator type. Did you mean: StopGradient",
    ):
        ws.run_operator_once(OperatorDef(type="StopGradeint", inputs=["x"], outputs=["y"]))


def test_schema_only_type_has_no_implementation():
    caffe2op.register_schema(caffe2op.OpSchema("TestSchemaOnly"))
    op = caffe2op.create_operator("TestSchemaOnly", "x", "y")
    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.zeros(1))
    with pytest.raises(caffe2op.UnknownOperatorError, match="TestSchemaOnly has no implementation on any device"):
        ws.run_operator_once(op)
