# SPDX-License-Identifier: BSD-3-Clause
"""SparseNormalize / Float16SparseNormalize on the CPU: reference checks, duplicates, threads, bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import caffe2op
from tests._helpers import assert_allclose_dtype, assert_bit_identical
from tests._reference import sparse_normalize_ref

FLOATS = [np.float16, np.float32, np.float64]


@st.composite
def tables_and_indices(draw, dtypes=FLOATS):
    """A table (rows scaled so that some exceed the norm) and indices with repeats."""
    dtype = draw(st.sampled_from(dtypes))
    n_rows = draw(st.integers(1, 40))
    row_shape = draw(st.sampled_from([(), (1,), (3,), (7,), (2, 3), (16,)]))
    values = draw(
        hnp.arrays(
            np.float64,
            (n_rows, *row_shape),
            elements=st.floats(-8, 8, allow_nan=False, allow_infinity=False, width=16),
        )
    )
    indices = draw(
        hnp.arrays(
            draw(st.sampled_from([np.int32, np.int64])), draw(st.integers(0, 60)), elements=st.integers(0, n_rows - 1)
        )
    )
    norm = draw(st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0]))
    return values.astype(dtype), indices, norm


@given(tables_and_indices(), st.booleans())
def test_matches_reference(case, use_max_norm):
    param, indices, norm = case
    expected = sparse_normalize_ref(param, indices, use_max_norm, norm)
    out = caffe2op.sparse_normalize(param, indices, use_max_norm=use_max_norm, norm=norm)
    assert out is param
    assert_allclose_dtype(param, expected)


@given(tables_and_indices())
def test_rows_not_selected_are_bit_identical(case):
    param, indices, norm = case
    before = param.copy()
    caffe2op.sparse_normalize(param, indices, use_max_norm=False, norm=norm)
    untouched = np.setdiff1d(np.arange(len(param)), indices)
    assert_bit_identical(param[untouched], before[untouched])


@pytest.mark.parametrize("dtype", FLOATS)
def test_max_norm_bounds_rows_and_keeps_short_ones(dtype):
    rng = np.random.default_rng(1)
    param = (rng.standard_normal((200, 8)) * rng.uniform(0.1, 3, (200, 1))).astype(dtype)
    before = param.copy()
    caffe2op.sparse_normalize(param, np.arange(200), norm=1.0)
    norms = np.linalg.norm(before.astype(np.float64), axis=1)
    short = norms <= 1.0
    assert_bit_identical(param[short], before[short])
    after = np.linalg.norm(param.astype(np.float64), axis=1)
    assert_allclose_dtype(after[~short].astype(dtype), np.ones((~short).sum()), dtype)


def test_row_exactly_at_norm_is_untouched_in_max_norm_mode():
    param = np.array([[3.0, 4.0], [6.0, 8.0]], dtype=np.float32)
    caffe2op.sparse_normalize(param, [0, 1], norm=5.0)
    np.testing.assert_array_equal(param, [[3.0, 4.0], [3.0, 4.0]])


def test_constant_norm_rescales_short_rows_up():
    param = np.array([[0.3, 0.4]])
    caffe2op.sparse_normalize(param, [0], use_max_norm=False, norm=2.0)
    np.testing.assert_allclose(param, np.array([[0.3, 0.4]]) * (2.0 / (0.5 + 1e-12)), rtol=1e-15)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("use_max_norm", [True, False])
def test_zero_rows_stay_zero(dtype, use_max_norm):
    param = np.zeros((3, 4), dtype=dtype)
    caffe2op.sparse_normalize(param, [0, 2], use_max_norm=use_max_norm, norm=1.0)
    assert_bit_identical(param, np.zeros((3, 4), dtype=dtype))


def test_norm_zero_zeroes_every_selected_row():
    param = np.array([[1.0, 2.0], [3.0, 4.0]])
    caffe2op.sparse_normalize(param, [1], use_max_norm=True, norm=0.0)
    np.testing.assert_array_equal(param, [[1.0, 2.0], [0.0, 0.0]])


@pytest.mark.parametrize("dtype", FLOATS)
def test_duplicates_normalise_once(dtype):
    rng = np.random.default_rng(2)
    base = (rng.standard_normal((50, 5)) * 3).astype(dtype)
    once, repeated = base.copy(), base.copy()
    caffe2op.sparse_normalize(once, np.arange(50), use_max_norm=False, norm=1.5)
    caffe2op.sparse_normalize(repeated, np.repeat(np.arange(50), 7)[::-1], use_max_norm=False, norm=1.5)
    assert_bit_identical(repeated, once)


@pytest.mark.parametrize("dtype", FLOATS)
def test_thread_count_does_not_change_results(dtype):
    rng = np.random.default_rng(3)
    base = (rng.standard_normal((20000, 32)) * 2).astype(dtype)  # big enough to go parallel
    indices = rng.integers(0, 20000, 30000)
    results = []
    for threads in (1, 2):
        caffe2op.set_num_threads(threads)
        table = base.copy()
        caffe2op.sparse_normalize(table, indices, use_max_norm=False, norm=1.0)
        results.append(table)
    assert_bit_identical(results[0], results[1])


def test_indices_any_shape_and_integer_dtype():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((10, 3)) * 5
    expected = sparse_normalize_ref(base, [1, 2, 3, 4])
    for indices in (
        np.array([[1, 2], [3, 4]]),
        np.array([1, 2, 3, 4], dtype=np.uint8),
        [1, 2, 3, 4],
        np.array([1, 2, 3, 4], dtype=np.uint64),
        np.array([[[1], [2]], [[3], [4]]], dtype=np.int32),
    ):
        param = base.copy()
        caffe2op.sparse_normalize(param, indices)
        assert_allclose_dtype(param, expected)


def test_empty_indices_and_empty_tables_do_nothing():
    param = np.arange(6.0).reshape(2, 3)
    caffe2op.sparse_normalize(param, np.array([], dtype=np.int64))
    np.testing.assert_array_equal(param, np.arange(6.0).reshape(2, 3))
    empty = np.zeros((0, 3), dtype=np.float32)
    caffe2op.sparse_normalize(empty, [])
    narrow = np.zeros((4, 0), dtype=np.float32)
    caffe2op.sparse_normalize(narrow, [0, 3])


def test_one_dimensional_param_has_scalar_rows():
    param = np.array([3.0, -0.5, 7.0])
    caffe2op.sparse_normalize(param, [0, 1, 2], use_max_norm=True, norm=1.0)
    np.testing.assert_allclose(param, [1.0, -0.5, 1.0], rtol=1e-12)


def test_non_contiguous_param_is_updated_in_place():
    rng = np.random.default_rng(5)
    storage = rng.standard_normal((30, 8)) * 4
    view = storage[::2, ::2]  # rows 0,2,..; columns 0,2,4,6
    expected = sparse_normalize_ref(np.ascontiguousarray(view), [1, 3, 3, 14])
    untouched_columns = storage[:, 1::2].copy()
    caffe2op.sparse_normalize(view, [1, 3, 3, 14])
    assert_allclose_dtype(storage[::2, ::2], expected)
    assert_bit_identical(storage[:, 1::2], untouched_columns)


def test_float16_uses_float32_arithmetic_and_rounds_to_nearest():
    param = np.array([[3.0, 4.0], [1e-3, 0.0], [60000.0, 60000.0]], dtype=np.float16)
    caffe2op.sparse_normalize(param, [0, 1, 2], use_max_norm=False, norm=1.0)
    # float32 reference rounded once to float16
    ref = np.array([[3.0, 4.0], [1e-3, 0.0], [60000.0, 60000.0]], dtype=np.float16).astype(np.float32)
    n = np.sqrt((ref * ref).sum(axis=1, keepdims=True))
    expected = (ref * (np.float32(1.0) / (n + np.float32(1e-12)))).astype(np.float16)
    np.testing.assert_array_equal(param, expected)


def test_grad_argument_is_ignored():
    param = np.array([[3.0, 4.0]])
    caffe2op.sparse_normalize(param, [0], grad=np.ones(99))
    np.testing.assert_allclose(param, [[0.6, 0.8]])


# --- operators through a workspace ------------------------------------------


@pytest.mark.parametrize("with_grad", [False, True])
@given(case=tables_and_indices(dtypes=[np.float32, np.float64]), use_max_norm=st.booleans())
def test_operator_matches_reference(with_grad, case, use_max_norm):
    param, indices, norm = case
    ws = caffe2op.Workspace()
    ws.feed_blob("w", param)
    ws.feed_blob("idx", indices)
    inputs = ["w", "idx"]
    if with_grad:
        ws.feed_blob("g", np.ones((len(indices), 2), np.float32))
        inputs.append("g")
    op = caffe2op.create_operator("SparseNormalize", inputs, ["w"], use_max_norm=use_max_norm, norm=norm)
    ws.run_operator_once(op)
    assert_allclose_dtype(ws.fetch_blob("w"), sparse_normalize_ref(param, indices, use_max_norm, norm))


@given(case=tables_and_indices(dtypes=[np.float16]), use_max_norm=st.booleans())
def test_float16_operator_matches_reference(case, use_max_norm):
    param, indices, norm = case
    ws = caffe2op.Workspace()
    ws.feed_blob("w", param)
    ws.feed_blob("idx", indices)
    op = caffe2op.create_operator("Float16SparseNormalize", ["w", "idx"], ["w"], use_max_norm=use_max_norm, norm=norm)
    ws.run_operator_once(op)
    assert_allclose_dtype(ws.fetch_blob("w"), sparse_normalize_ref(param, indices, use_max_norm, norm))


def test_operator_defaults_are_max_norm_and_one():
    schema = caffe2op.get_schema("SparseNormalize")
    assert schema.arg("use_max_norm").default is True
    assert schema.arg("norm").default == 1.0
    assert schema.input_range == (2, 3) and schema.output_range == (1, 1)


def test_operator_accepts_caffe2_int_bools():
    op = caffe2op.create_operator("SparseNormalize", ["w", "i"], ["w"], use_max_norm=0, norm=2)
    assert caffe2op.get_schema("SparseNormalize").verify(op) == {"use_max_norm": False, "norm": 2.0}


# --- bad input: typed errors, nothing modified --------------------------------


def _table():
    return np.random.default_rng(6).standard_normal((5, 3)).astype(np.float32) * 4


@pytest.mark.parametrize(
    "indices, position, value",
    [([0, 1, 5], 2, 5), ([-1, 0], 0, -1), ([2, 7, -3], 1, 7), (np.array([0, 9], np.int32), 1, 9)],
)
def test_out_of_range_index_raises_and_changes_nothing(indices, position, value):
    param = _table()
    before = param.copy()
    with pytest.raises(IndexError) as err:
        caffe2op.sparse_normalize(param, indices, use_max_norm=False)
    message = str(err.value)
    assert "SparseNormalize" in message and f"index {value} at position {position}" in message and "5 rows" in message
    assert_bit_identical(param, before)


def test_out_of_range_uint64_index_raises():
    param = _table()
    with pytest.raises(IndexError, match="SparseNormalize: index 18446744073709551615"):
        caffe2op.sparse_normalize(param, np.array([0, 2**64 - 1], dtype=np.uint64))


def test_out_of_range_in_operator_leaves_blob_unchanged():
    ws = caffe2op.Workspace()
    ws.feed_blob("w", _table())
    ws.feed_blob("idx", np.array([1, 50]))
    before = ws.fetch_blob("w")
    with pytest.raises(IndexError, match="index 50 at position 1"):
        ws.run_operator_once(caffe2op.create_operator("SparseNormalize", ["w", "idx"], ["w"]))
    assert_bit_identical(ws.fetch_blob("w"), before)


@pytest.mark.parametrize("indices", [np.array([0.0, 1.0]), np.array([True, False]), ["a"], np.array([1 + 0j])])
def test_non_integer_indices_raise_type_error(indices):
    param = _table()
    before = param.copy()
    with pytest.raises(TypeError, match="SparseNormalize: indices must be integers"):
        caffe2op.sparse_normalize(param, indices)
    assert_bit_identical(param, before)


@pytest.mark.parametrize("param", [np.arange(6).reshape(2, 3), np.ones((2, 2), dtype=complex), np.ones(3, bool)])
def test_non_float_param_raises_type_error(param):
    with pytest.raises(TypeError, match="SparseNormalize: param must be float16, float32 or float64"):
        caffe2op.sparse_normalize(param, [0])


def test_param_must_be_an_array():
    with pytest.raises(TypeError, match="param must be a numpy.ndarray"):
        caffe2op.sparse_normalize([[3.0, 4.0]], [0])


def test_read_only_param_raises_value_error():
    param = _table()
    param.flags.writeable = False
    before = param.copy()
    with pytest.raises(ValueError, match="SparseNormalize: param is read-only"):
        caffe2op.sparse_normalize(param, [0])
    assert_bit_identical(param, before)


def test_zero_dimensional_param_raises_value_error():
    with pytest.raises(ValueError, match="at least 1 dimension"):
        caffe2op.sparse_normalize(np.array(3.0), [0])


@pytest.mark.parametrize("norm", [-1.0, float("nan"), float("inf")])
def test_bad_norm_raises_value_error(norm):
    param = _table()
    before = param.copy()
    with pytest.raises(ValueError, match="SparseNormalize: argument 'norm' must be finite and >= 0"):
        caffe2op.sparse_normalize(param, [0], norm=norm)
    assert_bit_identical(param, before)
    with pytest.raises(caffe2op.SchemaError, match="'norm' must be finite and >= 0"):
        caffe2op.create_operator("SparseNormalize", ["w", "i"], ["w"], norm=norm)


@pytest.mark.parametrize("kwargs", [dict(norm="1"), dict(norm=True), dict(use_max_norm="yes"), dict(use_max_norm=2)])
def test_bad_argument_types_raise_type_error(kwargs):
    with pytest.raises(TypeError, match="SparseNormalize: argument"):
        caffe2op.sparse_normalize(_table(), [0], **kwargs)
    with pytest.raises(TypeError):
        caffe2op.create_operator("SparseNormalize", ["w", "i"], ["w"], **kwargs)


def test_output_must_be_param():
    with pytest.raises(caffe2op.SchemaError, match="EnforceOneToOneInplace"):
        caffe2op.create_operator("SparseNormalize", ["w", "i"], ["w_normalized"])


@pytest.mark.parametrize("inputs, outputs", [(["w"], ["w"]), (["w", "i", "g", "x"], ["w"]), (["w", "i"], [])])
def test_wrong_input_or_output_count(inputs, outputs):
    with pytest.raises(caffe2op.SchemaError, match="SparseNormalize: expects"):
        caffe2op.create_operator("SparseNormalize", inputs, outputs)


def test_unknown_argument():
    with pytest.raises(caffe2op.SchemaError, match="unknown argument 'eps'"):
        caffe2op.create_operator("SparseNormalize", ["w", "i"], ["w"], eps=1e-6)


def test_float16_operator_rejects_float32_table():
    ws = caffe2op.Workspace()
    ws.feed_blob("w", _table())
    ws.feed_blob("i", np.array([0]))
    before = ws.fetch_blob("w")
    with pytest.raises(TypeError, match="Float16SparseNormalize: param must be float16, got float32"):
        ws.run_operator_once(caffe2op.create_operator("Float16SparseNormalize", ["w", "i"], ["w"]))
    assert_bit_identical(ws.fetch_blob("w"), before)


def test_sparse_normalize_operator_accepts_float16_tables():
    ws = caffe2op.Workspace()
    ws.feed_blob("w", np.array([[3.0, 4.0]], np.float16))
    ws.feed_blob("i", np.array([0]))
    ws.run_operator_once(caffe2op.create_operator("SparseNormalize", ["w", "i"], ["w"]))
    assert_allclose_dtype(ws.fetch_blob("w"), [[0.6, 0.8]])


@pytest.mark.parametrize(
    "param, indices, position, value",
    [
        (np.zeros((4, 0), np.float32), [0, 6], 1, 6),  # rows of width 0: nothing to scale, indices still checked
        (np.zeros((0, 3), np.float64), [2, 0], 0, 2),  # no rows at all
        ((np.arange(48.0).reshape(6, 8) + 1)[::2, ::2], [1, 2, 3], 2, 3),  # non-contiguous: computed on a copy
        (np.arange(12, dtype=np.float16).reshape(3, 4) + 1, [0, -1], 1, -1),
    ],
)
def test_out_of_range_is_caught_on_every_path(param, indices, position, value):
    before = param.copy()
    with pytest.raises(IndexError, match=f"index {value} at position {position} "):
        caffe2op.sparse_normalize(param, np.array(indices), use_max_norm=False)
    assert_bit_identical(param, before)


@given(tables_and_indices(), st.booleans(), st.integers(-3, 3))
def test_plain_and_checked_calls_agree(case, use_max_norm, shift):
    """The fast path for plain NumPy calls and the fully checked one give identical results and errors."""
    param, indices, norm = case
    indices = indices.astype(np.int64) + shift  # some out of range
    plain, checked = param.copy(), param.copy()

    def run(table, idx, flag, value):
        try:
            caffe2op.sparse_normalize(table, idx, use_max_norm=flag, norm=value)
            return None
        except IndexError as err:
            return str(err)

    outcome_plain = run(plain, indices, use_max_norm, float(norm))
    outcome_checked = run(checked, indices.tolist(), int(use_max_norm), np.float64(norm))  # not the plain types
    assert outcome_plain == outcome_checked
    assert_bit_identical(plain, checked)


# --- overflow, underflow and the norm's range (issue 10, items 7 and 12) ------


def _hypot_ref(row, use_max_norm, norm):
    """Caffe2's rule with an exact, overflow-free row norm (math.hypot), in Python floats."""
    import math

    n = math.hypot(*row)
    if (use_max_norm and n <= norm) or n == 0:
        return list(row)
    if math.isinf(n):  # the elements are finite: scale them first
        big = max(abs(v) for v in row)
        return [v / big * (norm / math.hypot(*(w / big for w in row))) for v in row]
    return [v * (norm / (n + 1e-12)) for v in row]


