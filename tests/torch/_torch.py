# SPDX-License-Identifier: BSD-3-Clause
"""``import_torch()``: torch, or a module-level skip that says why (a failure under CAFFE2OP_REQUIRE_TORCH=1)."""

import os

import pytest

REQUIRE_TORCH = os.environ.get("CAFFE2OP_REQUIRE_TORCH") == "1"
REASON = 'torch is not installed (pip install "caffe2op[torch]")'


def import_torch():
    """torch, or skip the calling test module (under CAFFE2OP_REQUIRE_TORCH=1 the ImportError fails it)."""
    if REQUIRE_TORCH:
        import torch

        return torch
    return pytest.importorskip("torch", reason=REASON)
