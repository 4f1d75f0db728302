# SPDX-License-Identifier: BSD-3-Clause
"""The optional extra ``dask``: ``import caffe2op`` never imports it, its tests skip or fail without it; API docs."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_import_caffe2op_does_not_import_dask():
    code = (
        "import sys, caffe2op\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'dask', 'distributed', 'zarr', 'torch'})\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stdout


# The module is collected twice (its tests, and its doctests under --doctest-modules): each skips, or errors.
@pytest.mark.parametrize(("require", "outcome"), [("0", "2 skipped in"), ("1", "2 errors in")])
def test_missing_extra_skips_or_fails(tmp_path, require, outcome):
    """A ``dask`` that cannot be imported (a stub first on the path) skips the module, or fails it under
    CAFFE2OP_REQUIRE_DASK=1, with the reason."""
    (tmp_path / "dask").mkdir()
    (tmp_path / "dask" / "__init__.py").write_text("raise ImportError('dask hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "CAFFE2OP_REQUIRE_DASK": require}
    test = "tests/dask/test_sparse_normalize.py"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", test],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert outcome in output, output[-3000:]
    assert 'the optional extra "dask" is not installed' in output and "dask hidden by the test" in output
    # Alone, a skipped module leaves pytest nothing to run: exit status 5 ("no tests collected"), not a failure;
    # a module that fails to import interrupts the run: status 2.
    assert result.returncode in ((1, 2) if require == "1" else (0, 5)), output[-3000:]
    if require == "1":
        assert "CAFFE2OP_REQUIRE_DASK=1" in output


def test_public_docstrings():
    """caffe2op.dask passes the checks of every public module (numpydoc sections that match the signatures)."""
    from tests.dask._require import require_dask

    require_dask()
    import caffe2op.dask
    from tests.test_docstrings import check_module

    problems = check_module("caffe2op.dask", caffe2op.dask)
    assert not problems, "\n".join(problems)


def test_api_page_lists_every_name():
    page = (ROOT / "docs" / "api" / "dask.rst").read_text()
    from tests.dask._require import require_dask

    require_dask()
    import caffe2op.dask

    for name in caffe2op.dask.__all__:
        assert f"\n   {name}\n" in page, f"{name} is missing from docs/api/dask.rst"
