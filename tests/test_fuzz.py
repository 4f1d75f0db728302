# SPDX-License-Identifier: BSD-3-Clause
"""Fuzz suite: hostile and unusual inputs thrown at the functional API, the operators and the OpenCL path.

For every drawn input the call must either return the float64 NumPy reference's result (per-dtype
tolerances), or raise a typed error (a TypeError, ValueError, IndexError or KeyError subclass) and leave
every input array bit-identical.  Nothing else is acceptable: no other exception type, no crash, no
partial update.

Size: ``settings.default.max_examples`` times ``_SCALE`` examples per test, from the profile chosen
by ``CAFFE2OP_HYPOTHESIS_PROFILE`` (tests/conftest.py): ``dev``/``ci`` run in seconds, ``thorough``
is the large on-demand run.

Every input is drawn everywhere: extreme values (float64 near 1e±200, whose squares overflow or
underflow), norms beyond the dtype's range, bool axes, object arrays, on the CPU, through operators and
on the OpenCL path.  (Earlier versions left some out, as known bugs; issue 10 fixed them.)
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import caffe2op
from tests._helpers import tolerance

sp = pytest.importorskip("scipy.sparse")

TYPED = (TypeError, ValueError, IndexError, KeyError)
FLOATS = (np.float16, np.float32, np.float64)
HOSTILE_DTYPES = (np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.object_)
EPS = 1e-12
_SCALE = 3
FUZZ = settings(
    max_examples=settings.default.max_examples * _SCALE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    deadline=None,
)

# --- references (float64, with norms that neither overflow nor underflow) -------------------------


def _norms(v, axis):
    """``(amax, scaled_norm)`` per vector: the L2 norm is ``amax * scaled_norm`` (keepdims)."""
    with np.errstate(all="ignore"):
        amax = np.max(np.abs(v), axis=axis, keepdims=True) if v.size else np.zeros(v.shape)
        safe = np.where((amax > 0) & np.isfinite(amax), amax, 1.0)
        scaled = np.sqrt(np.sum((v / safe) ** 2, axis=axis, keepdims=True))
    return safe, scaled


def ref_normalize(x, axis, norm=1.0, use_max_norm=False, additive_eps=False):
    """Normalize (``additive_eps=False``) or SparseNormalize's row rule along ``axis``, in float64."""
    v = np.asarray(x, dtype=np.float64)
    if v.size == 0:
        return v.copy()
    safe, scaled = _norms(v, axis)
    with np.errstate(all="ignore"):
        n = safe * scaled  # may overflow to inf for finite data
        if additive_eps:
            scale = np.where(n == 0, 1.0, norm / (n + EPS))
        else:
            scale = norm / np.where(n < EPS, EPS, n)  # NaN stays NaN
        overflowed = np.isinf(n) & np.isfinite(safe * 0) & np.isfinite(scaled)
        result = np.where(overflowed, v / safe / scaled * norm, v * scale)
        if use_max_norm:
            result = np.where(n <= norm, v, result)
    return result


def ref_sparse_normalize(param, rows, norm, use_max_norm):
    out = np.array(param, dtype=np.float64)
    if out.size == 0:
        return out
    flat = out.reshape(out.shape[0], -1)
    for r in dict.fromkeys(int(i) for i in rows):
        flat[r] = ref_normalize(flat[r : r + 1], 1, norm, use_max_norm, additive_eps=True)[0]
    return out


def assert_matches(actual, expected, dtype, norm=1.0, values_only=False):
    """``actual`` (of ``dtype``, or any dtype with ``values_only``) against the float64 reference."""
    actual = np.asarray(actual)
    assert values_only or actual.dtype == np.dtype(dtype), (actual.dtype, dtype)
    tol = tolerance(dtype)
    expected = np.asarray(expected, dtype=np.float64)
    with np.errstate(over="ignore"):
        rounded = expected.astype(dtype).astype(np.float64)  # what the dtype can hold
    np.testing.assert_allclose(
        actual.astype(np.float64), rounded, rtol=tol["rtol"], atol=tol["atol"] * max(1.0, norm), equal_nan=True
    )


# --- snapshots -------------------------------------------------------------------------------------


def _arrays_of(value):
    if isinstance(value, np.ndarray):
        return [value]
    if sp.issparse(value):
        return [
            a for a in (getattr(value, n, None) for n in ("data", "indices", "indptr", "row", "col")) if a is not None
        ]
    return []


