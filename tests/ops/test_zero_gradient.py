# SPDX-License-Identifier: BSD-3-Clause
"""ZeroGradient forward: does nothing."""

import numpy as np
import pytest

import caffe2op
from tests._helpers import assert_bit_identical


def test_functional_returns_none_and_touches_nothing():
    x = np.arange(5.0)
    assert caffe2op.zero_gradient(x) is None
    np.testing.assert_array_equal(x, np.arange(5.0))


def test_operator_reads_and_writes_nothing():
    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.arange(3, dtype=np.float16))
    before = ws.fetch_blob("x")
    ws.run_operator_once(caffe2op.create_operator("ZeroGradient", "x", []))
    assert ws.blobs() == ["x"]
    assert_bit_identical(ws.fetch_blob("x"), before)


def test_schema_is_one_input_no_output():
    with pytest.raises(caffe2op.SchemaError, match="ZeroGradient: expects 0 outputs, got 1"):
        caffe2op.create_operator("ZeroGradient", "x", "y")
    with pytest.raises(caffe2op.SchemaError, match="ZeroGradient: expects 1 input, got 2"):
        caffe2op.create_operator("ZeroGradient", ["x", "y"], [])
