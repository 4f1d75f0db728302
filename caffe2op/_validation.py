# SPDX-License-Identifier: BSD-3-Clause
"""Input checks shared by the operators: done once in Python, before any kernel runs.

Every message names the operator and the bad value.  Kinds and dtypes raise
TypeError, shapes and values ValueError, indices IndexError.
"""

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))
#: The largest finite value of each float dtype: a target norm above it would write infinities.
LARGEST_FINITE = {dtype: float(np.finfo(dtype).max) for dtype in FLOAT_DTYPES}


def dtype_names(dtypes):
    """'float16, float32 or float64' for a sequence of dtypes."""
    names = [str(np.dtype(d)) for d in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def require_ndarray(op, name, value, why=""):
    """Return ``value`` if it is a NumPy array, else raise TypeError."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray{why}, got {type(value).__name__}")
    return value


def require_dtype(op, name, array, dtypes):
    """Raise TypeError unless ``array.dtype`` is one of ``dtypes``."""
    if array.dtype not in dtypes:
        raise TypeError(f"{op}: {name} must be {dtype_names(dtypes)}, got {array.dtype}")


def require_norm_fits(op, name, norm, dtype):
    """Raise ValueError if the target ``norm`` exceeds the largest finite value of ``dtype`` (a float dtype).

    Rows or vectors scaled to such a norm would be written as infinities.
    ``name`` is the array whose dtype it is, for the message.
    """
    largest = LARGEST_FINITE[np.dtype(dtype)]
    if norm > largest:
        raise ValueError(
            f"{op}: norm={norm!r} cannot be represented in {np.dtype(dtype)} "
            f"({name}'s dtype; largest finite value {largest!r})"
        )


def require_writeable(op, name, array):
    """Raise ValueError if ``array`` is read-only (it would be updated in place)."""
    if not array.flags.writeable:
        raise ValueError(f"{op}: {name} is read-only and cannot be updated in place")


def index_vector(op, name, indices):
    """Flatten integer indices to a contiguous int32 or int64 vector.

    Other integer dtypes are converted to int64 (uint64 values that do not fit
    are reported by :func:`raise_first_bad_index` as out of range).

    Raises
    ------
    TypeError
        If the indices are not integers (bools and floats included).
    ValueError
        If they are a ragged nested sequence.
    IndexError
        If a Python int does not fit in int64.
    """
    try:
        array = np.asarray(indices)
    except ValueError as err:  # NumPy's "inhomogeneous shape": a ragged nested list
        raise ValueError(
            f"{op}: {name} must be a rectangular array of integers, got a ragged sequence "
            f"({type(indices).__name__} whose items have different lengths)"
        ) from err
    if array.size == 0 and not isinstance(indices, np.ndarray):
        array = array.astype(np.int64)  # an empty Python list has no integer dtype of its own
    if array.dtype == object:
        array = _object_indices(op, name, array)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{op}: {name} must be integers (int32 or int64), got {array.dtype}")
    array = array.reshape(-1)
    if array.dtype not in INDEX_DTYPES:
        if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
            position = int(np.argmax(array > np.iinfo(np.int64).max))
            raise IndexError(f"{op}: index {int(array[position])} at position {position} of {name} is out of range")
        array = array.astype(np.int64)
    return np.ascontiguousarray(array)


def _object_indices(op, name, array):
    """int64 indices from an object array of Python ints (NumPy's result for ints beyond 64 bits)."""
    values = array.reshape(-1).tolist()
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{op}: {name} must be integers (int32 or int64), got object")
    for position, value in enumerate(values):
        if not -(2**63) <= value < 2**63:
            raise IndexError(
                f"{op}: index {value} at position {position} of {name} is out of range (indices must fit in int64)"
            )
    return np.array(values, dtype=np.int64).reshape(array.shape)


def raise_first_bad_index(op, name, indices, n_rows, what="param"):
    """Raise IndexError naming the first index outside ``[0, n_rows)``.

    Called after a kernel found one; if none is out of range any more,
    another thread rewrote ``indices`` during the call, and the error says so.
    """
    bad = (indices < 0) | (indices >= n_rows)
    if not bad.any():
        raise IndexError(
            f"{op}: an index of {name} was outside 0..{n_rows - 1} when the call read it and is not any "
            f"more: another thread wrote {name} during the call (nothing was modified)"
        )
    position = int(np.argmax(bad))
    raise IndexError(
        f"{op}: index {int(indices[position])} at position {position} of {name} is out of range "
        f"for {what} with {n_rows} rows (valid indices are 0..{n_rows - 1})"
        if n_rows
        else f"{op}: index {int(indices[position])} at position {position} of {name} is out of range "
        f"for {what} with 0 rows"
    )