class Snapshot:
    """Bytes of every array reachable from the inputs, to prove a failed call changed nothing."""

    def __init__(self, *values):
        self.saved = [(a, a.dtype, a.shape, a.tobytes() if a.dtype.kind != "O" else list(a.ravel()))
                      for v in values for a in _arrays_of(v)]  # fmt: skip

    def assert_untouched(self):
        for array, dtype, shape, content in self.saved:
            assert array.dtype == dtype and array.shape == shape
            now = array.tobytes() if dtype.kind != "O" else list(array.ravel())
            assert now == content, "a failed call modified its input"


def call_checked(snapshot, function, *args, **kwargs):
    """``(True, result)`` or ``(False, error)`` after checking a raised error is typed and changed nothing."""
    try:
        return True, function(*args, **kwargs)
    except TYPED as error:
        snapshot.assert_untouched()
        return False, error


# --- strategies ------------------------------------------------------------------------------------


def _elements(dtype, extreme):
    width = {np.float16: 16, np.float32: 32, np.float64: 64}[dtype]
    plain = st.floats(-100, 100, width=width)
    special = st.sampled_from([0.0, -0.0, np.nan, np.inf, -np.inf])
    if dtype is np.float64 and extreme:
        special = special | st.sampled_from([1e200, -1e300, 1e-200, 5e-324, 1.7e308])
    return plain | special if extreme else plain


@st.composite
def float_arrays(draw, min_dims=0, max_dims=3, extreme=None):
    dtype = draw(st.sampled_from(FLOATS))
    extreme = draw(st.booleans()) if extreme is None else extreme
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0, max_side=5))
    x = draw(hnp.arrays(dtype, shape, elements=_elements(dtype, extreme)))
    layout = draw(st.sampled_from(["C", "F", "strided", "readonly"]))
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "strided" and x.ndim:
        x = np.repeat(x, 2, axis=0)[::2]
    elif layout == "readonly":
        x.flags.writeable = False
    return x


@st.composite
def hostile_arrays(draw):
    dtype = draw(st.sampled_from(HOSTILE_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=4))
    if dtype is np.object_:
        return np.full(shape, None, dtype=object)
    return np.ones(shape, dtype=dtype)


axes = st.integers(-4, 4) | st.sampled_from([True, 1.0, None, "0", np.int64(0), (0,)])
operator_axes = st.integers(-4, 4) | st.sampled_from([True, 1.0, None, "0", np.int64(0), (0,)])
norms = st.floats(0, 1e3) | st.sampled_from([-1.0, np.nan, np.inf, 1e300, 0, 2, "1", None, 1e5])
use_max_norms = st.booleans() | st.sampled_from([0, 1, 2, "yes", None])


def _valid(axis, ndim):
    return isinstance(axis, (int, np.integer)) and not isinstance(axis, bool) and -ndim <= axis < ndim


def _valid_norm(norm, dtype=np.float64):
    return (
        isinstance(norm, (int, float))
        and not isinstance(norm, bool)
        and np.isfinite(norm)
        and 0 <= norm <= float(np.finfo(dtype).max)
    )


def _valid_flag(flag):
    return isinstance(flag, bool) or (isinstance(flag, int) and flag in (0, 1))


# --- normalize: dense -------------------------------------------------------------------------------


@FUZZ
@given(float_arrays() | hostile_arrays(), axes, norms, use_max_norms, st.sampled_from(["new", "in place", "out"]))
def test_normalize_dense(x, axis, norm, use_max_norm, where):
    before = x.copy()
    out = x if where == "in place" else np.empty_like(x) if where == "out" else None
    snapshot = Snapshot(x)
    ok, result = call_checked(snapshot, caffe2op.normalize, x, axis=axis, norm=norm, use_max_norm=use_max_norm,
                              out=out)  # fmt: skip
    if not ok:
        return
    # Integer and bool data are normalised out of place into float64, as scikit-learn does.
    integer = x.dtype.kind in "biu"
    result_dtype = np.dtype(np.float64) if integer else x.dtype
    assert (x.dtype in map(np.dtype, FLOATS) or (integer and where == "new")) and _valid(axis, x.ndim)
    assert _valid_norm(norm, result_dtype) and _valid_flag(use_max_norm)
    assert where != "in place" or x.flags.writeable
    if out is not None:
        assert result is out
    assert_matches(result, ref_normalize(before, axis, norm, bool(use_max_norm)), result_dtype, norm)
    if where != "in place":
        assert before.tobytes() == x.tobytes()


