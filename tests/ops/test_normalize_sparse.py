# SPDX-License-Identifier: BSD-3-Clause
"""Normalize on scipy.sparse CSR/CSC/COO and SparseNormalize on CSR storage: values, structure, memory, bad input."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import caffe2op
from tests._helpers import assert_allclose_dtype, assert_bit_identical
from tests._reference import normalize_ref, sparse_normalize_ref

sp = pytest.importorskip("scipy.sparse")

CLASSES = {
    ("csr", "matrix"): sp.csr_matrix,
    ("csr", "array"): sp.csr_array,
    ("csc", "matrix"): sp.csc_matrix,
    ("csc", "array"): sp.csc_array,
    ("coo", "matrix"): sp.coo_matrix,
    ("coo", "array"): sp.coo_array,
}


def _compressed(cls, data, indices, indptr, shape, index_dtype=np.int32):
    """A CSR/CSC object with exactly these arrays (scipy's constructor may narrow index dtypes)."""
    matrix = cls((data, indices.astype(index_dtype), indptr.astype(index_dtype)), shape=shape)
    matrix.indices = indices.astype(index_dtype)
    matrix.indptr = indptr.astype(index_dtype)
    return matrix


@st.composite
def sparse_cases(draw, formats=("csr", "csc"), dtypes=(np.float32, np.float64)):
    """A CSR/CSC matrix or array with explicit zeros, empty rows and columns, int32 or int64 indices."""
    fmt = draw(st.sampled_from(formats))
    kind = draw(st.sampled_from(["matrix", "array"]))
    dtype = draw(st.sampled_from(dtypes))
    shape = (draw(st.integers(0, 9)), draw(st.integers(0, 9)))
    stored = draw(hnp.arrays(bool, shape, elements=st.booleans()))
    elements = st.floats(-8, 8, allow_nan=False, allow_infinity=False, width=16)
    values = draw(hnp.arrays(np.float64, shape, elements=elements | st.just(0.0)))  # 0.0 here: explicit zero
    rows, cols = np.nonzero(stored)
    coo = sp.coo_matrix((values[rows, cols].astype(dtype), (rows, cols)), shape=shape)
    compressed = coo.tocsr() if fmt == "csr" else coo.tocsc()
    index_dtype = draw(st.sampled_from([np.int32, np.int64]))
    matrix = _compressed(CLASSES[fmt, kind], compressed.data, compressed.indices, compressed.indptr, shape, index_dtype)
    axis = draw(st.sampled_from([0, 1, -1, -2]))
    return matrix, axis


def _assert_same_structure(result, w):
    assert type(result) is type(w) and result.format == w.format and result.shape == w.shape
    assert result.dtype == w.dtype and result.nnz == w.nnz
    assert result.indices.dtype == w.indices.dtype and result.indptr.dtype == w.indptr.dtype
    np.testing.assert_array_equal(result.indices, w.indices)
    np.testing.assert_array_equal(result.indptr, w.indptr)


@given(sparse_cases())
def test_matches_dense_reference_and_keeps_structure(case):
    w, axis = case
    before = w.copy()
    result = caffe2op.normalize(w, axis=axis)
    _assert_same_structure(result, w)
    assert not np.shares_memory(result.data, w.data) and not np.shares_memory(result.indices, w.indices)
    assert_allclose_dtype(result.toarray(), normalize_ref(w.toarray(), axis))
    assert_bit_identical(w.data, before.data)  # out of place: the input is untouched


@given(sparse_cases(), st.sampled_from([(2.5, False), (0.0, False), (1.0, True), (2.5, True), (0.0, True)]))
def test_modes_match_dense_reference(case, mode):
    w, axis = case
    norm, use_max_norm = mode
    result = caffe2op.normalize(w, axis=axis, norm=norm, use_max_norm=use_max_norm)
    _assert_same_structure(result, w)
    assert_allclose_dtype(result.toarray(), normalize_ref(w.toarray(), axis, norm, use_max_norm))


@given(sparse_cases())
def test_in_place_and_out_of_identical_structure(case):
    w, axis = case
    expected = caffe2op.normalize(w, axis=axis)
    out = w.copy()
    out.indices, out.indptr = w.indices.copy(), w.indptr.copy()
    out.data[:] = np.nan
    assert caffe2op.normalize(w, axis=axis, out=out) is out
    assert_bit_identical(out.data, expected.data)
    indices, indptr = w.indices, w.indptr
    assert caffe2op.normalize(w, axis=axis, out=w) is w
    assert w.indices is indices and w.indptr is indptr
    assert_bit_identical(w.data, expected.data)


@given(sparse_cases())
def test_agrees_with_dense_normalize(case):
    w, axis = case
    assert_allclose_dtype(caffe2op.normalize(w, axis=axis).toarray(), caffe2op.normalize(w.toarray(), axis=axis))


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("axis", [0, 1])
def test_agrees_with_sklearn(fmt, axis):
    sklearn_normalize = pytest.importorskip("sklearn.preprocessing").normalize
    for dtype in (np.float32, np.float64):
        w = sp.random(60, 40, density=0.1, format=fmt, dtype=dtype, random_state=1)
        w = w.tolil()
        w[:, 7] = 0  # an empty column and an empty row: sklearn leaves them empty too
        w[11, :] = 0
        w = w.asformat(fmt)
        result = caffe2op.normalize(w, axis=axis)
        expected = sklearn_normalize(w, norm="l2", axis=axis)
        assert result.format == fmt  # sklearn returns CSC for CSR along axis 0; we keep the format
        assert_allclose_dtype(result.toarray(), expected.toarray())


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("axis", [0, 1])
def test_explicit_zeros_and_empty_vectors_are_kept(fmt, axis):
    dense = np.array([[3.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    stored = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 1]], bool)  # (1, 2) is an explicit zero; column 1 is empty
    rows, cols = np.nonzero(stored)
    w = sp.coo_matrix((dense[rows, cols], (rows, cols)), shape=(3, 3)).asformat(fmt)
    assert w.nnz == 4
    result = caffe2op.normalize(w, axis=axis)
    _assert_same_structure(result, w)
    assert 0.0 in result.data
    np.testing.assert_allclose(result.toarray(), normalize_ref(dense, axis), rtol=1e-15)
    assert result.getcol(1).nnz == 0


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0), (3, 4)])
def test_empty_matrices(fmt, shape):
    w = sp.csr_matrix(shape, dtype=np.float32).asformat(fmt)
    for axis in (0, 1):
        result = caffe2op.normalize(w, axis=axis)
        _assert_same_structure(result, w)
        assert caffe2op.normalize(w, axis=axis, out=w) is w


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("axis", [0, 1])
def test_single_element_vectors(fmt, axis):
    w = sp.csr_matrix(np.array([[-3.0, 0.0], [0.0, 0.5]])).asformat(fmt)
    np.testing.assert_array_equal(caffe2op.normalize(w, axis=axis).toarray(), [[-1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_duplicate_entries_count_as_their_sum_and_keep_the_structure(fmt, axis, index_dtype):
    # Row/column 0 stores (0, 0) twice (1 + 2 = 3) next to 4; indices unsorted.
    data = np.array([1.0, 4.0, 2.0, 5.0])
    indices = np.array([0, 1, 0, 1])
    indptr = np.array([0, 3, 4])
    w = _compressed(CLASSES[fmt, "matrix"], data, indices, indptr, (2, 2), index_dtype)
    assert not w.has_canonical_format
    summed = w.toarray()
    result = caffe2op.normalize(w, axis=axis)
    _assert_same_structure(result, w)
    np.testing.assert_allclose(result.toarray(), normalize_ref(summed, axis), rtol=1e-15)
    caffe2op.normalize(w, axis=axis, out=w)
    np.testing.assert_allclose(w.toarray(), normalize_ref(summed, axis), rtol=1e-15)


@pytest.mark.parametrize("kind", ["matrix", "array"])
@pytest.mark.parametrize("axis", [0, 1])
def test_coo_is_converted_with_duplicates_summed(kind, axis):
    rows, cols = np.array([0, 0, 1, 2, 0]), np.array([0, 0, 1, 1, 2])
    values = np.array([1.0, 2.0, 0.0, 4.0, 4.0])  # (0, 0) twice; (1, 1) an explicit zero
    w = CLASSES["coo", kind]((values, (rows, cols)), shape=(3, 4))
    before = (w.data.copy(), w.row.copy(), w.col.copy())
    result = caffe2op.normalize(w, axis=axis)
    assert type(result) is type(w) and result.format == "coo"
    assert result.nnz == 4  # duplicates summed, explicit zero kept
    np.testing.assert_allclose(result.toarray(), normalize_ref(w.toarray(), axis), rtol=1e-15)
    for a, b in zip(before, (w.data, w.row, w.col), strict=True):
        assert_bit_identical(a, b)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("axis", [0, 1])
def test_float16_data(fmt, axis):
    # scipy builds float16 CSR/CSC from its arrays but cannot convert them: compare stored values directly.
    dense = np.array([[3.0, 0.0, 0.1], [4.0, 60000.0, 0.0]], dtype=np.float16)
    template = sp.csr_matrix(dense.astype(np.float32)).asformat(fmt)
    w = _compressed(CLASSES[fmt, "array"], template.data.astype(np.float16), template.indices, template.indptr, (2, 3))
    result = caffe2op.normalize(w, axis=axis)
    assert result.dtype == np.float16 and result.format == fmt
    _assert_same_structure(result, w)
    expected = caffe2op.normalize(dense, axis=axis)
    expected = sp.csr_matrix(expected.astype(np.float32)).asformat(fmt).data.astype(np.float16)
    assert_bit_identical(result.data, expected)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_count_does_not_change_results(fmt, axis, dtype):
    # 120k stored values over 300 columns: the cross direction uses several chunks of partial sums.
    w = sp.random(2000, 300, density=0.2, format=fmt, dtype=dtype, random_state=2)
    results = []
    for threads in (1, 2, 3):
        caffe2op.set_num_threads(threads)
        results.append(caffe2op.normalize(w, axis=axis).data)
    assert_bit_identical(results[1], results[0])
    assert_bit_identical(results[2], results[0])


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_new_output_has_the_bits_of_the_checked_path(fmt, axis, dtype, index_dtype):
    # A new output is made by the copying kernels, out= by the checked ones: same sums in the same order.
    # 120k stored values: the cross direction uses several chunks of partial sums.
    base = sp.random(2000, 300, density=0.2, format=fmt, dtype=np.float32, random_state=3)
    values = (base.data * 4).astype(dtype)

    def matrix(data):  # scipy cannot copy or densify float16 matrices: build each from the arrays
        return _compressed(type(base), data, base.indices, base.indptr, base.shape, index_dtype)

    w = matrix(values.copy())
    fresh = caffe2op.normalize(w, axis=axis)
    _assert_same_structure(fresh, w)
    assert not np.shares_memory(fresh.indices, w.indices) and not np.shares_memory(fresh.indptr, w.indptr)
    out = matrix(np.full_like(values, np.nan))
    caffe2op.normalize(w, axis=axis, out=out)
    assert_bit_identical(fresh.data, out.data)
    assert_bit_identical(w.data, values)
    wide = matrix(values.astype(np.float64)).toarray()
    got = matrix(fresh.data.astype(np.float64)).toarray()
    assert_allclose_dtype(got.astype(dtype), normalize_ref(wide, axis).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("n_rows", [1500, 2600])
def test_paired_chunks_keep_the_bits_of_the_checked_path(dtype, n_rows):
    # 300k / 520k stored values over 200 columns: 9 / 15 chunks of partial sums (an odd count),
    # which the copying kernel walks two at a time under some thread counts and one at a time
    # under others; the checked kernel (out=) always one at a time.
    base = sp.random(n_rows, 200, density=1.0, format="csr", dtype=np.float32, random_state=4)
    values = (base.data * 4).astype(dtype)

    def matrix(data):
        return _compressed(type(base), data, base.indices, base.indptr, base.shape, np.int32)

    out = matrix(np.full_like(values, np.nan))
    caffe2op.normalize(matrix(values.copy()), axis=0, out=out)
    for threads in (1, 2, 3, 5):
        caffe2op.set_num_threads(threads)
        assert_bit_identical(caffe2op.normalize(matrix(values.copy()), axis=0).data, out.data)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize(
    "indices, indptr, error, match",
    [
        ([0, 7, 0], [0, 2, 3], ValueError, r"W.indices\[1\] = 7 is out of range"),
        ([0, 2, -1], [0, 2, 3], ValueError, r"W.indices\[2\] = -1 is out of range"),
        ([0, 2, 0], [0, 3, 2], ValueError, "W.indptr is not a valid index pointer"),
        ([0, 2, 0], [0, 2, 5], ValueError, "W.indptr is not a valid index pointer"),
        ([0, 2, 0], [1, 2, 3], ValueError, "W.indptr is not a valid index pointer"),
    ],
)
def test_corrupt_structure_is_rejected_out_of_place(axis, indices, indptr, error, match):
    for index_dtype in (np.int32, np.int64):
        w = _csr()
        w.indices = np.array(indices, index_dtype)
        w.indptr = np.array(indptr, index_dtype)
        before = w.data.copy(), w.indices.copy(), w.indptr.copy()
        with pytest.raises(error, match=f"Normalize: {match}"):
            caffe2op.normalize(w, axis=axis)
        for kept, was in zip((w.data, w.indices, w.indptr), before, strict=True):
            assert_bit_identical(kept, was)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("axis", [0, 1])
def test_unsorted_and_duplicate_indices_out_of_place(fmt, axis):
    # Not canonical: the copying kernels report it and the checked path sums the duplicates.
    cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
    data = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], np.float32)
    for indices in ([2, 0, 1, 0, 1, 2], [0, 0, 1, 0, 2, 2]):
        w = _compressed(cls, data, np.array(indices), np.array([0, 3, 3, 6]), (3, 3))
        before = w.copy()
        result = caffe2op.normalize(w, axis=axis)
        _assert_same_structure(result, w)
        assert_allclose_dtype(result.toarray(), normalize_ref(w.toarray(), axis))
        assert_bit_identical(w.indices, before.indices)
        assert_bit_identical(w.data, before.data)


def test_copying_kernels_report_faults_and_copy_the_indices():
    from caffe2op._cpu import normalize_sparse as kernels

    src = np.array([3.0, 4.0, 1.0, 2.0], np.float32)
    indices = np.array([0, 2, 1, 1], np.int32)  # the second segment holds a duplicate entry
    indptr = np.array([0, 2, 4], np.int32)
    own = np.full(4, -9, np.int32)
    dst = np.full(4, np.nan, np.float32)
    assert kernels.copy_segments_normalize(indptr, indices, own, 3, src, dst, False, 1.0, False, 1) == 1
    np.testing.assert_array_equal(own, indices)
    assert np.isnan(dst).all()  # a failed block of segments is not written
    indices[3] = 2
    assert kernels.copy_segments_normalize(indptr, indices, own, 3, src, dst, False, 1.0, False, 1) == 0
    np.testing.assert_allclose(dst, [0.6, 0.8, 5**-0.5, 2 * 5**-0.5], rtol=1e-6)
    assert kernels.copy_segments_normalize(indptr, indices, own, 2, src, dst, False, 1.0, False, 1) == 1  # 2 >= 2
    many = np.repeat(np.arange(600, dtype=np.int32), 2)  # 600 segments of two: several blocks, one bad
    many[1::2] += 1
    many[2 * 599 + 1] = 599  # a duplicate in the last segment
    own_many = np.empty_like(many)
    ones, out = np.ones(many.size, np.float32), np.full(many.size, np.nan, np.float32)
    starts = np.arange(0, many.size + 1, 2, dtype=np.int32)
    assert kernels.copy_segments_normalize(starts, many, own_many, 601, ones, out, False, 1.0, False, 2) == 1
    np.testing.assert_allclose(out[:512], 2**-0.5, rtol=1e-6)  # the first two blocks of 256 segments
    assert np.isnan(out[-2:]).all()
    assert kernels.copy_segments_normalize(np.array([0, 2, 1], np.int32), indices, own, 3, src, dst, False, 1.0,
                                           False, 1) == 1  # fmt: skip
    partial = np.empty((2, 3), np.float64)
    assert kernels.copy_cross_sums(indptr, indices, own, src, partial, 1) == 0
    np.testing.assert_array_equal(partial, [[9.0, 0.0, 16.0], [0.0, 1.0, 4.0]])
    indices[3] = 1
    assert kernels.copy_cross_sums(indptr, indices, own, src, partial, 1) == 1  # duplicate
    indices[3] = 3
    assert kernels.copy_cross_sums(indptr, indices, own, src, partial, 1) == 1  # out of range
    indices[3] = 2
    assert kernels.copy_cross_sums(np.array([0, 3, 2], np.int32), indices, own, src, partial, 1) > 0  # indptr falls


@settings(max_examples=300)  # cheap examples; the faults to find are rare positions
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=40),
    n_chunks=st.integers(1, 9),
    fault=st.sampled_from(["none", "swap", "duplicate", "across_rows"]),
    where=st.integers(0, 10**6),
    threads=st.sampled_from([1, 2]),
    data=st.data(),
)
def test_copy_cross_sums_finds_exactly_the_non_canonical_structures(lengths, n_chunks, fault, where, threads, data):
    """Faults anywhere, chunk starts on, inside or between segments (empty ones included).

    Canonical means: indices in range and strictly increasing inside every
    segment; a fall from one segment to the next is allowed.  Compared with
    a direct NumPy check, and the sums with ``np.add.at`` when canonical.
    """
    from caffe2op._cpu import normalize_sparse as kernels

    n_minor = 8
    segments = [np.sort(np.array(data.draw(st.permutations(list(range(n_minor)))))[:n]) for n in lengths]
    indices = np.concatenate(segments).astype(np.int32) if sum(lengths) else np.zeros(0, np.int32)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    nnz = indices.size
    if nnz == 0:
        return
    position = where % nnz
    if fault == "swap" and nnz > 1:
        indices[[position, (position + 1) % nnz]] = indices[[(position + 1) % nnz, position]]
    elif fault == "duplicate" and nnz > 1:
        indices[position] = indices[position - 1]
    elif fault == "across_rows":
        indices[position] = (indices[position] + 1) % n_minor
    canonical = all(
        np.all(np.diff(indices[indptr[i] : indptr[i + 1]]) > 0) for i in range(len(lengths))
    )
    src = np.arange(1, nnz + 1, dtype=np.float64)
    own = np.full(nnz, -1, np.int32)
    partial = np.empty((min(n_chunks, nnz), n_minor))
    faults = kernels.copy_cross_sums(indptr, indices, own, src, partial, threads)
    assert (faults == 0) == canonical
    np.testing.assert_array_equal(own, indices)
    if canonical:
        expected = np.zeros(n_minor)
        np.add.at(expected, indices, src**2)
        np.testing.assert_array_equal(partial.sum(axis=0), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("threads", [1, 2])
def test_apply_scales_streams_large_outputs_at_any_alignment(dtype, index_dtype, threads):
    """Outputs of 2 MiB and more take non-temporal stores from their first 64-byte boundary on.

    Every offset of the output from a cache line (whole elements), a length
    that leaves a tail in every piece, and the products of the plain loop.
    """
    from caffe2op._cpu import normalize_sparse as kernels

    rng = np.random.default_rng(5)
    nnz = (1 << 21) // np.dtype(dtype).itemsize + 37  # over the streaming threshold, not a whole vector
    scales = rng.random(301)
    indices = rng.integers(0, scales.size, nnz).astype(index_dtype)
    src = rng.standard_normal(nnz).astype(dtype)
    expected = src * scales.astype(dtype)[indices]
    buffer = np.empty(nnz + 16, dtype)
    for offset in range(0, 64 // np.dtype(dtype).itemsize, 3):
        dst = buffer[offset : offset + nnz]
        dst[...] = np.nan
        kernels.apply_scales(indices, src, dst, scales, threads)
        assert_bit_identical(dst, expected)


def test_a_matrix_too_large_to_densify_stays_sparse():
    """10^6 x 10^6 at 10^-6 density (the dense form would take 4 TB): peak memory stays near the input's size."""
    script = textwrap.dedent(
        """
        import json, resource, sys
        import numpy as np, scipy.sparse as sp
        import caffe2op

        def peak_kib():
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        def reset_peak():
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                return True
            except OSError:
                return False

        n, nnz = 10**6, 10**6
        rng = np.random.default_rng(0)
        w = sp.coo_matrix(
            (rng.standard_normal(nnz).astype(np.float32), (rng.integers(0, n, nnz), rng.integers(0, n, nnz))),
            shape=(n, n),
        ).tocsr()
        w.sum_duplicates()
        results = {"input_bytes": w.data.nbytes + w.indices.nbytes + w.indptr.nbytes}
        for fmt, matrix in (("csr", w), ("csc", w.tocsc())):
            for axis in (0, 1):
                reset_ok = reset_peak()
                start = peak_kib()
                out = caffe2op.normalize(matrix, axis=axis)
                results[f"{fmt}{axis}"] = (peak_kib() - start) * 1024 if reset_ok else None
                assert out.nnz == matrix.nnz and out.format == fmt
                del out
        print(json.dumps(results))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    results = json.loads(proc.stdout.strip().splitlines()[-1])
    input_bytes = results.pop("input_bytes")
    dense_bytes = 10**12 * 4
    for case, growth in results.items():
        if growth is None:
            pytest.skip("cannot reset the peak RSS on this system")
        # The result (data + copies of indices and indptr) plus one float64 per vector.
        assert growth < 3 * input_bytes + 2 * 8 * 10**6, (case, growth, input_bytes)
        assert growth < dense_bytes / 10**4


def test_scipy_is_not_imported_by_caffe2op():
    code = "import sys, caffe2op; sys.exit(any(m == 'scipy' or m.startswith('scipy.') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- SparseNormalize on CSR storage --------------------------------------------------


@st.composite
def csr_tables(draw):
    """A CSR table (matrix or array), indices with repeats, a norm."""
    w, _ = draw(sparse_cases(formats=("csr",), dtypes=(np.float32, np.float64)))
    n_rows = w.shape[0]
    if n_rows == 0:
        indices = np.zeros(0, np.int64)
    else:
        dtype = draw(st.sampled_from([np.int32, np.int64]))
        indices = draw(hnp.arrays(dtype, draw(st.integers(0, 20)), elements=st.integers(0, n_rows - 1)))
    return w, indices, draw(st.sampled_from([0.0, 0.5, 1.0, 2.5]))


@given(csr_tables(), st.booleans())
def test_sparse_normalize_csr_matches_dense_sparse_normalize(case, use_max_norm):
    w, indices, norm = case
    dense = w.toarray()
    indices_before, indptr_before = w.indices.copy(), w.indptr.copy()
    assert caffe2op.sparse_normalize(w, indices, use_max_norm=use_max_norm, norm=norm) is w
    assert_allclose_dtype(w.toarray(), sparse_normalize_ref(dense, indices, use_max_norm, norm))
    assert_bit_identical(w.indices, indices_before)
    assert_bit_identical(w.indptr, indptr_before)


def test_sparse_normalize_csr_rows_not_selected_are_bit_identical():
    w = sp.random(50, 20, density=0.3, format="csr", random_state=3) * 10
    before = w.copy()
    caffe2op.sparse_normalize(w, [3, 7, 7, 3], use_max_norm=False, norm=1.0)
    for row in range(50):
        if row not in (3, 7):
            assert_bit_identical(w[[row]].data, before[[row]].data)
    np.testing.assert_allclose(np.linalg.norm(w[[3, 7]].toarray(), axis=1), [1.0, 1.0], rtol=1e-12)


def test_sparse_normalize_csr_float16_and_duplicate_entries():
    data = np.array([1.0, 4.0, 2.0, 6.0, 8.0], np.float16)
    w = _compressed(sp.csr_array, data, np.array([0, 1, 0, 0, 1]), np.array([0, 3, 5]), (2, 2))
    assert not w.has_canonical_format
    dense = w.astype(np.float32).toarray().astype(np.float16)  # (0, 0) = 1 + 2
    caffe2op.sparse_normalize(w, [0, 1], norm=1.0)
    assert w.dtype == np.float16 and w.nnz == 5
    assert_allclose_dtype(w.astype(np.float32).toarray().astype(np.float16), sparse_normalize_ref(dense, [0, 1]))


def test_sparse_normalize_csr_bad_input_changes_nothing():
    w = sp.csr_matrix(np.array([[3.0, 4.0], [6.0, 8.0]]))
    before = w.data.copy()
    with pytest.raises(IndexError, match="SparseNormalize: index 2 at position 1 of indices is out of range"):
        caffe2op.sparse_normalize(w, [0, 2])
    with pytest.raises(IndexError, match="index -1"):
        caffe2op.sparse_normalize(w, [-1])
    with pytest.raises(TypeError, match="SparseNormalize: indices must be integers"):
        caffe2op.sparse_normalize(w, [0.0])
    with pytest.raises(ValueError, match="argument 'norm' must be finite and >= 0"):
        caffe2op.sparse_normalize(w, [0], norm=-1.0)
    assert_bit_identical(w.data, before)
    with pytest.raises(TypeError, match="SparseNormalize: a sparse param must be CSR"):
        caffe2op.sparse_normalize(w.tocsc(), [0])
    with pytest.raises(TypeError, match="SparseNormalize: param must be float16, float32 or float64"):
        caffe2op.sparse_normalize(sp.csr_matrix(np.eye(2, dtype=np.int64)), [0])
    w.data.flags.writeable = False
    with pytest.raises(ValueError, match="param.data is read-only"):
        caffe2op.sparse_normalize(w, [0])


# --- bad input: typed errors, nothing modified ----------------------------------------


def _csr():
    return sp.csr_matrix(np.array([[3.0, 0.0, 1.0], [4.0, 0.0, 0.0]], np.float32))


@pytest.mark.parametrize("fmt", ["dia", "lil", "dok", "bsr"])
def test_unsupported_sparse_formats(fmt):
    w = _csr().asformat(fmt)
    with pytest.raises(TypeError, match=f"Normalize: sparse input must be CSR, CSC or COO, got .*'{fmt}'"):
        caffe2op.normalize(w)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, bool])
def test_integer_sparse_data_gives_a_float64_result(fmt, dtype):
    """As scikit-learn: integer (and bool) data are normalised out of place into float64, structure kept."""
    dense = np.array([[3, 0, 1], [4, 0, 0], [0, 0, 2]], dtype=dtype)
    w = sp.csr_matrix(dense).asformat(fmt)
    before = w.copy()
    for axis in (0, 1):
        r = caffe2op.normalize(w, axis=axis)
        assert r.format == fmt and r.dtype == np.float64 and r.nnz == w.nnz
        np.testing.assert_allclose(r.toarray(), normalize_ref(dense.astype(np.float64), axis=axis), rtol=1e-15)
        assert_bit_identical(w.toarray(), before.toarray())


def test_integer_sparse_data_cannot_be_normalised_in_place():
    w = sp.csr_matrix(np.eye(3, dtype=np.int64))
    before = w.copy()
    with pytest.raises(TypeError, match="Normalize: W holds int64 data, which is normalised out of place"):
        caffe2op.normalize(w, out=w)
    assert_bit_identical(w.data, before.data)
    out = sp.csr_matrix(np.eye(3, dtype=np.float64))
    assert caffe2op.normalize(w, out=out) is out  # a float64 out of the same structure is fine
    np.testing.assert_array_equal(out.toarray(), np.eye(3))


@pytest.mark.parametrize("axis", [2, -3])
def test_sparse_axis_out_of_range(axis):
    w = _csr()
    before = w.data.copy()
    with pytest.raises(caffe2op.SchemaError, match=f"axis {axis} is out of range for an input of rank 2"):
        caffe2op.normalize(w, axis=axis, out=w)
    assert_bit_identical(w.data, before)


def _mismatched_outs():
    w = _csr()
    other_structure = w.copy()
    other_structure.indices = np.array([0, 1, 0], other_structure.indices.dtype)  # same indptr, other columns
    more_entries = sp.csr_matrix(np.array([[3.0, 1.0, 1.0], [4.0, 0.0, 0.0]], np.float32))
    return [
        (np.zeros((2, 3), np.float32), TypeError, "out must be a scipy.sparse CSR"),
        (w.tocsc(), TypeError, r"out must have the format of the input \(csr\)"),
        (w.astype(np.float64), TypeError, "out must have dtype float32"),
        (sp.csr_matrix((3, 2), dtype=np.float32), ValueError, r"out must have shape \(2, 3\)"),
        (other_structure, ValueError, "out must have the sparsity structure of the input"),
        (more_entries, ValueError, "out must have the sparsity structure"),
    ]


@pytest.mark.parametrize("index", range(6))
def test_mismatched_sparse_out(index):
    w = _csr()
    out, error, match = _mismatched_outs()[index]
    before = w.data.copy()
    out_before = out.copy() if isinstance(out, np.ndarray) else out.data.copy()
    with pytest.raises(error, match=f"Normalize: {match}"):
        caffe2op.normalize(w, axis=0, out=out)
    assert_bit_identical(w.data, before)
    assert_bit_identical(out if isinstance(out, np.ndarray) else out.data, out_before)


def test_read_only_sparse_data():
    w = _csr()
    w.data.flags.writeable = False
    with pytest.raises(ValueError, match="Normalize: W.data is read-only"):
        caffe2op.normalize(w, out=w)
    out = _csr()
    out.data.flags.writeable = False
    with pytest.raises(ValueError, match="Normalize: out.data is read-only"):
        caffe2op.normalize(_csr(), out=out)


def test_coo_rejects_out():
    w = _csr().tocoo()
    with pytest.raises(ValueError, match="Normalize: out is not supported for COO input"):
        caffe2op.normalize(w, out=w)


def test_one_dimensional_sparse_array():
    with pytest.raises(ValueError, match="Normalize: sparse input must be 2-D"):
        caffe2op.normalize(sp.csr_array(np.array([3.0, 4.0])))


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda w: setattr(w, "indices", np.array([0, 7, 0], np.int32)), r"W.indices\[1\] = 7 is out of range"),
        (lambda w: setattr(w, "indptr", np.array([0, 3, 2], np.int32)), "W.indptr is not a valid index pointer"),
        (lambda w: setattr(w, "indptr", np.array([0, 2, 5], np.int32)), "W.indptr is not a valid index pointer"),
        (lambda w: setattr(w, "indptr", np.array([0, 2], np.int32)), "W.indptr must have 3 entries"),
    ],
)
def test_corrupt_structure_is_rejected_before_any_kernel_runs(mutate, match):
    w = _csr()
    mutate(w)
    before = w.data.copy()
    with pytest.raises(ValueError, match=f"Normalize: {match}"):
        caffe2op.normalize(w, axis=0, out=w)
    assert_bit_identical(w.data, before)


def test_sparse_normalize_csr_runs_on_the_cpu_only():
    w = sp.csr_matrix(np.array([[3.0, 4.0]]))
    caffe2op.sparse_normalize(w, [0], device="cpu")
    np.testing.assert_allclose(w.toarray(), [[0.6, 0.8]])
    with pytest.raises(ValueError, match="SparseNormalize: a scipy.sparse param is normalised on the CPU only"):
        caffe2op.sparse_normalize(w, [0], device=caffe2op.DeviceOption(caffe2op.DeviceType.CUDA, 0))