@pytest.mark.parametrize("use_max_norm", [True, False])
@pytest.mark.parametrize("value", [1e200, 1.7e308, 1e-200, 1e-310, 5e-324, 1e-160, 3e154])
def test_float64_rows_neither_overflow_nor_underflow(value, use_max_norm):
    param = np.full((2, 4), value)
    param[0, 1] = -value / 2
    before = param.copy()
    expected = _hypot_ref(param[0].tolist(), use_max_norm, 1.0)
    caffe2op.sparse_normalize(param, [0], use_max_norm=use_max_norm, norm=1.0)
    np.testing.assert_allclose(param[0], expected, rtol=1e-14, atol=0)
    assert_bit_identical(param[1], before[1])


def test_huge_row_becomes_half_everywhere():
    param = np.full((2, 4), 1e200)  # the reproduction: the row used to become zeros
    caffe2op.sparse_normalize(param, [0])
    np.testing.assert_allclose(param[0], 0.5, rtol=1e-15)


def test_overflowing_row_norm_with_finite_elements_is_scaled():
    param = np.full((1, 4), 1.5e308)  # ||row|| = 3e308 > DBL_MAX
    caffe2op.sparse_normalize(param, [0], norm=2.0)
    np.testing.assert_allclose(param[0], 1.0, rtol=1e-15)


