# SPDX-License-Identifier: BSD-3-Clause
"""Caffe2's name scopes and :class:`BlobReference` for :mod:`caffe2op.compat.core` (which re-exports them)."""

import contextlib
import contextvars

# --- names and scopes ------------------------------------------------------------------------------

_NAME_SCOPE = contextvars.ContextVar("caffe2op_compat_name_scope", default="")


def CurrentNameScope():  # noqa: N802 - Caffe2's name
    """The current name scope prefix (``""`` or ``"a/b/"``)."""
    return _NAME_SCOPE.get()


@contextlib.contextmanager
def NameScope(prefix, reset=False):  # noqa: N802 - Caffe2's name
    """Prefix the names made by :func:`ScopedName` and ``Net`` builders with ``prefix/`` (Caffe2's ``core.NameScope``).

    Parameters
    ----------
    prefix : str
        The scope name (``""`` or None adds nothing).
    reset : bool, default False
        Start from the top level instead of nesting in the current scope.

    Yields
    ------
    None

    Examples
    --------
    >>> from caffe2op.compat import core
    >>> with core.NameScope("enc"):
    ...     core.ScopedName("w")
    'enc/w'
    """
    current = "" if reset else _NAME_SCOPE.get()
    token = _NAME_SCOPE.set(current + (f"{prefix}/" if prefix else ""))
    try:
        yield
    finally:
        _NAME_SCOPE.reset(token)


def ScopedName(name):  # noqa: N802 - Caffe2's name
    """``name`` prefixed with the current name scope.

    Parameters
    ----------
    name : str
        A blob name.

    Returns
    -------
    str
        The scoped name.

    Examples
    --------
    >>> from caffe2op.compat import core
    >>> with core.NameScope("dec"):
    ...     core.ScopedName("w")
    'dec/w'
    >>> core.ScopedName("w")
    'w'
    """
    return _NAME_SCOPE.get() + str(name)


class BlobReference(str):
    """A blob name that remembers the net it came from (Caffe2's ``core.BlobReference``).

    It *is* a ``str``, so every caffe2op function takes it where a blob
    name goes.  ``blob.Relu([], "y")`` adds ``Relu([blob], "y")`` to the
    blob's net, as in Caffe2.

    Parameters
    ----------
    name : str
        The blob name.
    net : Net, optional
        The net that made it.

    Examples
    --------
    >>> from caffe2op.compat import core
    >>> net = core.Net("doc_ref")
    >>> x = net.AddExternalInput("x")
    >>> y = x.StopGradient([], "y")
    >>> y, y.Net() is net, [op.type for op in net.Proto().op]
    ('y', True, ['StopGradient'])
    """

    def __new__(cls, name, net=None):
        ref = super().__new__(cls, str(name))
        ref._from_net = net
        return ref

    def Net(self):  # noqa: N802 - Caffe2's name
        """The net that made this reference.

        Returns
        -------
        Net or None
            The net, or None for a reference made directly.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> core.BlobReference("x").Net() is None
        True
        """
        return self._from_net

    def GetNameScope(self):  # noqa: N802 - Caffe2's name
        """The name scope part of the name.

        Returns
        -------
        str
            ``"a/b/"``, or ``""`` for an unscoped name.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> core.BlobReference("enc/layer/w").GetNameScope()
        'enc/layer/'
        """
        return self[: self.rfind("/") + 1]

    def GetUnscopedName(self):  # noqa: N802 - Caffe2's name
        """The name without its name scope.

        Returns
        -------
        str
            The last part of the name.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> core.BlobReference("enc/layer/w").GetUnscopedName()
        'w'
        """
        return self[self.rfind("/") + 1 :]

    def __getattr__(self, op_type):
        if op_type.startswith("_") or self._from_net is None:
            raise AttributeError(f"BlobReference has no attribute {op_type!r} (and no net to add an operator to)")
        builder = getattr(self._from_net, op_type)

        def build(inputs=None, *args, **kwargs):
            rest = [] if inputs is None else _rectify(inputs)
            return builder([self] + rest, *args, **kwargs)

        return build

    def __reduce__(self):
        return (BlobReference, (str(self),))


def ScopedBlobReference(name, *args, **kwargs):  # noqa: N802 - Caffe2's name
    """A :class:`BlobReference` to ``name`` in the current name scope.

    Parameters
    ----------
    name : str
        The unscoped name.
    *args, **kwargs
        Passed to :class:`BlobReference` (the net).

    Returns
    -------
    BlobReference
        The reference.

    Examples
    --------
    >>> from caffe2op.compat import core
    >>> with core.NameScope("enc"):
    ...     ref = core.ScopedBlobReference("w")
    >>> ref
    'enc/w'
    """
    return BlobReference(ScopedName(name), *args, **kwargs)


def _reference(name, net=None):
    # Caffe2: a plain str gets the current name scope, a BlobReference is kept as it is.
    return name if isinstance(name, BlobReference) else ScopedBlobReference(name, net)


def _rectify(value, net=None):
    """Caffe2's ``_RectifyInputOutput``: one name or a list of names, as a list of BlobReference."""
    if isinstance(value, str):
        return [_reference(value, net)]
    if isinstance(value, (list, tuple)):
        for name in value:
            if not isinstance(name, str):
                raise TypeError(f"blob names must be str or BlobReference, got {type(name).__name__} ({name!r})")
        return [_reference(name, net) for name in value]
    raise TypeError(f"expected a blob name or a list of them, got {type(value).__name__} ({value!r})")
