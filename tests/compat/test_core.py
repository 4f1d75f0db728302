# SPDX-License-Identifier: BSD-3-Clause
"""caffe2op.compat's core, caffe2_pb2, workspace and test_util, the way Caffe2's ``core_test.py`` uses them.

Expected names and values are those of Caffe2's ``caffe2/python/core_test.py``
(scopes, CreateOperator, auto naming, AppendNet); the views are checked to
write through to caffe2op's own objects.
"""

import warnings

import numpy as np
import pytest

import caffe2op
from caffe2op.compat import caffe2_pb2, core, test_util, workspace
from tests.compat import caffe2_ops  # noqa: F401 - Relu and friends


def cuda1():
    option = caffe2_pb2.DeviceOption()
    option.device_type = caffe2_pb2.CUDA
    option.cuda_gpu_id = 1
    return option


def test_name_scope_prefixes_plain_strings_not_blob_references():
    x, y = core.BlobReference("x"), core.BlobReference("y")
    with core.NameScope("foo"):
        assert str(core.BlobReference("w")) == "w"
        op = core.CreateOperator("Relu", "x", "y")
        assert (list(op.input), list(op.output)) == (["foo/x"], ["foo/y"])
        assert list(core.CreateOperator("Relu", x, y).input) == ["x"]
        with core.NameScope("bar"):
            assert list(core.CreateOperator("Relu", "x", "y").input) == ["foo/bar/x"]
        with core.NameScope("bar", reset=True):
            assert list(core.CreateOperator("Relu", "x", "y").output) == ["bar/y"]
        assert list(core.CreateOperator("Relu", "x", "y").input) == ["foo/x"]


def test_device_scope_and_explicit_device_options():
    assert not core.CreateOperator("Relu", "x", "y").HasField("device_option")
    op = core.CreateOperator("Relu", "x", "y", device_option=cuda1())
    assert op.HasField("device_option") and op.device_option.device_type == caffe2_pb2.CUDA
    assert op.device_option.cuda_gpu_id == 1 and op.native.device_option == caffe2op.DeviceOption(1, 1)
    with core.DeviceScope(cuda1()), core.NameScope("foo"):
        op = core.CreateOperator("Relu", "x", "y")
        assert op.device_option.device_type == caffe2_pb2.CUDA and list(op.input) == ["foo/x"]
        cpu = caffe2_pb2.DeviceOption()
        assert core.CreateOperator("Relu", "x", "y", device_option=cpu).device_option.device_type == caffe2_pb2.CPU
    assert not core.CreateOperator("Relu", "x", "y").HasField("device_option")


def test_create_operator_fields_and_arguments():
    with pytest.warns(core.CompatWarning, match="control_input"):
        op = core.CreateOperator(
            "Ludicrous",
            "x",
            "y",
            name="ludicrous",
            control_input="z",
            device_option=cuda1(),
            engine="WARP",
            arg1=1,
            arg2="2",
            arg3=[1, 2, 3],
        )
    assert (op.type, op.name, op.engine) == ("Ludicrous", "ludicrous", "WARP")
    assert [a.name for a in op.arg] == ["arg1", "arg2", "arg3"]
    assert op.arg[0].i == 1 and op.arg[1].s == b"2" and list(op.arg[2].ints) == [1, 2, 3]
    assert op.arg[0].f == 0.0 and not op.arg[0].HasField("f") and op.arg[0].HasField("i")
    with pytest.raises(ValueError, match="arg1.*None"):
        core.CreateOperator("Ludicrous", "x", "y", arg1=None)


def test_views_write_through_to_the_native_operator():
    op = core.CreateOperator("SparseNormalize", ["w", "idx"], "w", norm=2.0)
    native = op.native
    op.input.append("extra")
    op.type = "StopGradient"
    op.arg[0].f = 3.0
    op.device_option.device_type = caffe2_pb2.OPENCL
    op.device_option.device_id = 2
    op.engine = "FAST"
    op.is_gradient_op = True
    assert native.inputs == ["w", "idx", "extra"] and native.type == "StopGradient"
    assert native.args == {"norm": 3.0} and native.engine == "FAST" and native.is_gradient_op
    assert native.device_option == caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 2)
    new = op.arg.add(name="k", i=4)
    assert new.name == "k" and native.args["k"] == 4
    op.arg.extend([caffe2_pb2.Argument("v", floats=[1.0, 2.5])])
    assert native.args["v"] == [1.0, 2.5] and op.arg[2].floats == [1.0, 2.5]
    op.ClearField("device_option")
    assert native.device_option is None and not op.HasField("device_option")
    copy = caffe2_pb2.OperatorDef()
    copy.CopyFrom(op)
    assert copy == op and copy.native is not native
    copy.input[0] = "other"
    assert copy != op and native.inputs[0] == "w"
    with pytest.raises(AttributeError, match="Assignment not allowed"):
        op.input = ["x"]
    blank = caffe2_pb2.OperatorDef(type="StopGradient", input=["x"], output=["y"])
    assert blank.native.describe() == "StopGradient(x) -> (y)"
    assert 'type: "StopGradient"' in str(blank)


def test_protobuf_equality_includes_is_gradient_op():
    a = core.CreateOperator("StopGradient", "x", "y")
    b = core.CreateOperator("StopGradient", "x", "y")
    assert a == b
    b.is_gradient_op = True
    assert a != b and a.native == b.native  # caffe2op's own == leaves the flag out