@FUZZ
@given(float_arrays(min_dims=1), operator_axes)
def test_normalize_gradient_operator(x, axis):
    dy = np.flip(x).copy() if x.size else x.copy()
    ws = caffe2op.Workspace()
    ws.feed_blob("x", x)
    ws.feed_blob("dy", dy)
    snapshot = Snapshot(x, dy)
    op = None
    try:
        op = caffe2op.create_operator("NormalizeGradient", ["x", "dy"], "dx", axis=axis)
    except TYPED:
        return
    ok, _ = call_checked(snapshot, ws.run_operator_once, op)
    if not ok:
        for name, value in (("x", x), ("dy", dy)):
            assert ws.fetch_blob(name).tobytes() == value.tobytes()
        return
    assert _valid(axis, x.ndim)
    v, g = x.astype(np.float64), dy.astype(np.float64)
    with np.errstate(all="ignore"):
        n = np.maximum(np.sqrt(np.sum(v * v, axis=axis, keepdims=True)), EPS)
        expected = g / n - v * np.sum(v * g, axis=axis, keepdims=True) / n**3
        # dX is a difference of two terms: its rounding error scales with them, not with dX.
        terms = np.abs(g / n) + np.abs(v) * np.abs(np.sum(v * g, axis=axis, keepdims=True)) / n**3
    assume(np.all(np.isfinite(expected)) and np.all(terms < 1e4))  # conditioning: not this suite's job
    dx = ws.fetch_blob("dx")
    tol = tolerance(x.dtype)
    np.testing.assert_allclose(dx.astype(np.float64), expected, rtol=tol["rtol"] * 10,
                               atol=tol["atol"] * 10 * max(1.0, float(np.max(terms, initial=0))))  # fmt: skip


# --- normalize and sparse_normalize: scipy.sparse -----------------------------------------------


@st.composite
def compressed_matrices(draw, extreme=None):
    """CSR/CSC with explicit zeros, duplicates, unsorted indices, stale flags or a corrupt structure."""
    fmt = draw(st.sampled_from(["csr", "csc"]))
    dtype = draw(st.sampled_from(FLOATS))
    shape = (draw(st.integers(0, 6)), draw(st.integers(0, 6)))
    n_major, n_minor = shape if fmt == "csr" else shape[::-1]
    counts = draw(st.lists(st.integers(0, 4), min_size=n_major, max_size=n_major))
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nnz = int(indptr[-1])
    if n_minor == 0:
        nnz, indptr = 0, np.zeros(n_major + 1, np.int64)
    indices = np.array(draw(st.lists(st.integers(0, max(n_minor - 1, 0)), min_size=nnz, max_size=nnz)), np.int64)
    if draw(st.booleans()):  # canonical: sorted, without duplicates, within each segment
        segments = [np.unique(indices[indptr[i] : indptr[i + 1]]) for i in range(n_major)]
        indptr = np.concatenate([[0], np.cumsum([len(s) for s in segments])]).astype(np.int64)
        indices = np.concatenate(segments + [np.empty(0, np.int64)]).astype(np.int64)
    extreme = draw(st.booleans()) if extreme is None else extreme
    data = draw(hnp.arrays(dtype, indices.shape[0], elements=_elements(dtype, extreme)))
    corruption = draw(st.sampled_from(["none"] * 6 + ["index", "negative", "indptr", "short data", "uint64"]))
    if corruption in ("index", "negative", "short data") and not indices.size or corruption == "indptr" and not n_major:
        corruption = "none"  # nothing to corrupt
    if corruption == "index" and indices.size:
        indices[draw(st.integers(0, indices.size - 1))] = n_minor + draw(st.integers(0, 2**31 - n_minor - 1))
    elif corruption == "negative" and indices.size:
        indices[draw(st.integers(0, indices.size - 1))] = -draw(st.integers(1, 2**31))
    elif corruption == "indptr" and n_major:
        k = draw(st.integers(1, n_major))  # made to decrease, or to run past the indices: never valid
        indptr[k] = draw(
            st.sampled_from([indptr[k - 1] - 1 - draw(st.integers(0, 5)), nnz + 1 + draw(st.integers(0, 2**40))])
        )
    index_dtype = draw(st.sampled_from([np.int32, np.int64]))
    cls = {("csr", 0): sp.csr_matrix, ("csr", 1): sp.csr_array, ("csc", 0): sp.csc_matrix, ("csc", 1): sp.csc_array}
    matrix = cls[fmt, draw(st.integers(0, 1))]((np.zeros(0), np.zeros(0, np.int32), np.zeros(n_major + 1, np.int32)),
                                                shape=shape)  # fmt: skip
    matrix.data = data if corruption != "short data" else data[: max(len(data) - 1, 0)]
    matrix.indices = indices.astype(index_dtype) if corruption != "uint64" else indices.astype(np.uint64)
    matrix.indptr = indptr.astype(index_dtype if -(2**31) <= indptr.min() and indptr.max() < 2**31 else np.int64)
    if draw(st.booleans()):
        matrix.has_canonical_format = draw(st.booleans())  # possibly stale
    return matrix, corruption


