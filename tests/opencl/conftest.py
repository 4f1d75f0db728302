# SPDX-License-Identifier: BSD-3-Clause
"""Fixtures of the OpenCL device tests."""

import os

import pytest


@pytest.fixture
def restore_limits():
    """Put ``CAFFE2OP_OPENCL_LIMITS`` back as it was (after ``set_emulated_limits``) and re-probe the devices."""
    from caffe2op.opencl import backend as backend_module

    saved = os.environ.get("CAFFE2OP_OPENCL_LIMITS")
    yield
    if saved is None:
        os.environ.pop("CAFFE2OP_OPENCL_LIMITS", None)
    else:
        os.environ["CAFFE2OP_OPENCL_LIMITS"] = saved
    backend_module._reprobe_devices()
