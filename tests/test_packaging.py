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
    # opencl_kernels/ sits outside caffe2op/ and is mapped to caffe2op._cl: every kernel source ships, unchanged.
    sources = sorted(p.name for p in (ROOT / "opencl_kernels").iterdir() if p.suffix in (".cl", ".h"))
    assert "caffe2op_common.h" in sources and "sparse_normalize.cl" in sources
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("caffe2op/_cl/") and n.endswith((".cl", ".h")))
    assert shipped == sources
    with zipfile.ZipFile(built_wheel) as archive:
        for name in sources:
            assert archive.read(f"caffe2op/_cl/{name}") == (ROOT / "opencl_kernels" / name).read_bytes()
    assert "caffe2op/_cl/__init__.py" in names and "caffe2op/_cpu/__init__.py" in names
    # The benchmarks' measured limits are compiled at bench time from the one C source that ships.
    assert "caffe2op/bench/floor.c" in names
    leaked = [n for n in names if n.endswith((".pyx", ".c")) and n != "caffe2op/bench/floor.c"]
    assert not leaked, f"sources leaked into the wheel: {leaked}"


@pytest.mark.slow  # builds a second wheel, without OpenMP
def test_build_without_openmp_runs_serially(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, CAFFE2OP_DISABLE_OPENMP="1")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "wheel"),
            str(ROOT),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "OpenMP disabled" in build.stdout + build.stderr  # the build says so
    (wheel,) = (tmp_path / "wheel").glob("caffe2op-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True
    )
    script = f"""
import numpy as np, caffe2op
from caffe2op._cpu import _runtime
assert caffe2op.__file__.startswith({str(target)!r}), caffe2op.__file__
assert not _runtime.openmp_enabled() and caffe2op.get_num_threads() == 1
caffe2op.set_num_threads(2)  # accepted, still serial
w = np.array([[3.0, 4.0], [0.3, 0.4]], np.float32)
caffe2op.sparse_normalize(w, [0, 1, 0])
np.testing.assert_allclose(w, [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)
print("serial ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(target)),
    )
    assert out.returncode == 0, out.stderr
    assert "serial ok" in out.stdout
