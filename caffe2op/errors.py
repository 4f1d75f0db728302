# SPDX-License-Identifier: BSD-3-Clause
"""Exceptions raised by caffe2op.

Bad input always gets a typed error that names the operator and the bad
value: :class:`TypeError` for kinds and dtypes, :class:`ValueError` for shapes
and values, :class:`IndexError` for indices.  The classes below refine those
for the framework itself.
"""

import difflib

__all__ = ["MissingBlobError", "SchemaError", "SchemaTypeError", "UnknownOperatorError"]


class SchemaError(ValueError):
    """An operator definition breaks its operator's schema.

    Raised by :func:`caffe2op.create_operator`, :meth:`caffe2op.OpSchema.verify`
    and whenever an operator is instantiated from an :class:`~caffe2op.OperatorDef`
    that was built by hand.  The message names the operator type and the rule
    (input count, in-place pair, argument type or range, unknown argument).

    Examples
    --------
    >>> import caffe2op
    >>> try:
    ...     caffe2op.create_operator("SparseNormalize", ["w", "idx"], ["w2"])
    ... except caffe2op.SchemaError as err:
    ...     print(err)
    SparseNormalize: output 0 ('w2') must be the same blob as input 0 ('w') (EnforceOneToOneInplace)
    """


class SchemaTypeError(SchemaError, TypeError):
    """An operator argument has the wrong type.

    It is both a :class:`SchemaError` (so a ``ValueError``) and a
    :class:`TypeError`, so that either ``except`` clause catches it.

    Examples
    --------
    >>> import caffe2op
    >>> try:
    ...     caffe2op.create_operator("SparseNormalize", ["w", "idx"], ["w"], norm="big")
    ... except TypeError as err:
    ...     print(err)
    SparseNormalize: argument 'norm' must be a real number, got str ('big')
    """


class _ReadableKeyError(KeyError):
    """A KeyError whose ``str()`` is its message as written (KeyError would show its repr)."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class UnknownOperatorError(_ReadableKeyError):
    """No operator (or no implementation on the requested device) of that type.

    A :class:`KeyError` whose message reads normally and, for a misspelt
    type, suggests the closest known ones.

    Parameters
    ----------
    message : str
        What went wrong.

    Examples
    --------
    >>> import caffe2op
    >>> try:
    ...     caffe2op.create_operator("StopGradeint", "x", "y")
    ... except caffe2op.UnknownOperatorError as err:
    ...     print(err)
    'StopGradeint' is not a registered operator type. Did you mean: StopGradient, ...?
    """


class MissingBlobError(_ReadableKeyError):
    """A blob an operator or a fetch needs is not in the workspace.

    A :class:`KeyError` whose message names the blob and, for an operator
    input, the operator, and suggests the closest existing blob names.

    Parameters
    ----------
    message : str
        What is missing.

    Examples
    --------
    >>> import caffe2op
    >>> ws = caffe2op.Workspace()
    >>> try:
    ...     ws.run_operator_once(caffe2op.create_operator("StopGradient", "x", "y"))
    ... except caffe2op.MissingBlobError as err:
    ...     print(err)
    StopGradient: input 0 'x' does not exist in the workspace.
    >>> ws.feed_blob("hidden", [1.0])
    >>> try:
    ...     ws.fetch_blob("hiden")
    ... except caffe2op.MissingBlobError as err:
    ...     print(err)
    fetch_blob: blob 'hiden' does not exist in the workspace. Did you mean: hidden?
    """


def _did_you_mean(name, known):
    close = difflib.get_close_matches(name, sorted(set(known)), n=3, cutoff=0.6)
    return " Did you mean: " + ", ".join(close) + "?" if close else ""


def missing_blob_message(prefix, name, known):
    """Return the "does not exist, did you mean" message for blob ``name``.

    Parameters
    ----------
    prefix : str
        Who asked (``"fetch_blob: blob"``, ``"Sum: input 1"``).
    name : str
        The missing blob.
    known : iterable of str
        The blobs that exist.

    Returns
    -------
    str
        The message.
    """
    return f"{prefix} {name!r} does not exist in the workspace.{_did_you_mean(name, known)}"


def unknown_operator_message(op_type, known):
    """Return the "not registered, did you mean" message for ``op_type``.

    Parameters
    ----------
    op_type : str
        The type asked for.
    known : iterable of str
        The types that exist.

    Returns
    -------
    str
        The message.
    """
    return f"{op_type!r} is not a registered operator type.{_did_you_mean(op_type, known)}"
