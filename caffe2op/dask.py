# SPDX-License-Identifier: BSD-3-Clause
"""SparseNormalize and Normalize on Dask arrays and Zarr tables larger than one machine.

A thin layer over the public kernels :func:`caffe2op.sparse_normalize` and
:func:`caffe2op.normalize`: the client routes indices to the row chunks that
own them (``numpy.searchsorted`` on the chunk boundaries) and de-duplicates
them per chunk; each chunk is then processed by one Dask task that runs the
CPU kernel on it, on whatever scheduler is active (a ``distributed`` cluster,
or Dask's local threads).  Vectors that cross chunks (``normalize`` along the
chunked axis) get their norms from a tree reduction of per-chunk partial sums.

Needs the optional extra ``dask`` (``pip install "caffe2op[dask]"``: Dask's
arrays, ``distributed`` and Zarr); ``import caffe2op`` never imports it.

Threads: every task runs the kernels with ``kernel_threads`` threads (default
1), whatever :func:`caffe2op.set_num_threads` says in that process, so that
``workers x threads per worker x kernel_threads`` stays within the cores of
each machine.  Raise it only for workers with fewer Dask threads than cores.
"""

import math
import numbers
import warnings

import dask
import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph

from . import _config
from .ops.normalize import normalize as _normalize
from .ops.sparse_normalize import sparse_normalize as _sparse_normalize

__all__ = ["normalize", "sparse_normalize", "sparse_normalize_zarr"]

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


# --- validation (the kernels' own rules, run on empty data) ---------------------------------------


def _check_kernel_threads(func, kernel_threads):
    if isinstance(kernel_threads, bool) or not isinstance(kernel_threads, numbers.Integral):
        raise TypeError(f"{func}: kernel_threads must be an int, got {type(kernel_threads).__name__}")
    if kernel_threads < 1:
        raise ValueError(f"{func}: kernel_threads must be >= 1, got {kernel_threads}")
    return int(kernel_threads)


def _reraise(func, err):
    """The kernel's typed error, with this function's name in front of the operator's."""
    kind = IndexError if isinstance(err, IndexError) else TypeError if isinstance(err, TypeError) else ValueError
    raise kind(f"{func}: {err}") from err


def _check_sparse_normalize(func, dtype, shape, norm, use_max_norm):
    """Dtype, rank, ``norm`` and ``use_max_norm`` checked by the kernel itself on an empty table."""
    if len(shape) == 0:
        raise ValueError(f"{func}: the table must have at least 1 dimension (rows), got a 0-d array")
    try:
        _sparse_normalize(np.empty((0, 0), dtype), np.empty(0, np.int64), norm=norm, use_max_norm=use_max_norm)
    except (TypeError, ValueError) as err:
        _reraise(func, err)


def _host_indices(func, indices, n_rows):
    """``indices`` flattened to int64 and checked against ``n_rows``; IndexError names the first bad one."""
    array = np.asarray(indices)
    if array.dtype.kind in "iu" and array.size:
        low, high = array.min(), array.max()
        if low >= 0 and high < n_rows:
            return array.reshape(-1).astype(np.int64, copy=False)
    elif array.dtype.kind in "iu" or (array.size == 0 and array.dtype == np.float64):  # [] is float64
        return array.reshape(-1).astype(np.int64)
    # Something is wrong: the kernel's own check on a zero-width table (no memory) says what.
    try:
        _sparse_normalize(np.empty((n_rows, 0), np.float32), indices)
    except (TypeError, ValueError, IndexError) as err:
        _reraise(func, err)
    return array.reshape(-1).astype(np.int64)


# --- routing -------------------------------------------------------------------------------------


def _row_starts(row_chunks):
    """First row of each chunk, and the number of rows, from Dask's chunk sizes."""
    starts = np.zeros(len(row_chunks) + 1, np.int64)
    np.cumsum(row_chunks, out=starts[1:])
    return starts


