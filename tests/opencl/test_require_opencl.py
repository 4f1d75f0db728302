# SPDX-License-Identifier: BSD-3-Clause
"""Without an OpenCL platform the OpenCL tests skip, or fail under CAFFE2OP_REQUIRE_OPENCL=1 (as .ci/run sets)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("require", "outcome"), [("0", "1 skipped"), ("1", "1 error")])
def test_missing_platform(tmp_path, require, outcome):
    # An empty vendors folder hides every ICD from the ocl-icd loader.
    env = {**os.environ, "OCL_ICD_VENDORS": str(tmp_path), "CAFFE2OP_REQUIRE_OPENCL": require}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/opencl/test_devices.py::test_devices_are_described",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert outcome in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.returncode == (1 if require == "1" else 0)
    if require == "1":  # the fixture's pytest.fail: an error at setup, so the run fails
        assert "no OpenCL device" in result.stdout and "CAFFE2OP_REQUIRE_OPENCL=1" in result.stdout


@pytest.mark.parametrize(("require", "outcome"), [("0", "1 passed"), ("1", "1 failed")])
def test_opencl_doctest_lines_without_a_platform(tmp_path, require, outcome):
    """``# doctest: +OPENCL`` examples are skipped without a device (the rest of the example still runs),
    and fail under CAFFE2OP_REQUIRE_OPENCL=1."""
    env = {**os.environ, "OCL_ICD_VENDORS": str(tmp_path), "CAFFE2OP_REQUIRE_OPENCL": require}
    test = "tests/test_docstrings.py::test_schema_example_runs[CopyGPUToCPU]"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert outcome in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    if require == "1":
        assert "OpenCL" in result.stdout
