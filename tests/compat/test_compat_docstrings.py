# SPDX-License-Identifier: BSD-3-Clause
"""Every public name of caffe2op.compat's modules has a numpydoc docstring matching its signature."""

import importlib

import pytest

from tests.test_docstrings import check_module

MODULES = ["core", "workspace", "caffe2_pb2", "test_util", "hypothesis_test_util"]


@pytest.mark.parametrize("name", MODULES)
def test_compat_module_docstrings(name):
    module = importlib.import_module(f"caffe2op.compat.{name}")
    problems = check_module(f"caffe2op.compat.{name}", module)
    assert not problems, "\n".join(problems)