def route(indices, starts):
    """Distinct rows of each chunk, local to the chunk: ``{chunk: sorted int64 array}`` (touched chunks only).

    ``indices`` are int64 and in range; ``starts`` are the chunks' first rows
    followed by the row count.
    """
    rows = np.unique(indices)
    cuts = np.searchsorted(rows, starts)
    return {
        chunk: rows[cuts[chunk] : cuts[chunk + 1]] - starts[chunk] for chunk in np.flatnonzero(np.diff(cuts)).tolist()
    }


# --- tasks (run on the workers) ------------------------------------------------------------------


def _normalized_copy(block, rows, use_max_norm, norm, kernel_threads):
    """A copy of ``block`` with ``rows`` normalised: the input chunk may be shared (persisted, or a view)."""
    out = np.array(block, copy=True, order="C")
    with _config.thread_limit(kernel_threads):
        _sparse_normalize(out, rows, use_max_norm=use_max_norm, norm=norm)
    return out


def _routed_block(block, routes, chunk, use_max_norm, norm, kernel_threads):
    """The chunk's rows from a routing task (dask indices); an untouched chunk is returned as it is."""
    rows = routes.get(chunk)
    if rows is None:
        return block
    return _normalized_copy(block, rows, use_max_norm, norm, kernel_threads)


def _route_task(func, parts, starts):
    """Routing of dask indices, as a task: checks them (IndexError before any kernel task runs), then routes."""
    indices = np.concatenate([np.asarray(p).reshape(-1) for p in parts]) if parts else np.empty(0, np.int64)
    return route(_host_indices(func, indices, int(starts[-1])), starts)


# --- sparse_normalize on dask arrays ---------------------------------------------------------------