@pytest.mark.parametrize(
    "dtype, norm", [(np.float32, 1e300), (np.float32, 3.5e38), (np.float16, 65520.0), (np.float16, 1e5)]
)
def test_norm_not_representable_in_the_table_dtype_raises(dtype, norm):
    param = np.ones((3, 4), dtype)
    before = param.copy()
    with pytest.raises(
        ValueError, match=rf"SparseNormalize: norm=.* cannot be represented in {dtype.__name__} \(param's dtype"
    ):
        caffe2op.sparse_normalize(param, [0], use_max_norm=False, norm=norm)
    assert_bit_identical(param, before)
    ws = caffe2op.Workspace()
    ws.feed_blob("w", param)
    ws.feed_blob("i", np.array([0, 1]))
    with pytest.raises(ValueError, match="cannot be represented"):
        ws.run_operator_once(caffe2op.create_operator("SparseNormalize", ["w", "i"], ["w"], norm=norm))
    assert_bit_identical(ws.fetch_blob("w"), before)


def test_largest_norm_of_the_dtype_is_accepted():
    param = np.ones((2, 4), np.float16)
    caffe2op.sparse_normalize(param, [0], use_max_norm=False, norm=65504.0)
    assert np.isfinite(param).all() and param[0, 0] == np.float16(32752)


