# SPDX-License-Identifier: BSD-3-Clause
"""Nets: ordered lists of operators, built with Caffe2-style attribute builders."""

import itertools

from .core import OperatorDef, create_operator
from .errors import UnknownOperatorError, unknown_operator_message
from .registry import is_known_operator_type, known_operator_types
from .schema import get_schema

__all__ = ["Net"]


class Net:
    """An ordered list of :class:`~caffe2op.OperatorDef` run by :meth:`Workspace.run_net`.

    Operators are added with :meth:`add_op` or with attribute builders named
    after the operator type, as in Caffe2: ``net.StopGradient("x", "y")``
    creates, checks and appends the operator and returns its output name(s).

    Parameters
    ----------
    name : str, default "net"
        Name of the net; it prefixes automatically named outputs.

    Examples
    --------
    >>> import numpy as np, caffe2op
    >>> net = caffe2op.Net("example")
    >>> net.StopGradient("x", "x_frozen")
    'x_frozen'
    >>> net.SparseNormalize(["w", "idx"], ["w"], norm=2.0)
    'w'
    >>> print(net)
    Net 'example' (2 operators)
      0: StopGradient(x) -> (x_frozen)
      1: SparseNormalize(w, idx) -> (w)  norm=2.0
    """

    def __init__(self, name="net"):
        if not isinstance(name, str) or not name:
            raise TypeError(f"Net: name must be a non-empty str, got {name!r}")
        self.name = name
        self.ops = []
        self._auto_names = itertools.count()

    def add_op(self, op_def):
        """Append an operator definition, checking it against its schema if it has one.

        Parameters
        ----------
        op_def : OperatorDef
            The operator (built by :func:`~caffe2op.create_operator` or by hand).

        Returns
        -------
        OperatorDef
            ``op_def``.

        Raises
        ------
        TypeError
            If ``op_def`` is not an OperatorDef.
        SchemaError
            If it breaks its schema.

        Examples
        --------
        >>> import caffe2op
        >>> net = caffe2op.Net("n")
        >>> op = net.add_op(caffe2op.create_operator("StopGradient", "x", "y"))
        >>> net.ops == [op]
        True
        """
        if not isinstance(op_def, OperatorDef):
            raise TypeError(f"Net.add_op: expected an OperatorDef, got {type(op_def).__name__}")
        schema = get_schema(op_def.type, None)
        if schema is not None:
            schema.verify(op_def)
        self.ops.append(op_def)
        return op_def

    def next_blob_name(self, prefix):
        """A fresh blob name ``<net>/<prefix>_<k>`` for automatically named outputs.

        Parameters
        ----------
        prefix : str
            Usually the operator type.

        Returns
        -------
        str
            A name not handed out before by this net.

        Examples
        --------
        Builders use it when they are given a number of outputs instead of names:

        >>> import caffe2op
        >>> net = caffe2op.Net("n")
        >>> net.next_blob_name("Sum")
        'n/Sum_0'
        >>> net.StopGradient("x", 1)
        'n/StopGradient_1'
        """
        return f"{self.name}/{prefix}_{next(self._auto_names)}"

    def __getattr__(self, op_type):
        if op_type.startswith("_") or not op_type[:1].isupper():
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {op_type!r}")
        if not is_known_operator_type(op_type):
            raise UnknownOperatorError(unknown_operator_message(op_type, known_operator_types()))

        def build(inputs, outputs=None, **kwargs):
            if outputs is None:
                outputs = 1
            if isinstance(outputs, int) and not isinstance(outputs, bool):
                outputs = [self.next_blob_name(op_type) for _ in range(outputs)]
            op_def = create_operator(op_type, inputs, outputs, **kwargs)
            self.ops.append(op_def)
            if not op_def.outputs:
                return None
            if len(op_def.outputs) == 1:
                return op_def.outputs[0]
            return tuple(op_def.outputs)

        build.__name__ = op_type
        build.__doc__ = f"Append a {op_type} operator; returns its output blob name(s)."
        return build

    def __len__(self):
        return len(self.ops)

    def __str__(self):
        count = len(self.ops)
        lines = [f"Net {self.name!r} ({count} operator{'s' if count != 1 else ''})"]
        lines += [f"  {i}: {op.describe()}" for i, op in enumerate(self.ops)]
        return "\n".join(lines)

    def __repr__(self):
        return f"Net({self.name!r}, {len(self.ops)} operators)"