def sparse_normalize(table, indices, *, norm=1.0, use_max_norm=True, kernel_threads=1):
    """SparseNormalize of the rows ``indices`` of a row-chunked Dask array: a new, lazy Dask array.

    Each chunk that owns selected rows is copied and normalised by the CPU
    kernel in one task; every other chunk of the result *is* the input's chunk
    (an alias in the graph: no task, no copy).

    Parameters
    ----------
    table : dask.array.Array
        Embedding table, float16, float32 or float64, at least 1-D; row ``i``
        is ``table.reshape(len(table), -1)[i]``.  Chunked along rows; a table
        also chunked along other axes is rechunked to whole rows first (with a
        warning).  Not modified.
    indices : array_like of int or dask.array.Array
        Rows to normalise, any shape (flattened), repeats allowed.  NumPy
        indices are checked and routed on the client now; Dask indices are
        routed by one task of the graph, and then every chunk gets a task
        (which returns an untouched chunk as it is).
    norm : float, default 1.0
        Target L2 norm, finite and >= 0.
    use_max_norm : bool, default True
        True: only rows whose norm exceeds ``norm`` are scaled down; False:
        every selected row is scaled to ``norm``.
    kernel_threads : int, default 1
        Threads of the kernel in each task (see the module's notes on threads).

    Returns
    -------
    dask.array.Array
        The table with the selected rows normalised, chunked like ``table``
        (after the rechunk, if there was one).

    Raises
    ------
    TypeError
        If ``table`` is not a Dask array or not float16/32/64, ``indices``
        are not integers, or ``norm``, ``use_max_norm`` or ``kernel_threads``
        have the wrong type.
    ValueError
        If ``table`` is 0-d or has unknown chunk sizes, or ``norm`` is
        negative or not finite, or ``kernel_threads < 1``.
    IndexError
        If a NumPy index is negative or ``>= len(table)``, before any task
        is built.  For Dask indices the routing task raises it when the graph
        runs, before any kernel task (they all depend on it).

    Warns
    -----
    UserWarning
        When the table is chunked along columns and is rechunked to whole rows.

    See Also
    --------
    sparse_normalize_zarr : the same on a Zarr table on disk, in place.
    caffe2op.sparse_normalize : the kernel, on a NumPy table in place.

    Examples
    --------
    >>> import numpy as np, dask.array as da, caffe2op.dask
    >>> table = da.from_array(np.array([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0], [0.0, 2.0]]), chunks=(2, 2))
    >>> out = caffe2op.dask.sparse_normalize(table, [0, 1, 0])   # only chunk 0 gets a task
    >>> out.compute()
    array([[0.6, 0.8],
           [0.3, 0.4],
           [6. , 8. ],
           [0. , 2. ]])
    """
    func = "caffe2op.dask.sparse_normalize"
    if not isinstance(table, da.Array):
        raise TypeError(f"{func}: table must be a dask.array.Array, got {type(table).__name__}")
    _check_sparse_normalize(func, table.dtype, table.shape, norm, use_max_norm)
    kernel_threads = _check_kernel_threads(func, kernel_threads)
    if any(math.isnan(c) for dim in table.chunks for c in dim):
        raise ValueError(f"{func}: table has unknown chunk sizes {table.chunks}; call compute_chunk_sizes() first")
    if any(len(dim) > 1 for dim in table.chunks[1:]):
        warnings.warn(
            f"{func}: table is chunked along columns too (chunks {table.chunksize}); rechunking to whole rows",
            UserWarning,
            stacklevel=2,
        )
        table = table.rechunk({axis: -1 for axis in range(1, table.ndim)})
    norm, use_max_norm = float(norm), bool(use_max_norm)
    starts = _row_starts(table.chunks[0])
    rest = (0,) * (table.ndim - 1)
    name = "sparse_normalize-" + dask.base.tokenize(table, indices, norm, use_max_norm, kernel_threads)
    layer = {}
    dependencies = [table]
    if isinstance(indices, da.Array):
        if indices.dtype.kind not in "iu":
            raise TypeError(f"{func}: indices must be integers (int32 or int64), got {indices.dtype}")
        route_key = (name + "-route",)
        layer[route_key] = (_route_task, func, list(dask.core.flatten(indices.__dask_keys__())), starts)
        dependencies.append(indices)
        for chunk in range(len(starts) - 1):
            key = (table.name, chunk, *rest)
            layer[(name, chunk, *rest)] = (_routed_block, key, route_key, chunk, use_max_norm, norm, kernel_threads)
    else:
        routes = route(_host_indices(func, indices, table.shape[0]), starts)
        for chunk in range(len(starts) - 1):
            key = (table.name, chunk, *rest)
            rows = routes.get(chunk)
            # An untouched chunk is an alias of the input's: the graph has no task for it.
            layer[(name, chunk, *rest)] = (
                key if rows is None else (_normalized_copy, key, rows, use_max_norm, norm, kernel_threads)
            )
    graph = HighLevelGraph.from_collections(name, layer, dependencies=dependencies)
    return da.Array(graph, name, table.chunks, meta=table._meta)


# --- Zarr tables on disk ---------------------------------------------------------------------------


def _write_unit(zarr_array):
    """Shape of the unit a Zarr store writes as one object: the shard if the array is sharded, else the chunk."""
    shards = getattr(zarr_array, "shards", None)
    return tuple(shards) if shards else tuple(zarr_array.chunks)


def _update_rows(zarr_array, start, stop, rows, use_max_norm, norm, kernel_threads):
    """One task: read rows ``[start, stop)`` (whole storage units), normalise ``rows``, write them back whole."""
    block = zarr_array[start:stop]
    with _config.thread_limit(kernel_threads):
        _sparse_normalize(block, rows, use_max_norm=use_max_norm, norm=norm)
    zarr_array[start:stop] = block
    return len(rows)


def _total(counts):
    return int(sum(counts))