def _on_stored(matrix, expected):
    """``expected`` where ``matrix`` stores an entry, 0 elsewhere: a sparse result never fills a gap (even
    where the dense reference gives NaN, as 0 * NaN)."""
    stored = _dense_of(_with_data(matrix, np.ones(matrix.indptr[-1]))) > 0
    return np.where(stored, expected, 0.0)


def _with_data(matrix, data):
    copy = _copy_of(matrix)
    copy.data = data
    return copy


def _copy_of(matrix):
    """A copy of a CSR/CSC matrix of any float dtype (scipy's copy() refuses float16)."""
    copy = type(matrix)(
        (np.zeros(0), np.zeros(0, np.int32), np.zeros(len(matrix.indptr), np.int32)), shape=matrix.shape
    )
    copy.data, copy.indices, copy.indptr = matrix.data.copy(), matrix.indices.copy(), matrix.indptr.copy()
    return copy


def _dense_of(matrix):
    """float64 dense array (duplicates summed) of a valid CSR/CSC matrix of any float dtype."""
    n_major = len(matrix.indptr) - 1
    major = np.repeat(np.arange(n_major), np.diff(matrix.indptr))
    minor = matrix.indices[: matrix.indptr[-1]].astype(np.int64)
    rows, cols = (major, minor) if matrix.format == "csr" else (minor, major)
    dense = np.zeros(matrix.shape)
    np.add.at(dense, (rows, cols), matrix.data[: matrix.indptr[-1]].astype(np.float64))
    return dense


@FUZZ
@given(compressed_matrices(), axes, norms, use_max_norms, st.sampled_from(["new", "in place", "out"]))
def test_normalize_sparse(case, axis, norm, use_max_norm, where):
    w, corruption = case
    out = w if where == "in place" else _copy_of(w) if where == "out" and corruption == "none" else None
    snapshot = Snapshot(w)
    dense = _dense_of(w) if corruption == "none" else None
    ok, result = call_checked(snapshot, caffe2op.normalize, w, axis=axis, norm=norm, use_max_norm=use_max_norm,
                              out=out)  # fmt: skip
    if not ok:
        return
    assert corruption == "none" and _valid(axis, 2) and _valid_norm(norm, w.dtype) and _valid_flag(use_max_norm)
    # Duplicates: every stored part is scaled by its vector's scale, so the summed result is normalised.
    expected = _on_stored(w, ref_normalize(dense, axis, norm, bool(use_max_norm)))
    assert_matches(_dense_of(result), expected, w.dtype, norm, values_only=True)
    assert result.dtype == w.dtype


@FUZZ
@given(compressed_matrices(), st.lists(st.integers(-3, 8), max_size=6) | st.sampled_from([[2**64 - 1], [1.5], "x"]),
       norms, use_max_norms)  # fmt: skip
