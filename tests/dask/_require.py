# SPDX-License-Identifier: BSD-3-Clause
"""The optional extra ``dask``: its tests skip without it, or fail under ``CAFFE2OP_REQUIRE_DASK=1`` (what CI sets)."""

import importlib
import os

import pytest

#: What caffe2op.dask and its tests need: the ``dask`` extra (and scipy, from the ``test`` extra).
MODULES = ("dask.array", "distributed", "zarr", "scipy.sparse")
REQUIRE_DASK = os.environ.get("CAFFE2OP_REQUIRE_DASK") == "1"


def missing():
    """``"module: error"`` for each of :data:`MODULES` that does not import, or None."""
    problems = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError as err:
            problems.append(f"{name}: {err}")
    return "; ".join(problems) or None


def require_dask():
    """Skip the calling test module without the ``dask`` extra (fail under CAFFE2OP_REQUIRE_DASK=1)."""
    problem = missing()
    if problem is None:
        return
    reason = f'the optional extra "dask" is not installed ({problem}); pip install "caffe2op[dask]"'
    if REQUIRE_DASK:
        pytest.fail(f"{reason} (CAFFE2OP_REQUIRE_DASK=1)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
