# SPDX-License-Identifier: BSD-3-Clause
"""Normalize / NormalizeGradient on dense arrays: reference checks, modes, layouts, threads, operators, bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import caffe2op
from caffe2op.ops.normalize.dense import normalize_gradient_dense
from tests._helpers import assert_allclose_dtype, assert_bit_identical
from tests._reference import normalize_gradient_ref, normalize_ref, sparse_normalize_ref

FLOATS = [np.float16, np.float32, np.float64]
LAYOUTS = ["C", "F", "strided"]


def _layout(values, layout):
    """``values`` as a C-contiguous, F-contiguous or non-contiguous array with the same contents."""
    if layout == "F":
        return np.asfortranarray(values)
    if layout == "strided":
        doubled = np.repeat(values, 2, axis=-1) if values.ndim else values
        return doubled[..., ::2]
    return np.ascontiguousarray(values)


@st.composite
def dense_cases(draw, dtypes=FLOATS, max_rank=4):
    """An array of any rank (zero-size and length-1 axes included, some all-zero vectors), an axis and a layout."""
    dtype = draw(st.sampled_from(dtypes))
    ndim = draw(st.integers(1, max_rank))
    shape = draw(hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=0, max_side=7))
    elements = st.floats(-8, 8, allow_nan=False, allow_infinity=False, width=16)
    values = draw(hnp.arrays(np.float64, shape, elements=elements | st.just(0.0)))
    axis = draw(st.integers(-ndim, ndim - 1))
    if values.size and draw(st.booleans()):  # an all-zero vector along the axis
        index = [draw(st.integers(0, max(s - 1, 0))) for s in shape]
        index[axis] = slice(None)
        values[tuple(index)] = 0.0
    layout = draw(st.sampled_from(LAYOUTS))
    return _layout(values.astype(dtype), layout), axis


MODES = st.sampled_from([(1.0, False), (2.5, False), (0.0, False), (1.0, True), (2.5, True), (0.0, True)])


@given(dense_cases())
def test_matches_reference(case):
    x, axis = case
    before = x.copy()
    y = caffe2op.normalize(x, axis=axis)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert_allclose_dtype(y, normalize_ref(x, axis))
    assert_bit_identical(x, before)  # out of place: the input is untouched


@given(dense_cases(), MODES)
def test_modes_match_reference(case, mode):
    x, axis = case
    norm, use_max_norm = mode
    y = caffe2op.normalize(x, axis=axis, norm=norm, use_max_norm=use_max_norm)
    assert_allclose_dtype(y, normalize_ref(x, axis, norm, use_max_norm))


@given(dense_cases())
def test_in_place_and_preallocated_out(case):
    x, axis = case
    expected = caffe2op.normalize(x, axis=axis)
    out = np.full(x.shape, np.nan, dtype=x.dtype)
    assert caffe2op.normalize(x, axis=axis, out=out) is out
    assert_bit_identical(out, expected)
    assert caffe2op.normalize(x, axis=axis, out=x) is x
    assert_bit_identical(x, expected)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_every_axis_of_a_3d_array(dtype, axis):
    x = (np.random.default_rng(0).standard_normal((4, 5, 6)) * 3).astype(dtype)
    y = caffe2op.normalize(x, axis=axis)
    assert_allclose_dtype(y, normalize_ref(x, axis))
    norms = np.linalg.norm(y.astype(np.float64), axis=axis)
    assert_allclose_dtype(norms.astype(dtype), np.ones(norms.shape), dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("use_max_norm", [False, True])
def test_zero_vectors_stay_zero(dtype, axis, use_max_norm):
    x = np.zeros((3, 4), dtype=dtype)
    x[1, 2] = 5.0  # one non-zero column and row; the rest stay zero
    y = caffe2op.normalize(x, axis=axis, use_max_norm=use_max_norm, norm=1.0)
    expected = np.zeros((3, 4), dtype=dtype)
    expected[1, 2] = 1.0
    assert_bit_identical(y, expected)
    assert_bit_identical(caffe2op.normalize(-np.zeros((2, 2), dtype), axis=axis), -np.zeros((2, 2), dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_single_element_vectors_become_their_sign(dtype):
    x = np.array([[3.0], [-0.25], [0.0]], dtype=dtype)
    assert_bit_identical(caffe2op.normalize(x, axis=1), np.array([[1.0], [-1.0], [0.0]], dtype=dtype))
    row = np.array([[2.0, -4.0, 0.0]], dtype=dtype)
    assert_bit_identical(caffe2op.normalize(row, axis=0), np.array([[1.0, -1.0, 0.0]], dtype=dtype))


@pytest.mark.parametrize("shape, axis", [((0,), 0), ((0, 3), 0), ((0, 3), 1), ((3, 0), 0), ((2, 0, 4), -1)])
def test_empty_arrays(shape, axis):
    x = np.zeros(shape, dtype=np.float32)
    y = caffe2op.normalize(x, axis=axis)
    assert y.shape == shape and y.dtype == np.float32
    assert caffe2op.normalize(x, axis=axis, out=x) is x


def test_caffe2_eps_divides_tiny_vectors_by_1e_12():
    x = np.array([[1e-13, 0.0], [3e-13, 4e-13]])
    np.testing.assert_allclose(caffe2op.normalize(x), [[0.1, 0.0], [0.3, 0.4]], rtol=1e-12)


def test_nan_and_inf_propagate_like_numpy():
    x = np.array([[np.nan, 1.0], [np.inf, 1.0], [1.0, 1.0]])
    with np.errstate(invalid="ignore"):
        expected = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    np.testing.assert_array_equal(caffe2op.normalize(x, axis=1), expected)


def test_max_norm_leaves_short_vectors_bit_identical_and_bounds_the_others():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((64, 300)) * rng.uniform(0.02, 0.2, (1, 300))).astype(np.float32)
    norms = np.linalg.norm(x.astype(np.float64), axis=0)
    y = caffe2op.normalize(x, axis=0, use_max_norm=True, norm=1.0)
    short = norms <= 1.0
    assert short.any() and (~short).any()
    assert_bit_identical(y[:, short], x[:, short])
    assert_allclose_dtype(np.linalg.norm(y[:, ~short].astype(np.float64), axis=0).astype(np.float32), 1.0)


def test_vector_exactly_at_norm_is_untouched_in_max_norm_mode():
    x = np.array([[3.0, 4.0], [6.0, 8.0]], dtype=np.float32)
    np.testing.assert_array_equal(caffe2op.normalize(x, norm=5.0, use_max_norm=True), [[3.0, 4.0], [3.0, 4.0]])


@pytest.mark.parametrize("dtype", FLOATS)
def test_max_norm_rows_agree_with_sparse_normalize(dtype):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((40, 7)) * rng.uniform(0.1, 2, (40, 1))).astype(dtype)
    for use_max_norm in (True, False):
        expected = sparse_normalize_ref(x, np.arange(40), use_max_norm, 1.5)
        # SparseNormalize divides by n + 1e-12, Normalize by max(n, 1e-12): a relative 1e-12 / n apart.
        loose = {"rtol": 1e-11} if dtype == np.float64 else {}
        assert_allclose_dtype(caffe2op.normalize(x, axis=1, norm=1.5, use_max_norm=use_max_norm), expected, **loose)


def test_float16_is_computed_in_float32_and_rounded_once():
    x = np.array([[3.0, 4.0, 0.1], [60000.0, 60000.0, 1.0]], dtype=np.float16)
    y = caffe2op.normalize(x, axis=1)
    wide = x.astype(np.float32)
    expected = (wide * (np.float32(1) / np.sqrt((wide * wide).sum(axis=1, keepdims=True)))).astype(np.float16)
    np.testing.assert_array_equal(y, expected)


def test_array_like_input_and_list_of_lists():
    np.testing.assert_allclose(caffe2op.normalize([[3.0, 4.0]]), [[0.6, 0.8]])


@pytest.mark.parametrize("axis", [0, 1])
def test_agrees_with_sklearn(axis):
    sklearn_normalize = pytest.importorskip("sklearn.preprocessing").normalize
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((30, 20)).astype(dtype)
        x[:, 3] = 0.0
        x[5, :] = 0.0  # sklearn leaves zero vectors at zero too
        assert_allclose_dtype(caffe2op.normalize(x, axis=axis), sklearn_normalize(x, norm="l2", axis=axis))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape, axis", [((300, 200), 0), ((300, 200), 1), ((8, 900, 30), 1), ((40, 3, 2000), 0)])
def test_thread_count_does_not_change_results(dtype, shape, axis):
    x = (np.random.default_rng(4).standard_normal(shape) * 2).astype(dtype)
    dy = np.flip(x).copy()
    forward, backward = {}, {}
    for threads in (1, 2, 3):
        caffe2op.set_num_threads(threads)
        forward[threads] = caffe2op.normalize(x, axis=axis)
        backward[threads] = normalize_gradient_dense("NormalizeGradient", x, dy, axis)
    for threads in (2, 3):
        assert_bit_identical(forward[threads], forward[1])
        assert_bit_identical(backward[threads], backward[1])


# --- operators through a workspace ---------------------------------------------


@given(dense_cases(max_rank=3), st.booleans())
def test_operator_matches_reference(case, in_place):
    x, axis = case
    ws = caffe2op.Workspace()
    ws.feed_blob("x", x)
    if in_place:  # Caffe2's Normalize schema has no AllowInplace
        with pytest.raises(caffe2op.SchemaError, match="AllowInplace"):
            caffe2op.create_operator("Normalize", "x", "x", axis=axis)
        return
    ws.run_operator_once(caffe2op.create_operator("Normalize", "x", "y", axis=axis))
    assert_allclose_dtype(ws.fetch_blob("y"), normalize_ref(x, axis))
    assert_bit_identical(ws.fetch_blob("x"), np.ascontiguousarray(x))


def test_operator_default_axis_is_last():
    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32))
    ws.run_operator_once(caffe2op.create_operator("Normalize", "x", "y"))
    np.testing.assert_allclose(ws.fetch_blob("y"), [[0.6, 0.8], [0.0, 1.0]])


def test_operator_in_a_net():
    net = caffe2op.Net("n")
    net.Normalize("w", "w_unit", axis=0)
    net.Normalize("w", "w_rows", axis=1)
    ws = caffe2op.Workspace()
    ws.feed_blob("w", np.array([[3.0], [4.0]]))
    ws.run_net(net)
    np.testing.assert_allclose(ws.fetch_blob("w_unit"), [[0.6], [0.8]])
    np.testing.assert_allclose(ws.fetch_blob("w_rows"), [[1.0], [1.0]])
    # Caffe2's Normalize schema has no AllowInplace: in place fails schema verification.
    with pytest.raises(caffe2op.SchemaError, match="does not allow \\(AllowInplace\\)"):
        net.Normalize("w", "w", axis=1)


def test_schemas():
    schema = caffe2op.get_schema("Normalize")
    assert schema.input_range == (1, 1) and schema.output_range == (1, 1)
    assert schema.arg("axis").default == -1
    assert not schema.inplace_allowed(0, 0)  # as Caffe2's (normalize_op.cc: no AllowInplace)
    assert schema.infer_types_and_shapes([((2, 3), np.dtype("float16"))]) == [((2, 3), np.dtype("float16"))]
    assert schema.doc and schema.formula and schema.example
    grad = caffe2op.get_schema("NormalizeGradient")
    assert grad.input_range == (2, 2) and grad.output_range == (1, 1) and grad.arg("axis").default == -1
    assert grad.doc and grad.formula and grad.example
    assert {"Normalize", "NormalizeGradient"} <= set(caffe2op.registered_operators(caffe2op.DeviceType.CPU))


@pytest.mark.parametrize("op_type", ["Normalize", "NormalizeGradient"])
def test_schema_examples_run(op_type):
    import doctest

    example = caffe2op.get_schema(op_type).example
    test = doctest.DocTestParser().get_doctest(example, {}, op_type, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


# --- NormalizeGradient -----------------------------------------------------------


@given(dense_cases(max_rank=3), st.data())
def test_gradient_matches_reference(case, data):
    x, axis = case
    dy = data.draw(hnp.arrays(x.dtype, x.shape, elements=st.floats(-4, 4, width=16)))
    ws = caffe2op.Workspace()
    ws.feed_blob("x", x)
    ws.feed_blob("dy", dy)
    ws.run_operator_once(caffe2op.create_operator("NormalizeGradient", ["x", "dy"], "dx", axis=axis))
    dx = ws.fetch_blob("dx")
    assert dx.dtype == x.dtype and dx.shape == x.shape
    expected = normalize_gradient_ref(x, dy, axis)
    # dX is a difference of two terms, each bounded by ||dY|| / n: errors scale with that, not with dX.
    wide_x, wide_dy = x.astype(np.float64), dy.astype(np.float64)
    n = np.maximum(np.sqrt(np.sum(wide_x**2, axis=axis, keepdims=True)), 1e-12)
    bound = np.sqrt(np.sum(wide_dy**2, axis=axis, keepdims=True)) / n
    tol = {np.float16: 1e-2, np.float32: 1e-5, np.float64: 1e-12}[x.dtype.type]
    # float16 results below 6e-5 are subnormal: their spacing, 2**-24, is an absolute error floor.
    floor = 2.0**-24 if x.dtype == np.float16 else 0.0
    finite = np.abs(expected) < 6e4 if x.dtype == np.float16 else np.ones(x.shape, bool)  # float16 overflows
    assert np.all(np.abs(dx[finite] - expected[finite]) <= tol * (np.abs(expected) + 2 * bound)[finite] + floor)
    assert np.all((np.abs(dx[~finite]) >= 3e4) & (np.sign(dx[~finite]) == np.sign(expected[~finite])))


@pytest.mark.parametrize("shape, axis", [((5,), 0), ((4, 6), 0), ((4, 6), 1), ((3, 4, 5), 1), ((3, 4, 5), -1)])
def test_gradient_matches_finite_differences_of_the_forward_kernel(shape, axis):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)

    def loss(values):
        return float(np.sum(dy * caffe2op.normalize(values, axis=axis)))

    step = 1e-6
    numeric = np.empty_like(x)
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += step
        minus[i] -= step
        numeric[i] = (loss(plus) - loss(minus)) / (2 * step)
    ws = caffe2op.Workspace()
    ws.feed_blob("x", x)
    ws.feed_blob("dy", dy)
    ws.run_operator_once(caffe2op.create_operator("NormalizeGradient", ["x", "dy"], "dx", axis=axis))
    np.testing.assert_allclose(ws.fetch_blob("dx"), numeric, rtol=1e-6, atol=1e-7)


def test_gradient_of_a_zero_vector_is_dy_over_eps():
    dx = normalize_gradient_dense("NormalizeGradient", np.zeros(3), np.ones(3), -1)
    np.testing.assert_allclose(dx, np.full(3, 1e12))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_gradient_low_precision_dtypes(dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 9)).astype(dtype)
    dy = rng.standard_normal((6, 9)).astype(dtype)
    for axis in (0, 1):
        dx = normalize_gradient_dense("NormalizeGradient", x, dy, axis)
        assert_allclose_dtype(dx, normalize_gradient_ref(x, dy, axis), atol=2e-2 if dtype == np.float16 else 1e-5)


# --- bad input: typed errors, nothing modified -----------------------------------


def _weights():
    return np.random.default_rng(7).standard_normal((4, 3)).astype(np.float32)


@pytest.mark.parametrize("axis", [2, -3, 100])
def test_axis_out_of_range(axis):
    x = _weights()
    before = x.copy()
    with pytest.raises(caffe2op.SchemaError, match=f"Normalize: axis {axis} is out of range for an input of rank 2"):
        caffe2op.normalize(x, axis=axis, out=x)
    assert_bit_identical(x, before)
    ws = caffe2op.Workspace()
    ws.feed_blob("x", x)
    with pytest.raises(ValueError, match="rank 2"):
        ws.run_operator_once(caffe2op.create_operator("Normalize", "x", "y", axis=axis))
    assert_bit_identical(ws.fetch_blob("x"), before)
    assert not ws.has_blob("y")


def test_zero_dimensional_input_has_no_axis():
    with pytest.raises(caffe2op.SchemaError, match="rank 0"):
        caffe2op.normalize(np.array(3.0))


@pytest.mark.parametrize("axis", [1.0, "0", None])
def test_axis_must_be_an_int(axis):
    with pytest.raises(TypeError, match="Normalize: argument 'axis' must be an int"):
        caffe2op.normalize(_weights(), axis=axis)
    with pytest.raises(TypeError):
        caffe2op.create_operator("Normalize", "x", "y", axis=axis)


@pytest.mark.parametrize("x", [np.ones(3, complex), np.array(["a", "b"]), np.array([1, None], dtype=object)])
def test_non_numeric_input_raises_type_error(x):
    with pytest.raises(TypeError, match="Normalize: W must be float16, float32 or float64"):
        caffe2op.normalize(x)


# --- integer and bool input: out of place, float64 result (as scikit-learn) -------------------------


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64, bool])
@pytest.mark.parametrize("axis", [0, -1])
def test_integer_input_gives_a_float64_result(dtype, axis):
    x = np.array([[3, 0, 1], [4, 0, 1]], dtype=dtype)
    before = x.copy()
    y = caffe2op.normalize(x, axis=axis)
    assert y.dtype == np.float64 and y.shape == x.shape
    np.testing.assert_allclose(y, normalize_ref(x.astype(np.float64), axis=axis), rtol=1e-15, atol=0)
    assert_bit_identical(x, before)  # the integer input is left alone
    assert not np.shares_memory(x, y)


def test_integer_list_and_max_norm_mode():
    np.testing.assert_allclose(caffe2op.normalize([[3, 4]]), np.array([[0.6, 0.8]]), rtol=1e-15)
    y = caffe2op.normalize(np.array([[6, 8], [0, 1]]), use_max_norm=True, norm=5.0)
    np.testing.assert_allclose(y, [[3.0, 4.0], [0.0, 1.0]], rtol=1e-15)
    assert y.dtype == np.float64


def test_integer_input_agrees_with_sklearn():
    sklearn_normalize = pytest.importorskip("sklearn.preprocessing").normalize
    x = np.random.default_rng(5).integers(-50, 50, size=(40, 7))
    x[3] = 0
    for axis in (0, 1):
        expected = sklearn_normalize(x, norm="l2", axis=axis)
        assert expected.dtype == np.float64
        assert_allclose_dtype(caffe2op.normalize(x, axis=axis), expected)


def test_integer_input_into_a_float64_out():
    x = np.arange(6).reshape(2, 3)
    out = np.full((2, 3), np.nan)
    assert caffe2op.normalize(x, axis=0, out=out) is out
    np.testing.assert_allclose(out, normalize_ref(x, axis=0), rtol=1e-15)


@pytest.mark.parametrize("make_out", [lambda x: x, lambda x: np.zeros(x.shape, np.float32), lambda x: x.copy()])
def test_integer_input_cannot_be_normalised_in_place_or_into_a_non_float64_out(make_out):
    x = np.arange(6).reshape(2, 3)
    out = make_out(x)
    before, out_before = x.copy(), out.copy()
    with pytest.raises(TypeError, match="Normalize: W holds int64 data, which is normalised out of place into float64"):
        caffe2op.normalize(x, out=out)
    assert_bit_identical(x, before)
    assert_bit_identical(out, out_before)


@pytest.mark.parametrize("norm", ["l1", "max", "L2", "l2"])
def test_sklearn_norm_names_are_explained(norm):
    x = _weights()
    before = x.copy()
    with pytest.raises(caffe2op.SchemaTypeError, match="norm is the target L2 length of every vector") as info:
        caffe2op.normalize(x, norm=norm)
    message = str(info.value)
    assert f"got {norm!r}" in message and "scikit-learn" in message
    assert ("omit norm" in message) == (norm.lower() == "l2")
    assert isinstance(info.value, TypeError)
    assert_bit_identical(x, before)


def test_operator_rejects_integer_blob_and_leaves_it_alone():
    ws = caffe2op.Workspace()
    ws.feed_blob("x", np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match="Normalize: X must be float16, float32 or float64, got int64"):
        ws.run_operator_once(caffe2op.create_operator("Normalize", "x", "y"))
    np.testing.assert_array_equal(ws.fetch_blob("x"), np.arange(6).reshape(2, 3))


@pytest.mark.parametrize(
    "out, error, match",
    [
        (np.zeros((4, 3), np.float64), TypeError, "out must have dtype float32"),
        (np.zeros((3, 4), np.float32), ValueError, r"out must have shape \(4, 3\)"),
        (np.zeros(12, np.float32), ValueError, "out must have shape"),
        ([[0.0] * 3] * 4, TypeError, "out must be a numpy.ndarray"),
    ],
)
def test_mismatched_out(out, error, match):
    x = _weights()
    before = x.copy()
    out_before = np.array(out, copy=True)
    with pytest.raises(error, match=f"Normalize: {match}"):
        caffe2op.normalize(x, out=out)
    assert_bit_identical(x, before)
    assert_bit_identical(np.asarray(out), out_before)


def test_read_only_out_or_in_place_input():
    x = _weights()
    x.flags.writeable = False
    with pytest.raises(ValueError, match="Normalize: out is read-only"):
        caffe2op.normalize(x, out=x)
    np.testing.assert_allclose(caffe2op.normalize(x), normalize_ref(x), rtol=1e-5)


def test_sparse_out_for_dense_input():
    sp = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="out must be a numpy.ndarray for dense input"):
        caffe2op.normalize(_weights(), out=sp.csr_matrix(_weights()))


@pytest.mark.parametrize("kwargs", [dict(norm=-1.0), dict(norm=float("nan")), dict(norm=float("inf"))])
def test_bad_norm(kwargs):
    with pytest.raises(ValueError, match="Normalize: argument 'norm' must be finite and >= 0"):
        caffe2op.normalize(_weights(), **kwargs)


@pytest.mark.parametrize("kwargs", [dict(norm="1"), dict(use_max_norm="yes"), dict(use_max_norm=2)])
def test_bad_argument_types(kwargs):
    with pytest.raises(TypeError, match="Normalize: argument"):
        caffe2op.normalize(_weights(), **kwargs)


def test_operator_arguments_are_checked_by_the_schema():
    with pytest.raises(caffe2op.SchemaError, match="unknown argument 'norm'"):
        caffe2op.create_operator("Normalize", "x", "y", norm=2.0)
    with pytest.raises(caffe2op.SchemaError, match="expects 1 input, got 2"):
        caffe2op.create_operator("Normalize", ["x", "z"], "y")
    with pytest.raises(caffe2op.SchemaError, match="does not allow"):
        caffe2op.create_operator("NormalizeGradient", ["x", "dy"], "x")


@pytest.mark.parametrize(
    "dy, error, match",
    [
        (np.ones((4, 3), np.float64), TypeError, "dY must have the dtype of X"),
        (np.ones((3, 4), np.float32), ValueError, "dY must have the shape of X"),
    ],
)
def test_gradient_bad_inputs(dy, error, match):
    ws = caffe2op.Workspace()
    ws.feed_blob("x", _weights())
    ws.feed_blob("dy", dy)
    with pytest.raises(error, match=f"NormalizeGradient: {match}"):
        ws.run_operator_once(caffe2op.create_operator("NormalizeGradient", ["x", "dy"], "dx"))
    assert not ws.has_blob("dx")


def test_docstring_examples_run():
    import doctest
    import importlib
    import pkgutil

    import caffe2op.ops.normalize as package

    pytest.importorskip("scipy.sparse")
    attempted = 0
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted >= 5


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_ndarray_subclasses_are_written_through_plain_views(tmp_path):
    m = np.matrix([[3.0, 1.0], [4.0, 0.0]])
    np.testing.assert_allclose(caffe2op.normalize(m, axis=0), [[0.6, 1.0], [0.8, 0.0]])
    assert caffe2op.normalize(m, axis=0, out=m) is m
    np.testing.assert_allclose(m, [[0.6, 1.0], [0.8, 0.0]])
    mapped = np.lib.format.open_memmap(tmp_path / "w.npy", mode="w+", dtype=np.float32, shape=(2, 3))
    mapped[:] = [[3.0, 0.0, 1.0], [4.0, 0.0, 0.0]]
    assert caffe2op.normalize(mapped, axis=0, out=mapped) is mapped
    np.testing.assert_allclose(np.load(tmp_path / "w.npy"), [[0.6, 0.0, 1.0], [0.8, 0.0, 0.0]])