def test_sparse_normalize_csr(case, rows, norm, use_max_norm):
    w, corruption = case
    assume(w.format == "csr")
    dense = _dense_of(w) if corruption == "none" else None
    snapshot = Snapshot(w)
    index = np.array(rows, dtype=np.uint64) if rows == [2**64 - 1] else rows
    ok, result = call_checked(snapshot, caffe2op.sparse_normalize, w, index, norm=norm, use_max_norm=use_max_norm)
    if not ok:
        return
    assert result is w and corruption == "none" and _valid_norm(norm, w.dtype) and _valid_flag(use_max_norm)
    assert all(0 <= r < w.shape[0] for r in rows)
    expected = _on_stored(w, ref_sparse_normalize(dense, rows, norm, bool(use_max_norm)))
    assert_matches(_dense_of(w), expected, w.dtype, norm, values_only=True)


# --- sparse_normalize on dense tables, stop_gradient, zero_gradient -------------------------------


@FUZZ
@given(float_arrays(min_dims=1) | hostile_arrays(),
       st.lists(st.integers(-3, 8), max_size=6)
       | st.sampled_from([[[0, 1], [2]], [True], [0.0], np.array([1], np.uint64)]),
       norms, use_max_norms)  # fmt: skip
def test_sparse_normalize_dense_table(param, rows, norm, use_max_norm):
    before = param.copy()
    snapshot = Snapshot(param, rows if isinstance(rows, np.ndarray) else None)
    ok, result = call_checked(snapshot, caffe2op.sparse_normalize, param, rows, norm=norm, use_max_norm=use_max_norm)
    if not ok:
        return
    assert result is param and param.dtype in map(np.dtype, FLOATS) and param.ndim >= 1
    assert _valid_norm(norm, param.dtype) and _valid_flag(use_max_norm)
    flat = [int(i) for i in np.asarray(rows).reshape(-1)]
    assert all(0 <= r < len(param) for r in flat)
    assert_matches(param, ref_sparse_normalize(before, flat, norm, bool(use_max_norm)), param.dtype, norm)


@FUZZ
@given(float_arrays() | hostile_arrays(), st.sampled_from(["new", "in place", "out", "wrong out"]))
def test_stop_and_zero_gradient(x, where):
    before = x.copy()
    out = (
        x
        if where == "in place"
        else np.empty_like(x)
        if where == "out"
        else np.empty(3)
        if where == "wrong out"
        else None
    )
    snapshot = Snapshot(x)
    ok, result = call_checked(snapshot, caffe2op.stop_gradient, x, out)
    if ok:
        assert result.dtype == x.dtype and result.shape == x.shape
        if x.dtype != object:
            assert result.tobytes() == before.tobytes()
        if where == "new":
            assert result is not x and not np.shares_memory(result, x)
    ok, result = call_checked(snapshot, caffe2op.zero_gradient, x)
    snapshot.assert_untouched()


# --- operators through a workspace -----------------------------------------------------------------


@FUZZ
@given(st.sampled_from(["Normalize", "StopGradient", "ZeroGradient", "SparseNormalize", "Float16SparseNormalize"]),
       float_arrays(min_dims=1) | hostile_arrays(), operator_axes, norms, use_max_norms,
       st.lists(st.integers(-2, 6), max_size=4), st.booleans())  # fmt: skip
def test_operators_in_a_workspace(op_type, x, axis, norm, use_max_norm, rows, in_place):
    ws = caffe2op.Workspace()
    index = np.array(rows, dtype=np.int64)
    snapshot = Snapshot(x, index)
    ok, _ = call_checked(snapshot, ws.feed_blob, "x", x)
    if not ok:
        return
    ws.feed_blob("i", index)
    args = {}
    if op_type == "Normalize":
        args = dict(axis=axis)
    elif "SparseNormalize" in op_type:
        args = dict(norm=norm, use_max_norm=use_max_norm)
    inputs = ["x", "i"] if "SparseNormalize" in op_type else ["x"]
    outputs = [] if op_type == "ZeroGradient" else ["x" if in_place or "SparseNormalize" in op_type else "y"]
    try:
        op = caffe2op.create_operator(op_type, inputs, outputs, **args)
    except TYPED:
        return
    ok, _ = call_checked(snapshot, ws.run_operator_once, op)
    if not ok:
        fetched = ws.fetch_blob("x")
        assert fetched.dtype == x.dtype and fetched.shape == x.shape
        if x.dtype != object:
            assert fetched.tobytes() == snapshot.saved[0][3]
        return
    assert op_type in ("StopGradient", "ZeroGradient") or x.dtype in map(np.dtype, FLOATS)
    before = np.frombuffer(snapshot.saved[0][3], dtype=x.dtype).reshape(x.shape)
    if op_type == "Normalize":
        assert _valid(axis, x.ndim)
        assert_matches(ws.fetch_blob(outputs[0]), ref_normalize(before, axis), x.dtype)
    elif op_type == "StopGradient":
        assert ws.fetch_blob(outputs[0]).tobytes() == before.tobytes()
    elif "SparseNormalize" in op_type:
        assert _valid_norm(norm, x.dtype) and _valid_flag(use_max_norm)
        assert all(0 <= r < len(x) for r in rows)
        expected = ref_sparse_normalize(before, rows, norm, bool(use_max_norm))
        assert_matches(ws.fetch_blob("x"), expected, x.dtype, norm)


