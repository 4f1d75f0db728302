# SPDX-License-Identifier: BSD-3-Clause
"""caffe2op.torch's public names: numpydoc docstrings (the checker of tests/test_docstrings.py) and an API page."""

import pathlib

from tests.test_docstrings import check_module
from tests.torch._torch import import_torch

import_torch()
import caffe2op.torch  # noqa: E402

API_PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "api" / "torch.rst"


def test_public_docstrings():
    problems = check_module("caffe2op.torch", caffe2op.torch)
    assert not problems, "\n".join(problems)


def test_api_page_lists_every_public_name():
    lines = {line.strip() for line in API_PAGE.read_text().splitlines()}
    assert set(caffe2op.torch.__all__) <= lines
