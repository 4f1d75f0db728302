# SPDX-License-Identifier: BSD-3-Clause
"""The Sphinx extensions in docs/_ext: operator pages from schemas, and net diagrams.

Skipped without Sphinx (it comes with the ``docs`` extra, not the ``test`` one);
``bash .ci/docs`` builds the real pages with warnings as errors.
"""

import pathlib
import sys
import types

import pytest

pytest.importorskip("sphinx")

import caffe2op  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "docs" / "_ext"))
import caffe2op_netgraph  # noqa: E402
import caffe2op_operators  # noqa: E402


def test_builtin_operators_only():
    """Pages are made for the operators of the caffe2op package, not for user or test registrations."""

    @caffe2op.register_cpu_operator("TestDocsUserOp")
    class TestDocsUserOp(caffe2op.Operator):
        def run_on_device(self):
            pass

    types_ = caffe2op_operators.builtin_operator_types()
    assert {"SparseNormalize", "Float16SparseNormalize", "StopGradient", "ZeroGradient", "Sum"} <= set(types_)
    assert "TestDocsUserOp" not in types_


def test_operator_page_content():
    page = caffe2op_operators.operator_page("SparseNormalize")
    for text in (
        ".. _op-SparseNormalize:",
        ".. math::",
        ":func:`caffe2op.sparse_normalize`",
        '"SparseNormalize", ["param", "indices"], "param", use_max_norm=True, norm=1.0',
        "Takes 2 to 3 inputs and produces exactly 1 output.",
        "``use_max_norm``",
        "``EnforceOneToOneInplace``",
        "Implemented for: ``CPU``",
        ".. code-block:: pycon",
    ):
        assert text in page, text


def test_inplace_and_shape_rules_are_described():
    page = caffe2op_operators.operator_page("StopGradient")
    assert "May run in place (``AllowInplace``): input 0 (``X``) and output 0 (``Y``)." in page
    assert "``IdenticalTypeAndShape``" in page
    assert "No input may be the same blob" in caffe2op_operators.operator_page("ZeroGradient")


def test_gradient_section_comes_from_describe_gradient(monkeypatch):
    """When caffe2op.gradient.describe_gradient exists, its text becomes the page's Gradient section."""
    fake = types.ModuleType("caffe2op.gradient")
    fake.describe_gradient = lambda op_type: f"The gradient of ``{op_type}`` is described here."
    monkeypatch.setitem(sys.modules, "caffe2op.gradient", fake)
    page = caffe2op_operators.operator_page("ZeroGradient")
    assert "Gradient\n--------\n\nThe gradient of ``ZeroGradient`` is described here." in page
    fake.describe_gradient = lambda op_type: None
    assert "Gradient\n--------" not in caffe2op_operators.operator_page("ZeroGradient")


def test_summary_table_links_every_page():
    table = caffe2op_operators.summary_table(["StopGradient", "Sum"])
    assert ":ref:`StopGradient <op-StopGradient>`" in table and ":ref:`Sum <op-Sum>`" in table


def test_net_diagram_counts_versions_and_colours_groups():
    net = caffe2op.Net("forward")
    net.StopGradient("x", "y")
    net.SparseNormalize(["w", "idx"], "w", norm=1.0)
    grad = [caffe2op.OperatorDef(type="ConstantFill", inputs=["y"], outputs=["y_grad"], args={"value": 0.0})]
    dot = caffe2op_netgraph.net_to_dot({"forward": net, "backward": grad})
    assert dot.startswith("digraph caffe2op_net {") and dot.rstrip().endswith("}")
    assert 'label="w (v1)"' in dot  # the in-place SparseNormalize writes a new version of w
    assert 'label="SparseNormalize\\nnorm=1.0"' in dot
    assert dot.count("#fbe0c3") == 2  # the backward op and the legend entry in the backward colour
    with pytest.raises(TypeError, match="OperatorDef"):
        caffe2op_netgraph.net_to_dot(["not an op"])


def test_real_gradient_sections():
    """caffe2op.gradient.describe_gradient fills each page's Gradient section from the registry."""
    assert "Gradient\n--------\n\nNo gradient (``NO_GRADIENT``" in caffe2op_operators.operator_page("StopGradient")
    assert ":class:`~caffe2op.GetZeroGradientOpGradient`" in caffe2op_operators.operator_page("ZeroGradient")
    assert "``SHOULD_NOT_DO_GRADIENT``" in caffe2op_operators.operator_page("Float16SparseNormalize")
    assert "``GRADIENT_NOT_IMPLEMENTED_YET``" in caffe2op_operators.operator_page("NormalizeGradient")
    assert "Gradient maker: ``GetConcatGradient`` (a class)." in caffe2op_operators.operator_page("Concat")


def test_device_only_operators_are_created_with_a_device_option():
    """An operator without a CPU implementation is shown with the device option it needs; others without."""
    page = caffe2op_operators.operator_page("CopyCPUToGPU")
    assert "gpu = caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0)" in page
    assert 'caffe2op.create_operator("CopyCPUToGPU", "input", "output", device_option=gpu)' in page
    assert "device_option" not in "\n".join(caffe2op_operators.creation_example("Copy", caffe2op.get_schema("Copy")))


def test_functional_forms_are_functions_and_counts_read_well():
    page = caffe2op_operators.operator_page("ZeroGradient")
    assert "Functional form (NumPy arrays, no workspace): :func:`caffe2op.zero_gradient`." in page
    assert "Takes exactly 1 input and produces no outputs." in page


@pytest.mark.parametrize(
    "op_type, form",
    [
        ("SparseNormalize", "sparse_normalize"),
        ("Float16SparseNormalize", "sparse_normalize"),
        ("Normalize", "normalize"),
        ("StopGradient", "stop_gradient"),
        ("ZeroGradient", "zero_gradient"),
    ],
)
def test_functional_form_is_found_for_operators_in_a_package(op_type, form):
    """An operator implemented in a submodule of a package under caffe2op.ops still links its functional form."""
    assert caffe2op_operators.functional_forms(op_type) == [form]
    assert caffe2op_operators.functional_forms("Sum") == []