# --- the OpenCL path ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def opencl_backend(opencl_device):
    from caffe2op.opencl import backend_for

    return opencl_device, backend_for(opencl_device)


@FUZZ
@given(data=st.data())
def test_opencl_path(opencl_backend, data):
    option, backend = opencl_backend
    kinds = ["normalize host", "normalize device", "normalize sparse host", "sparse_normalize host",
             "sparse_normalize device", "stop_gradient"]  # fmt: skip
    kind = data.draw(st.sampled_from(kinds))
    norm, use_max_norm = data.draw(norms), data.draw(use_max_norms)
    if kind == "normalize sparse host":
        w, corruption = data.draw(compressed_matrices())
        axis = data.draw(axes)
        snapshot = Snapshot(w)
        dense = _dense_of(w) if corruption == "none" else None
        ok, result = call_checked(snapshot, caffe2op.normalize, w, axis=axis, norm=norm, use_max_norm=use_max_norm,
                                  device=option)  # fmt: skip
        if ok:
            assert corruption == "none" and _valid(axis, 2) and _valid_norm(norm, w.dtype)
            expected = _on_stored(w, ref_normalize(dense, axis, norm, bool(use_max_norm)))
            assert_matches(_dense_of(result), expected, w.dtype, norm, values_only=True)
        return
    x = data.draw(float_arrays(min_dims=1) | hostile_arrays())
    before = x.copy()
    on_device = kind.endswith("device")
    if on_device:
        assume(x.dtype in map(np.dtype, FLOATS))
        target = backend.from_host(np.ascontiguousarray(x))
    snapshot = Snapshot(x)
    if kind.startswith("normalize"):
        axis = data.draw(axes)
        args = dict(axis=axis, norm=norm, use_max_norm=use_max_norm)
        if on_device:
            ok, result = call_checked(snapshot, caffe2op.normalize, target, **args)
        else:
            ok, result = call_checked(snapshot, caffe2op.normalize, x, device=option, **args)
        if not on_device:
            assert x.tobytes() == before.tobytes()
        if ok:
            result_dtype = np.dtype(np.float64) if x.dtype.kind in "biu" else x.dtype  # integers: a float64 result
            assert _valid(axis, x.ndim) and _valid_norm(norm, result_dtype)
            result = result.get() if on_device else result
            assert_matches(result, ref_normalize(before, axis, norm, bool(use_max_norm)), result_dtype, norm)
        elif on_device:
            assert target.get().tobytes() == np.ascontiguousarray(before).tobytes()
    elif kind.startswith("sparse_normalize"):
        rows = data.draw(st.lists(st.integers(-2, 6), max_size=4))
        if on_device:
            ok, result = call_checked(snapshot, caffe2op.sparse_normalize, target, rows, norm=norm,
                                      use_max_norm=use_max_norm)  # fmt: skip
        else:
            ok, result = call_checked(snapshot, caffe2op.sparse_normalize, x, rows, norm=norm,
                                      use_max_norm=use_max_norm, device=option)  # fmt: skip
        if ok:
            assert _valid_norm(norm, x.dtype) and all(0 <= r < len(x) for r in rows)
            got = target.get() if on_device else x
            assert_matches(got, ref_sparse_normalize(before, rows, norm, bool(use_max_norm)), x.dtype, norm)
        elif on_device:
            assert target.get().tobytes() == np.ascontiguousarray(before).tobytes()
    else:
        ok, result = call_checked(snapshot, caffe2op.stop_gradient, x, device=option)
        if ok:
            assert result.tobytes() == before.tobytes() or x.dtype == object