def sparse_normalize_zarr(
    zarr_array, indices, *, norm=1.0, use_max_norm=True, kernel_threads=1, compute=True, scheduler=None
):
    """SparseNormalize of the rows ``indices`` of a Zarr table on disk, in place, one task per touched chunk.

    Only the row chunks (shards, for a sharded array) that own selected rows
    are read and rewritten, each by exactly one task and each written whole;
    the tasks run in parallel on the active Dask scheduler (a ``distributed``
    cluster whose workers can open the store), so a worker holds one chunk
    of rows at a time and the table can be far larger than memory.

    Parameters
    ----------
    zarr_array : zarr.Array
        Embedding table (float16, float32 or float64, at least 1-D), chunked
        (or sharded) along rows only: each storage unit holds whole rows.
        Updated in place; must be writable.
    indices : array_like of int or dask.array.Array
        Rows to normalise, any shape (flattened), repeats allowed.  Dask
        indices are computed first.
    norm : float, default 1.0
        Target L2 norm, finite and >= 0.
    use_max_norm : bool, default True
        True: only rows whose norm exceeds ``norm`` are scaled down; False:
        every selected row is scaled to ``norm``.
    kernel_threads : int, default 1
        Threads of the kernel in each task (see the module's notes on threads).
    compute : bool, default True
        False: return the update as a ``dask.delayed.Delayed`` without running
        it (``client.compute(d)`` runs it in the background).
    scheduler : str or distributed.Client, optional
        Passed to ``dask.compute`` (default: the active scheduler).

    Returns
    -------
    int or dask.delayed.Delayed
        The number of distinct rows processed (or the Delayed that computes it).

    Raises
    ------
    TypeError
        If ``zarr_array`` is not a Zarr-like array (``shape``, ``chunks``,
        ``dtype``, slicing) or not float16/32/64, ``indices`` are not
        integers, or an argument has the wrong type.
    ValueError
        If the table is 0-d, read-only, chunked along columns, or ``norm`` is
        negative or not finite.
    IndexError
        If an index is negative or ``>= len(zarr_array)``, before any task is
        submitted: the table is untouched.

    See Also
    --------
    sparse_normalize : the same on a Dask array, returning a new array.

    Notes
    -----
    **After a failure.**  Each storage unit is written whole by one store
    write (Zarr's local store writes a temporary file and renames it), so an
    interrupted update leaves every chunk either old or new, never a mix of
    the two, and never a row half-scaled.  Re-run the same call: a task whose
    worker dies is also re-run by the cluster itself.  In max-norm mode the
    operation is idempotent (a normalised row has norm ``<= norm`` and is left
    alone), so re-running is exact.  In constant-norm mode a row normalised
    twice is scaled a second time by ``norm / (n + 1e-12)`` with ``n`` its
    (already normalised) norm: the same result up to a relative ``1e-12 /
    norm`` and one rounding per element, so re-running is correct within
    floating-point tolerance but not bit-exact.

    Examples
    --------
    >>> import numpy as np, zarr, caffe2op.dask
    >>> z = zarr.create_array(store={}, shape=(4, 2), chunks=(2, 2), dtype="float32")
    >>> z[:] = [[3, 4], [0.3, 0.4], [6, 8], [0, 2]]
    >>> caffe2op.dask.sparse_normalize_zarr(z, [2, 3, 2], scheduler="sync")   # chunk 1 only
    2
    >>> z[:].tolist()
    [[3.0, 4.0], [0.30000001192092896, 0.4000000059604645], [0.6000000238418579, 0.800000011920929], [0.0, 1.0]]
    """
    func = "caffe2op.dask.sparse_normalize_zarr"
    if not all(hasattr(zarr_array, attr) for attr in ("shape", "chunks", "dtype", "__setitem__")):
        raise TypeError(f"{func}: zarr_array must be a zarr.Array, got {type(zarr_array).__name__}")
    shape = tuple(zarr_array.shape)
    _check_sparse_normalize(func, zarr_array.dtype, shape, norm, use_max_norm)
    kernel_threads = _check_kernel_threads(func, kernel_threads)
    if getattr(zarr_array, "read_only", False):
        raise ValueError(f"{func}: zarr_array is read-only and cannot be updated in place")
    unit = _write_unit(zarr_array)
    if tuple(unit[1:]) != shape[1:]:
        raise ValueError(
            f"{func}: zarr_array must be chunked along rows only (whole rows in each stored chunk/shard), "
            f"got {unit} for shape {shape}: a crash could leave a row half-written; rechunk it"
        )
    if isinstance(indices, da.Array):
        if indices.dtype.kind not in "iu":
            raise TypeError(f"{func}: indices must be integers (int32 or int64), got {indices.dtype}")
        indices = indices.compute(scheduler=scheduler)
    norm, use_max_norm = float(norm), bool(use_max_norm)
    n_rows = shape[0]
    starts = np.arange(0, n_rows + unit[0], unit[0], dtype=np.int64)
    starts[-1] = n_rows  # the last chunk may be partial (or, for 0 rows, empty)
    routes = route(_host_indices(func, indices, n_rows), starts)
    update = dask.delayed(_update_rows, pure=False)
    tasks = [
        update(zarr_array, int(starts[c]), int(starts[c + 1]), rows, use_max_norm, norm, kernel_threads)
        for c, rows in routes.items()
    ]
    total = dask.delayed(_total, pure=False)(tasks)
    return total.compute(scheduler=scheduler) if compute else total