def test_integer_norm_too_large_for_a_float_raises_value_error():
    param = _table()
    before = param.copy()
    with pytest.raises(ValueError, match="SparseNormalize: argument 'norm' must be finite, got an int of 401 digits"):
        caffe2op.sparse_normalize(param, [0], norm=10**400)
    assert_bit_identical(param, before)


# --- messages for odd index lists (issue 10, item 13) --------------------------


def test_ragged_index_list_names_the_operator():
    param = _table()
    before = param.copy()
    with pytest.raises(
        ValueError, match="SparseNormalize: indices must be a rectangular array of integers, got a ragged"
    ):
        caffe2op.sparse_normalize(param, [[0], [1, 2]])
    assert_bit_identical(param, before)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**30])
def test_index_beyond_64_bits_is_an_index_error(value):
    param = _table()
    before = param.copy()
    with pytest.raises(IndexError, match=f"SparseNormalize: index {value} at position 1 of indices is out of range"):
        caffe2op.sparse_normalize(param, [0, value])
    assert_bit_identical(param, before)


def test_object_array_of_small_ints_is_accepted():
    param = _table()
    expected = sparse_normalize_ref(param, [0, 3])
    caffe2op.sparse_normalize(param, np.array([0, 3], dtype=object))
    assert_allclose_dtype(param, expected)


