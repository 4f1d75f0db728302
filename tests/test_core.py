# SPDX-License-Identifier: BSD-3-Clause
"""DeviceType, DeviceOption, DataType, OperatorDef, create_operator, device_scope."""

import numpy as np
import pytest

import caffe2op
from caffe2op import DataType, DeviceOption, DeviceType, OperatorDef


def test_device_types_use_caffe2_numbers():
    assert (DeviceType.CPU, DeviceType.CUDA, DeviceType.OPENCL) == (0, 1, 4)


def test_device_option_defaults_coercion_and_errors():
    assert DeviceOption() == DeviceOption(DeviceType.CPU, 0)
    opt = DeviceOption(4, np.int64(2))
    assert opt.device_type is DeviceType.OPENCL and opt.device_id == 2 and type(opt.device_id) is int
    assert hash(opt) == hash(DeviceOption(DeviceType.OPENCL, 2))
    with pytest.raises(ValueError, match="unknown device_type 7"):
        DeviceOption(7)
    with pytest.raises(TypeError, match="device_type must be a DeviceType"):
        DeviceOption("cpu")
    with pytest.raises(ValueError, match="device_id must be >= 0"):
        DeviceOption(DeviceType.CPU, -1)
    with pytest.raises(TypeError, match="device_id must be an int"):
        DeviceOption(DeviceType.CPU, 1.0)


def test_datatype_codes_map_to_numpy():
    assert DataType.FLOAT.numpy_dtype == np.float32 and DataType.DOUBLE.numpy_dtype == np.float64
    assert DataType.INT64 == 10 and DataType.FLOAT16.numpy_dtype == np.float16
    assert DataType.from_numpy(np.int32) is DataType.INT32
    with pytest.raises(TypeError, match="no NumPy dtype"):
        DataType.STRING.numpy_dtype
    with pytest.raises(TypeError, match="no Caffe2 DataType code"):
        DataType.from_numpy(np.complex64)


def test_operator_def_is_a_plain_data_class():
    op = OperatorDef(type="NoSchemaAnywhere", inputs="x", outputs=("y", "z"), args={"k": np.float32(2.5)})
    assert op.inputs == ["x"] and op.outputs == ["y", "z"] and op.args == {"k": 2.5}
    assert type(op.args["k"]) is float
    assert op.name == "" and op.device_option is None and op.engine == "" and not op.is_gradient_op
    assert op.device == DeviceOption()
    assert op == OperatorDef(
        type="NoSchemaAnywhere", inputs=["x"], outputs=["y", "z"], args={"k": 2.5}, is_gradient_op=True
    )  # is_gradient_op is metadata
    assert op != OperatorDef(type="NoSchemaAnywhere", inputs=["x"], outputs=["y"], args={"k": 2.5})
    with pytest.raises(TypeError, match="type must be a non-empty str"):
        OperatorDef(type="")
    with pytest.raises(TypeError, match="inputs must be blob names"):
        OperatorDef(type="T", inputs=[1])
    with pytest.raises(TypeError, match="device_option must be a DeviceOption"):
        OperatorDef(type="T", device_option="cpu")


def test_create_operator_normalises_and_checks():
    op = caffe2op.create_operator("StopGradient", "x", "y", name="freeze", engine="")
    assert (op.type, op.inputs, op.outputs, op.name) == ("StopGradient", ["x"], ["y"], "freeze")
    op = caffe2op.create_operator("ConstantFill", [], ["z"], shape=(2, np.int64(3)), value=1)
    assert op.args == {"shape": [2, 3], "value": 1}
    with pytest.raises(caffe2op.SchemaError, match=r"StopGradient: expects 1 input, got 2"):
        caffe2op.create_operator("StopGradient", ["x", "y"], "z")
    with pytest.raises(TypeError, match="outputs must be blob names"):
        caffe2op.create_operator("StopGradient", "x", [None])


def test_create_operator_unknown_type_suggests():
    with pytest.raises(caffe2op.UnknownOperatorError) as err:
        caffe2op.create_operator("SparseNormalise", ["w", "i"], "w")
    message = str(err.value)
    assert message.startswith("'SparseNormalise' is not a registered operator type. Did you mean: SparseNormalize")
    assert isinstance(err.value, KeyError)


def test_describe_is_readable():
    op = caffe2op.create_operator(
        "SparseNormalize",
        ["w", "i"],
        ["w"],
        norm=2.0,
        name="renorm",
        device_option=DeviceOption(DeviceType.OPENCL, 1),
        engine="FAST",
    )
    assert op.describe() == "SparseNormalize(w, i) -> (w)  norm=2.0 device=OPENCL:1 engine='FAST' name='renorm'"


def test_device_scope_sets_the_default_device():
    opencl = DeviceOption(DeviceType.OPENCL, 0)
    with caffe2op.device_scope(opencl):
        assert caffe2op.create_operator("StopGradient", "x", "y").device_option == opencl
        explicit = caffe2op.create_operator("StopGradient", "x", "y", device_option=DeviceOption())
        assert explicit.device_option == DeviceOption()
        with caffe2op.device_scope(None):
            assert caffe2op.create_operator("StopGradient", "x", "y").device_option is None
    assert caffe2op.create_operator("StopGradient", "x", "y").device_option is None
    with pytest.raises(TypeError):
        with caffe2op.device_scope("opencl"):
            pass


def test_public_names_are_exactly_all():
    public = {name for name in dir(caffe2op) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(caffe2op, name)).__name__ == "module"}
    assert set(caffe2op.__all__) | {"__version__"} >= public - modules
    for name in caffe2op.__all__:
        assert hasattr(caffe2op, name), name
    assert caffe2op.__all__ == sorted(caffe2op.__all__)