# --- normalize ---------------------------------------------------------------------------------


def _check_block_format(block):
    """Chunks may differ from the array's meta (Dask cannot always infer it): CSR/CSC only, checked per chunk."""
    if _is_sparse(block) and block.format not in ("csr", "csc"):
        raise TypeError(f"caffe2op.dask.normalize: sparse chunks must be CSR or CSC, got {block.format.upper()}")


def _normalize_block(block, axis, norm, use_max_norm, kernel_threads):
    _check_block_format(block)
    with _config.thread_limit(kernel_threads):
        return _normalize(block, axis=axis, norm=norm, use_max_norm=use_max_norm)


def _is_sparse(x):
    return hasattr(x, "tocsr") and hasattr(x, "format")


def _partial_sumsq(block, axis):
    """The block's squared norms along ``axis`` in float64, keeping the axis (length 1)."""
    _check_block_format(block)
    if _is_sparse(block):
        wide = block.astype(np.float64)  # a copy: summing duplicates below leaves ``block`` alone
        wide.sum_duplicates()
        sums = np.asarray(wide.multiply(wide).sum(axis=axis))  # np.matrix, or 1-D for sparse arrays
        return sums.reshape((1, -1) if axis == 0 else (-1, 1))
    wide = np.asarray(block, dtype=np.float64)
    return np.square(wide).sum(axis=axis, keepdims=True)


def _scales(sumsq, norm, use_max_norm):
    """Normalize's factors from the squared norms: ``norm / max(n, 1e-12)``, or 1 where max-norm keeps ``v``."""
    n = np.sqrt(sumsq)
    scale = norm / np.maximum(n, 1e-12)
    if use_max_norm:
        scale = np.where(n <= norm, 1.0, scale)
    return scale


def _scale_block(block, sumsq, axis, norm, use_max_norm):
    """One chunk times the factors of its vectors, in the kernel's precision (float32 for float16/32)."""
    compute = np.float64 if block.dtype == np.float64 else np.float32
    scale = _scales(sumsq, norm, use_max_norm).astype(compute)
    if _is_sparse(block):
        out = block.copy()
        # The factor of each stored entry is that of its vector: the entry's index along the other axis.
        major = np.repeat(np.arange(len(out.indptr) - 1), np.diff(out.indptr))
        minor = out.indices
        by_row = (out.format == "csr") == (axis == 1)
        position = major if by_row else minor
        out.data = (out.data.astype(compute) * scale.reshape(-1)[position]).astype(block.dtype)
        return out
    return (block.astype(compute, copy=False) * scale).astype(block.dtype, copy=False)