def test_empty_rows_of_a_huge_table_need_no_memory_for_the_table():
    param = np.empty((2**40, 0), np.float32)  # no bitmap of 2**40 bits: de-duplication is sized by the indices
    assert caffe2op.sparse_normalize(param, [5, 2**40 - 1, 5]) is param
    with pytest.raises(IndexError, match="index 1099511627776 at position 0"):
        caffe2op.sparse_normalize(param, [2**40])


# --- de-duplication: bitmap (ascending walk) and hash set ---------------------


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n_rows, n_indices", [(10**6, 3), (10**6, 40), (5000, 20_000), (300, 100_000)])
@pytest.mark.parametrize("threads", [1, 2])
def test_both_deduplication_paths_match_the_reference(dtype, n_rows, n_indices, threads):
    """Few indices into a large table take the hash set; many take the bitmap (parallel above 2**16)."""
    rng = np.random.default_rng(n_rows + n_indices)
    param = (rng.standard_normal((n_rows, 4)) * 2).astype(dtype)
    indices = rng.integers(0, n_rows, n_indices)
    indices[-1] = indices[0]  # a repeat, seen by both paths
    expected_rows = sparse_normalize_ref(param[np.unique(indices)], np.arange(np.unique(indices).size), False, 1.0)
    before = param.copy()
    caffe2op.set_num_threads(threads)
    try:
        caffe2op.sparse_normalize(param, indices, use_max_norm=False, norm=1.0)
    finally:
        caffe2op.set_num_threads(None)
    assert_allclose_dtype(param[np.unique(indices)], expected_rows)
    untouched = np.setdiff1d(np.arange(n_rows), indices)
    assert_bit_identical(param[untouched], before[untouched])