def test_undeclared_arguments_are_dropped_with_a_warning_and_bools_read_as_caffe2():
    """Caffe2 ``OpSchema::Verify`` ignores undeclared arguments; ``GetSingleArgument<bool>`` reads any int."""
    with pytest.warns(core.CompatWarning, match="ignoring argument.*bogus"):
        op = core.CreateOperator("SparseNormalize", ["w", "idx"], "w", bogus=3, use_max_norm=2)
    assert op.native.args == {"use_max_norm": True}
    # The native API keeps rejecting both.
    with pytest.raises(caffe2op.SchemaError, match="unknown argument 'bogus'"):
        caffe2op.create_operator("SparseNormalize", ["w", "idx"], "w", bogus=3)
    with pytest.raises(TypeError, match="use_max_norm"):
        caffe2op.create_operator("SparseNormalize", ["w", "idx"], "w", use_max_norm=2)


def test_auto_naming_never_clashes():
    def create():
        net = core.Net("net")
        with core.NameScope("foo"):
            net.Add(["a", "b"], net.NextScopedBlob("ab"))
        net.Add(["c", "d"], net.NextBlob("cd"))
        return net

    a, b = create(), create()
    assert a.Proto().op == b.Proto().op
    assert a.Proto().op[0].output[0] == "foo/ab" and a.Proto().op[1].output[0] == "cd"
    c = core.Net("net")
    assert str(c.NextBlob("b")) != str(c.NextBlob("b"))
    assert a.Proto().name != b.Proto().name
    names = []
    inputs = {a: a.AddExternalInput("a_in"), b: b.AddExternalInput("b_in")}
    for scope in ("", "n1", "n2"):
        with core.NameScope(scope):
            for net, x in inputs.items():
                names += [net.Sum([x, x]), net.Sum([x, x]), *net.Sum([x, x], outputs=2)]
    assert len(set(names)) == len(names) == 24


def test_external_inputs_and_append_net():
    a = core.Net("A")
    a.Sum(["in1", "in2"], ["sum1"])
    assert "in1" in a.external_inputs
    b = core.Net("B")
    b.Sum(["in3", "in4"], ["in1"])
    assert "in1" not in b.AppendNet(a).external_inputs
    assert [op.type for op in b.Proto().op] == ["Sum", "Sum"]
    with pytest.raises(ValueError, match="already contains an input named in3"):
        b.AddExternalInput("in3")
    assert b.AddExternalOutput("sum1") == "sum1" and list(b.Proto().external_output) == ["sum1"]


def test_blob_reference_builds_on_its_net_and_clone_renames():
    net = core.Net("n")
    x = net.AddExternalInput("x")
    y = x.StopGradient([], "y")
    assert isinstance(y, core.BlobReference) and y.Net() is net
    clone = net.Clone("n2", blob_remap={"x": "x2"})
    assert [list(op.input) for op in clone.Proto().op] == [["x2"]] and list(clone.Proto().external_input) == ["x2"]
    assert core.IsOperator("Relu") and not core.IsOperator("NOEXIST")
    assert core.IsOperatorWithEngine("Relu", "DEFAULT") and not core.IsOperatorWithEngine("Relu", "NOEXIST")


def test_native_net_names_caffe2_methods():
    net = caffe2op.Net("n")
    for method, native in (("AddGradientOperators", "add_gradient_operators"), ("Proto", "Net.ops")):
        with pytest.raises(
            AttributeError, match=rf"{method} is a method of Caffe2's core.Net.*{native}.*caffe2op\.compat"
        ):
            getattr(net, method)
    with pytest.raises(caffe2op.UnknownOperatorError):
        net.NoSuchOperatorAnywhere


def test_workspace_functions():
    workspace.ResetWorkspace()
    assert workspace.CurrentWorkspace() == "default"
    workspace.FeedBlob("x", np.arange(3.0))
    assert workspace.HasBlob("x") and workspace.Blobs() == ["x"] and "x" in workspace.blobs
    net = core.Net("run")
    net.StopGradient("x", "y")
    workspace.CreateNet(net)
    net.StopGradient("y", "z")  # not in the created net
    workspace.RunNet(net.Name())
    assert workspace.HasBlob("y") and not workspace.HasBlob("z")
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("z"), np.arange(3.0))
    with pytest.raises(RuntimeError, match="already exists"):
        workspace.CreateNet(net)
    workspace.CreateNet(net, overwrite=True)
    with pytest.raises(KeyError, match="no workspace named 'other'"):
        workspace.SwitchWorkspace("other")
    workspace.SwitchWorkspace("other", create_if_missing=True)
    assert workspace.Blobs() == [] and workspace.CurrentWorkspace() == "other"
    with pytest.raises(KeyError, match="CreateNet"):
        workspace.RunNet(net.Name())
    workspace.SwitchWorkspace("default")
    assert workspace.FetchBlob("x").tolist() == [0.0, 1.0, 2.0]
    workspace.RunOperatorOnce(core.CreateOperator("StopGradient", "x", "w"))
    assert workspace.Workspace().fetch_blob("w").tolist() == [0.0, 1.0, 2.0]
    workspace.ResetWorkspace()
    assert workspace.Blobs() == []


def test_test_util_resets_the_workspace():
    workspace.FeedBlob("left_over", [1.0])

    class Case(test_util.TestCase):
        def test_it(self):
            self.assertEqual(workspace.Blobs(), [])
            self.assertReallyEqual(1, 1)

    import unittest

    result = unittest.TestResult()
    Case("test_it").run(result)
    assert result.wasSuccessful() and workspace.Blobs() == []
    assert test_util.rand_array(2, 3).dtype == np.float32


def test_compat_import_warns_nothing_and_imports_no_caffe2():
    import subprocess
    import sys

    code = (
        "import warnings; warnings.simplefilter('error'); import caffe2op.compat, sys; print('caffe2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        core.CreateOperator("StopGradient", "x", "y")
