# SPDX-License-Identifier: BSD-3-Clause
"""The OpenCL operator of docs/guide/custom_operators.rst, run as written: kernel file, operator class, usage.

The guide shows ``opencl_kernels/my_scale.cl`` and the device class of a ``MyScale`` operator as code
blocks (they would live in the package).  Here the kernel goes into a temporary kernel folder next to a
copy of ``caffe2op_common.h``, the class is executed, and the operator runs on every OpenCL device and is
compared with NumPy.
"""

import pathlib
import re
import shutil
import textwrap

import numpy as np
import pytest

import caffe2op
from caffe2op import opencl

GUIDE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "guide" / "custom_operators.rst"
DOC_OP = "DocsMyScale"  # the guide's MyScale under a name of its own (the guide's doctests register MyScale)


def code_block(caption):
    """The content of the guide's ``code-block`` with this caption."""
    text = GUIDE.read_text()
    pattern = r"\.\. code-block:: \w+\n(?:   :caption: (?P<caption>[^\n]*)\n)?\n(?P<body>(?:   [^\n]*\n|\n)+)"
    for match in re.finditer(pattern, text):
        if match.group("caption") == caption:
            return textwrap.dedent(match.group("body"))
    raise AssertionError(f"no code block with caption {caption!r} in {GUIDE}")


@pytest.fixture(scope="module")
def my_scale(tmp_path_factory):
    """Register the guide's device class (as DocsMyScale, kernel in a temporary folder); yield the namespace."""
    folder = tmp_path_factory.mktemp("kernels")
    shutil.copy(opencl.kernel_dir() / "caffe2op_common.h", folder)
    (folder / "my_scale.cl").write_text(code_block("opencl_kernels/my_scale.cl"))
    source = code_block("caffe2op/ops/my_scale.py (the device part)").replace('"MyScale"', f'"{DOC_OP}"')
    if caffe2op.get_schema(DOC_OP, default=None) is None:
        caffe2op.register_schema(
            caffe2op.OpSchema(
                DOC_OP,
                num_inputs=1,
                num_outputs=1,
                inputs=[("X", "Input blob.")],
                outputs=[("Y", "X * scale.")],
                args=[caffe2op.Argument("scale", float, default=1.0, doc="The multiplier.")],
                allow_inplace=[(0, 0)],
                identical_type_and_shape=True,
                doc="The guide's MyScale.",
            )
        )
    namespace = {}
    exec(compile(source, str(GUIDE), "exec"), namespace)
    original = opencl.programs.kernel_dir
    opencl.programs.kernel_dir = lambda: folder  # get_program reads the kernel folder through this function
    try:
        yield namespace
    finally:
        opencl.programs.kernel_dir = original


def test_the_guide_shows_the_kernel_and_the_class():
    assert "__kernel void caffe2op_my_scale_fwd" in code_block("opencl_kernels/my_scale.cl")
    assert "register_cuda_operator" in code_block("caffe2op/ops/my_scale.py (the device part)")


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("in_place", [False, True])
def test_guide_operator_on_each_device(my_scale, opencl_device, dtype, in_place):
    info = opencl.device_info(opencl_device)
    x = np.linspace(-3, 3, 1001).astype(dtype)
    ws = caffe2op.Workspace()
    ws.feed_blob("x", x, opencl_device)
    out = "x" if in_place else "y"
    op = caffe2op.create_operator(DOC_OP, "x", out, scale=-2.5, device_option=opencl_device)
    if dtype == np.float64 and not info.fp64:
        with pytest.raises(TypeError, match="cl_khr_fp64"):
            ws.run_operator_once(op)
        return
    ws.run_operator_once(op)
    np.testing.assert_allclose(ws.fetch_blob(out), (x.astype(np.float64) * -2.5).astype(dtype), rtol=1e-3)


def test_guide_usage_block(my_scale, opencl_device):
    """The usage lines of the guide, with its expected result."""
    usage = code_block("Running MyScale on an OpenCL device").replace('"MyScale"', f'"{DOC_OP}"')
    assert 'ws.fetch_blob("y")  # array([10., 20., 30.], dtype=float32)' in usage
    namespace = {"np": np, "caffe2op": caffe2op}
    exec(compile(usage.replace("OPENCL, 0", f"OPENCL, {opencl_device.device_id}"), str(GUIDE), "exec"), namespace)
    np.testing.assert_array_equal(namespace["ws"].fetch_blob("y"), np.array([10.0, 20.0, 30.0], np.float32))
    with pytest.raises(TypeError, match="must be a float array"):
        namespace["ws"].feed_blob("i", np.arange(3), opencl_device)
        namespace["ws"].run_operator_once(caffe2op.create_operator(DOC_OP, "i", "j", device_option=opencl_device))