@pytest.mark.parametrize("n_rows, n_indices", [(10**6, 5), (2000, 200_000)])
def test_out_of_range_late_in_either_path_changes_nothing(n_rows, n_indices):
    rng = np.random.default_rng(7)
    param = rng.standard_normal((n_rows, 3)) * 5
    indices = rng.integers(0, n_rows, n_indices)
    indices[n_indices - 2] = n_rows
    before = param.copy()
    with pytest.raises(IndexError, match=f"index {n_rows} at position {n_indices - 2}"):
        caffe2op.sparse_normalize(param, indices)
    assert_bit_identical(param, before)


@pytest.mark.parametrize("dtype", FLOATS)
def test_parallel_deduplication_gives_the_serial_result(dtype):
    """The atomic-OR bitmap marking (used for very many indices) is forced on a small case."""
    from caffe2op.ops.sparse_normalize import cpu

    rng = np.random.default_rng(11)
    base = (rng.standard_normal((3000, 5)) * 2).astype(dtype)
    indices = rng.integers(0, 3000, 20_000)
    serial, threaded = base.copy(), base.copy()
    caffe2op.set_num_threads(1)
    caffe2op.sparse_normalize(serial, indices, use_max_norm=False)
    default = cpu._kernels.tuning()
    cpu._kernels.set_tuning(parallel_min_indices=1, parallel_min_work=0)
    caffe2op.set_num_threads(2)
    try:
        caffe2op.sparse_normalize(threaded, indices, use_max_norm=False)
        with pytest.raises(IndexError, match="index 3000 at position 7"):
            caffe2op.sparse_normalize(threaded, np.r_[indices[:7], 3000, indices[7:]], use_max_norm=False)
    finally:
        cpu._kernels.set_tuning(**default)
        caffe2op.set_num_threads(None)
    assert_bit_identical(threaded, serial)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("width", [1, 64, 5000])
