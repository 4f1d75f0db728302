# SPDX-License-Identifier: BSD-3-Clause
"""A built wheel carries the compiled CPU kernels and the OpenCL sources."""

import pathlib
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow  # builds a wheel: compiles every Cython module
def test_wheel_contains_every_compiled_module_and_kernel_source(built_wheel):
    names = set(zipfile.ZipFile(built_wheel).namelist())
    for source in sorted((ROOT / "pyx").glob("*.pyx")):
        compiled = [n for n in names if n.startswith(f"caffe2op/_cpu/{source.stem}.") and n.endswith((".so", ".pyd"))]
        assert compiled, f"{source.name} is not compiled into the wheel"
    for source in sorted((ROOT / "opencl_kernels").glob("*.cl")) + sorted((ROOT / "opencl_kernels").glob("*.h")):
        assert f"caffe2op/_cl/{source.name}" in names, f"{source.name} is not in the wheel"
    assert "caffe2op/_cl/__init__.py" in names and "caffe2op/_cpu/__init__.py" in names
    assert not any(n.endswith((".pyx", ".c")) for n in names), "sources leaked into the wheel"
