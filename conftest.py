# SPDX-License-Identifier: BSD-3-Clause
"""pytest configuration of the whole repository: the doctests' ``+OPENCL`` flag.

The suite runs doctests from the package's docstrings, the operators' schema
examples and the docs' guides.  An example marked ``# doctest: +OPENCL``
needs an OpenCL device: it runs when there is one (PoCL in CI), is skipped
when there is none, and fails under ``CAFFE2OP_REQUIRE_OPENCL=1`` (see
``tests/_helpers.py``).  Importing the helpers registers the flag before
pytest parses any docstring; the doctests that use it get the ``opencl`` mark.
"""

import importlib.util
import os

import pytest

from tests._helpers import skip_opencl_examples

# caffe2op.dask and its guide need the optional extra "dask": their doctests are not collected without it
# (tests/dask says why it skips), unless CAFFE2OP_REQUIRE_DASK=1 makes its absence an error.
_DASK_EXTRA = ("dask", "distributed", "zarr")
if os.environ.get("CAFFE2OP_REQUIRE_DASK") != "1" and not all(importlib.util.find_spec(m) for m in _DASK_EXTRA):
    collect_ignore = ["caffe2op/dask.py", "docs/guide/larger_than_memory.rst"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        dtest = getattr(item, "dtest", None)  # doctest items (docstrings and .rst files)
        if dtest is not None and skip_opencl_examples(dtest.examples):
            item.add_marker(pytest.mark.opencl)
