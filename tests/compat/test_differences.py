# SPDX-License-Identifier: BSD-3-Clause
"""The deliberate differences from Caffe2 that the porting guide lists, each pinned to its Caffe2 source.

A change in any of them must change the guide's table too (docs/guide/porting.rst).
"""

import math

import numpy as np
import pytest

import caffe2op
from caffe2op.compat import core


def test_float_argument_given_an_int_is_accepted():
    """Caffe2 ``proto_utils.cc`` ``GetSingleArgument<float>`` needs the ``f`` field, and its Python stores
    ``norm=2`` in ``i``: Caffe2 raises when the operator runs.  We convert the int exactly."""
    op = caffe2op.create_operator("SparseNormalize", ["w", "idx"], "w", norm=2)
    assert op.args == {"norm": 2} and caffe2op.get_schema("SparseNormalize").verify(op)["norm"] == 2.0
    table = np.full((2, 4), 2.0, np.float32)
    caffe2op.sparse_normalize(table, [0], norm=2)
    np.testing.assert_allclose(table[0], 1.0)


def test_infinite_norm_is_refused():
    """Caffe2 accepts ``norm=inf`` (and writes inf/nan rows); a target length must be finite here."""
    with pytest.raises(caffe2op.SchemaError, match="norm"):
        caffe2op.create_operator("SparseNormalize", ["w", "idx"], "w", norm=math.inf)


def test_bool_argument_given_2():
    """Caffe2 reads a bool from the int field, so ``use_max_norm=2`` is true; the native API refuses it
    (likely a slip), caffe2op.compat reads it as Caffe2."""
    with pytest.raises(TypeError, match="use_max_norm"):
        caffe2op.create_operator("SparseNormalize", ["w", "idx"], "w", use_max_norm=2)
    assert core.CreateOperator("SparseNormalize", ["w", "idx"], "w", use_max_norm=2).native.args["use_max_norm"] is True


def _caffe2_float16_sparse_normalize(table, norm):
    """Caffe2's Float16SparseNormalize (``sparse_normalize_op.cc``): float norm, the float scale applied to
    float16 data as ``EigenVectorArrayMap<c10::Half> *= static_cast<float>(...)``, i.e. rounded to float16."""
    x = table.astype(np.float32)
    norms = np.sqrt((x * x).sum(axis=1, dtype=np.float32)) + np.float32(1e-12)
    scale = (np.float32(norm) / norms).astype(np.float16).astype(np.float32)
    return (x * scale[:, None]).astype(np.float16)


def test_float16_scale_factor_is_not_rounded_to_float16():
    """Ours multiplies by the float32 factor: more accurate; Caffe2 differs by one float16 step on about a
    quarter of the elements (33,836 of 128,000 in the issue's table)."""
    rng = np.random.default_rng(11)
    table = (rng.standard_normal((1000, 128)) * 4).astype(np.float16)
    ours = caffe2op.sparse_normalize(table.copy(), np.arange(1000), norm=1.0, use_max_norm=False)
    caffe2 = _caffe2_float16_sparse_normalize(table, 1.0)
    differ = ours != caffe2
    assert 0.15 < differ.mean() < 0.4
    steps = np.abs(ours.view(np.int16).astype(np.int32) - caffe2.view(np.int16).astype(np.int32))
    assert steps.max() == 1  # one float16 step, never more
    exact = table.astype(np.float64) / np.linalg.norm(table.astype(np.float64), axis=1, keepdims=True)
    assert np.abs(ours - exact).sum() < np.abs(caffe2 - exact).sum()


def test_float32_norm_is_not_computed_in_float32():
    """Caffe2 computes norm, comparison and scale in float32: ``[1.0, 3e-4]`` has norm exactly 1.0f there,
    so with ``norm=1`` (max-norm) the row is left unchanged.  Our norm (float64) is 1.000000045 > 1."""
    row = np.array([1.0, 3e-4], np.float32)
    assert np.sqrt(np.float32((row * row).sum(dtype=np.float32))) + np.float32(1e-12) == np.float32(1.0)
    ours = caffe2op.sparse_normalize(row[None].copy(), [0], norm=1.0)
    assert ours[0, 0] < row[0]  # scaled: the true norm exceeds 1
    np.testing.assert_allclose(ours[0], row / np.linalg.norm(row.astype(np.float64)), rtol=1e-7)


def test_cpu_device_options_are_one_device_other_types_are_not():
    """Caffe2 ``core.py`` ``device_option_equal``: any two CPU options are equal (we agree); between other
    options Caffe2 compares only ``device_id`` (we also compare the type: a Sum cannot read two devices)."""
    ops = [
        caffe2op.OperatorDef(type="Sum", inputs="x", outputs="a", device_option=caffe2op.DeviceOption(0, 1)),
        caffe2op.OperatorDef(type="Sum", inputs="x", outputs="b"),
        caffe2op.OperatorDef(type="Sum", inputs=["a", "b"], outputs="s"),
    ]
    grad_ops, _ = caffe2op.get_backward_pass(ops, {"s": "s_grad"})
    assert [op.type for op in grad_ops] == ["Sum"]
    ops[1].device_option = caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 1)
    ops[0].device_option = caffe2op.DeviceOption(caffe2op.DeviceType.CUDA, 1)
    with pytest.raises(RuntimeError, match="same device option"):
        caffe2op.get_backward_pass(ops, {"s": "s_grad"})