@pytest.mark.parametrize("threads", [1, 2])
def test_row_pass_bits_depend_on_neither_threads_nor_prefetching(dtype, width, threads):
    """The row pass split over threads, or prefetching nothing, gives the serial bits.

    Covers rows wider than the prefetch (5,000 elements), both
    de-duplications, and float64 rows that need the rescaled measure (tiny
    and huge) between ordinary ones.
    """
    from caffe2op.ops.sparse_normalize import cpu

    rng = np.random.default_rng(width)
    n_rows = 3000 if width < 5000 else 300
    base = (rng.standard_normal((n_rows, width)) * rng.uniform(0.2, 3.0, (n_rows, 1))).astype(dtype)
    if dtype == np.float64:
        base[5] *= 1e-170
        base[6] *= 1e170
    default = cpu._kernels.tuning()
    for indices in (rng.integers(0, n_rows, 1500), rng.integers(0, n_rows, 9)):
        indices[:2] = (5, 6)
        for use_max_norm in (True, False):
            results = []
            for tuning in ({}, dict(parallel_min_work=0), dict(prefetch_rows=1, prefetch_bytes=0)):
                param = base.copy()
                cpu._kernels.set_tuning(**tuning)
                caffe2op.set_num_threads(threads)
                try:
                    caffe2op.sparse_normalize(param, indices, use_max_norm=use_max_norm, norm=1.5)
                finally:
                    cpu._kernels.set_tuning(**default)
                    caffe2op.set_num_threads(None)
                results.append(param)
            for param in results[1:]:
                assert_bit_identical(param, results[0])
            touched = np.setdiff1d(indices, [5, 6])  # the plain float64 reference overflows on those two
            expected = sparse_normalize_ref(base[touched], np.arange(touched.size), use_max_norm, 1.5)
            assert_allclose_dtype(results[0][touched], expected)