def normalize(X, *, axis, norm=1.0, use_max_norm=False, kernel_threads=1, split_every=None):
    """Normalize of a Dask array, dense or with ``scipy.sparse`` CSR/CSC chunks: a new, lazy Dask array.

    Vectors that lie inside one chunk (``axis`` not chunked) are normalised
    by the kernel, one ``map_blocks`` task per chunk.  Vectors that cross
    chunks get their squared norms from a tree reduction of per-chunk partial
    sums, then one scaling pass with Normalize's rule.

    Parameters
    ----------
    X : dask.array.Array
        float16, float32 or float64 data: dense chunks of any rank >= 1, or
        2-D with ``scipy.sparse`` CSR or CSC chunks (structure kept).
    axis : int
        Axis along which the vectors lie (negative counts from the end); for
        a matrix ``axis=0`` normalises columns, ``axis=1`` rows.
    norm : float, default 1.0
        Target L2 norm, finite and >= 0.
    use_max_norm : bool, default False
        True: only vectors whose norm exceeds ``norm`` are scaled down.
    kernel_threads : int, default 1
        Threads of the kernel in each task (see the module's notes on threads).
    split_every : int, optional
        Fan-in of the tree reduction of partial sums (Dask's default if None).

    Returns
    -------
    dask.array.Array
        The normalised array, chunked like ``X``, of the same chunk type.

    Raises
    ------
    TypeError
        If ``X`` is not a Dask array, not float16/32/64, its chunks are a
        sparse format other than CSR/CSC, or an argument has the wrong type.
    ValueError
        If ``axis`` is out of range, a sparse ``X`` is not 2-D, ``norm`` is
        negative or not finite, or ``kernel_threads < 1``.

    See Also
    --------
    caffe2op.normalize : the kernel, on NumPy and scipy.sparse data.

    Notes
    -----
    The crossing-chunk path accumulates norms in float64 and scales float16
    and float32 data in float32 by the factor rounded to float32, as the
    kernel does: results equal :func:`caffe2op.normalize` on the gathered
    array within float tolerance.

    Examples
    --------
    >>> import numpy as np, dask.array as da, caffe2op.dask
    >>> W = da.from_array(np.array([[3.0, 0.0], [4.0, 2.0]]), chunks=(1, 2))
    >>> caffe2op.dask.normalize(W, axis=0).compute()   # columns cross the two row chunks
    array([[0.6, 0. ],
           [0.8, 1. ]])
    """
    func = "caffe2op.dask.normalize"
    if not isinstance(X, da.Array):
        raise TypeError(f"{func}: X must be a dask.array.Array, got {type(X).__name__}")
    kernel_threads = _check_kernel_threads(func, kernel_threads)
    sparse = _is_sparse(X._meta)
    if sparse and X._meta.format not in ("csr", "csc"):
        raise TypeError(f"{func}: sparse chunks must be CSR or CSC, got {X._meta.format.upper()}")
    if sparse and X.ndim != 2:
        raise ValueError(f"{func}: sparse X must be 2-D, got {X.ndim}-D")
    if X.dtype not in _FLOATS:
        raise TypeError(f"{func}: X must be float16, float32 or float64, got {X.dtype}")
    try:  # axis, norm and use_max_norm by the kernel's own rules, on empty data
        _normalize(np.empty((0,) * X.ndim, X.dtype), axis=axis, norm=norm, use_max_norm=use_max_norm)
    except (TypeError, ValueError) as err:
        _reraise(func, err)
    axis = int(axis) % X.ndim
    norm, use_max_norm = float(norm), bool(use_max_norm)
    if len(X.chunks[axis]) == 1:
        return X.map_blocks(_normalize_block, axis, norm, use_max_norm, kernel_threads, dtype=X.dtype, meta=X._meta)
    partial = X.map_blocks(
        _partial_sumsq,
        axis,
        chunks=tuple((1,) * len(c) if i == axis else c for i, c in enumerate(X.chunks)),
        dtype=np.float64,
        meta=np.empty((0,) * X.ndim, np.float64),
    )
    sumsq = partial.sum(axis=axis, keepdims=True, split_every=split_every)  # the tree reduction
    return da.map_blocks(_scale_block, X, sumsq, axis, norm, use_max_norm, dtype=X.dtype, meta=X._meta)
