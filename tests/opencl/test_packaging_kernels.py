# SPDX-License-Identifier: BSD-3-Clause
"""A built wheel carries the OpenCL kernel sources as package data of ``caffe2op._cl``.

``opencl_kernels/`` sits outside ``caffe2op/`` in the source tree; setup.py
maps it to ``caffe2op._cl``.  Without that mapping (or its package_data)
an installed caffe2op would have no kernels.  (tests/test_packaging.py
checks the compiled CPU modules.)
"""

import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow  # builds the wheel, Cython extensions included (about a minute on 2 cores)
def test_wheel_contains_kernel_sources(tmp_path):
    sources = sorted(p.name for p in (ROOT / "opencl_kernels").iterdir() if p.suffix in (".cl", ".h"))
    assert "caffe2op_common.h" in sources and "sparse_normalize.cl" in sources
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = tmp_path.glob("caffe2op-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = sorted(
            n.rsplit("/", 1)[1] for n in names if n.startswith("caffe2op/_cl/") and n.endswith((".cl", ".h"))
        )
        assert shipped == sources
        for name in sources:
            assert archive.read(f"caffe2op/_cl/{name}") == (ROOT / "opencl_kernels" / name).read_bytes()
    assert "caffe2op/_cl/__init__.py" in names
