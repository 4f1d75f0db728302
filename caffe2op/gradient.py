# SPDX-License-Identifier: BSD-3-Clause
"""Gradient makers and their registry: how each operator type builds its gradient operators.

Caffe2 kept two registries of gradient makers, a C++ one (classes deriving
from ``GradientMakerBase``) and a Python one (functions
``f(op, g_output) -> (grad_ops, g_input)``).  Here both styles register into
one registry with :func:`register_gradient`, and :func:`get_gradient_defs`
first checks the forward operator against its schema (Caffe2's
``VerifyOp``), then calls the maker.  The operators of a maker class are
post-processed as Caffe2's C++ ``GetGradientForOp`` did: the forward
operator's device option, engine and arguments are copied onto them and
they are flagged ``is_gradient_op``.  The operators of a gradient function
are returned as the function made them, as Caffe2's Python registry did.
``g_input`` must have one entry per forward input.

Gradients are named by strings (dense gradients, ``X_grad``) or by
:class:`GradientSlice` pairs (sparse gradients, ``X_grad_indices`` and
``X_grad_values``); ``None`` means "no gradient".

Errors
------
* :class:`GradientNotRegisteredError` (a ``KeyError``): no maker is
  registered for the operator type.
* ``RuntimeError``: the type is registered with :func:`should_not_do_gradient`
  ("One should not call gradient for operator X.").
* ``NotImplementedError`` (a ``RuntimeError``): the type is registered with
  :func:`gradient_not_implemented_yet`.
* ``ValueError``: a maker asked for a missing or wrongly typed output
  gradient (``GO`` of an output without a dense gradient), mixed a dense and
  a sparse gradient for one input, returned a ``g_input`` of the wrong length
  or a sparse gradient without both indices and values.
* ``IndexError``: ``I``/``O``/``GI``/``GO``... with an index out of range.
* ``TypeError``: a maker returned something that is not operator
  definitions and gradient names.
* :class:`~caffe2op.SchemaError`: the forward operator breaks its schema.
"""

import collections
import dataclasses
import difflib

from . import _tables
from .core import OperatorDef
from .errors import SchemaError, _ReadableKeyError
from .schema import get_schema

__all__ = [
    "GradientMakerBase",
    "GradientNotRegisteredError",
    "GradientSlice",
    "get_gradient_defs",
    "gradient_not_implemented_yet",
    "no_gradient",
    "register_gradient",
    "registered_gradients",
    "should_not_do_gradient",
]


class GradientSlice(collections.namedtuple("GradientSlice", ["indices", "values"])):
    """A sparse gradient: the blob names of its row indices and of its values.

    Row ``indices[k]`` of the dense gradient receives ``values[k]``; repeated
    indices add up.  Caffe2's ``core.GradientSlice``.

    Parameters
    ----------
    indices : str
        Blob holding the (integer) row indices.
    values : str
        Blob holding the gradient rows, one per index.

    Examples
    --------
    >>> from caffe2op import GradientSlice
    >>> g = GradientSlice("w_grad_indices", "w_grad_values")
    >>> g.indices, g.values
    ('w_grad_indices', 'w_grad_values')
    """

    __slots__ = ()


class GradientNotRegisteredError(_ReadableKeyError):
    """No gradient maker is registered for an operator type.

    A :class:`KeyError` whose message reads normally, names the operator
    type and suggests close registered types.

    Parameters
    ----------
    message : str
        What went wrong.

    Examples
    --------
    >>> import caffe2op
    >>> op = caffe2op.OperatorDef(type="NoSuchGradientOp", inputs=["x"], outputs=["y"])
    >>> try:
    ...     caffe2op.get_gradient_defs(op, ["y_grad"])
    ... except caffe2op.GradientNotRegisteredError as err:
    ...     print(str(err).split(".")[0])
    No gradient maker is registered for operator type 'NoSuchGradientOp'
    """


def _check_blob_name(where, what, name):
    if not isinstance(name, str) or not name:
        raise TypeError(f"{where}: {what} must be a non-empty blob name (str), got {name!r}")
    return name


def _as_gradient(where, what, value):
    """Normalise a gradient to None, a str or a GradientSlice of two str."""
    if value is None:
        return None
    if isinstance(value, str):
        return _check_blob_name(where, what, value)
    if isinstance(value, tuple) and len(value) == 2:
        indices, values = value
        return GradientSlice(
            _check_blob_name(where, f"{what} (indices)", indices),
            _check_blob_name(where, f"{what} (values)", values),
        )
    raise TypeError(
        f"{where}: {what} must be None, a blob name or a GradientSlice(indices, values), "
        f"got {type(value).__name__} ({value!r})"
    )


class GradientMakerBase:
    """Base class of gradient makers: builds the gradient operators of one forward operator.

    Subclass it, override :meth:`get_gradient_defs` (using the helpers
    ``I``, ``O``, ``GI``, ``GI_I``, ``GI_V``, ``GO``, ``GO_I``, ``GO_V``,
    :meth:`set_dense`, :meth:`set_sparse`, :meth:`single_gradient_def`) and
    register the class with :func:`register_gradient`.  ``GI(i)`` both
    returns the conventional name of input ``i``'s gradient and records it
    as that input's gradient; inputs left unrecorded get no gradient.

    Parameters
    ----------
    op_def : OperatorDef
        The forward operator.
    g_output : list
        One entry per output of ``op_def``: its gradient's blob name, a
        :class:`GradientSlice`, or None when that output has no gradient.

    Attributes
    ----------
    copy_device_option, copy_engine, copy_arguments : bool
        Class attributes, True by default: whether :func:`get_gradient_defs`
        copies the forward operator's device option, engine and arguments
        onto the gradient operators (Caffe2's ``CopyDeviceOption`` ...).

    Raises
    ------
    TypeError
        If ``op_def`` is not an OperatorDef or ``g_output`` entries are not
        gradients.
    ValueError
        If ``g_output`` does not have one entry per output.

    Examples
    --------
    >>> import caffe2op
    >>> @caffe2op.register_gradient("DocScale2")
    ... class GetDocScale2Gradient(caffe2op.GradientMakerBase):
    ...     def get_gradient_defs(self):
    ...         return self.single_gradient_def("DocScale2", "", [self.GO(0)], [self.GI(0)])
    >>> fwd = caffe2op.OperatorDef(type="DocScale2", inputs=["x"], outputs=["y"], args={"scale": 2.0})
    >>> ops, g_input = caffe2op.get_gradient_defs(fwd, ["y_grad"])
    >>> ops[0].describe(), g_input
    ('DocScale2(y_grad) -> (x_grad)  scale=2.0', ['x_grad'])
    """

    copy_device_option = True
    copy_engine = True
    copy_arguments = True

    def __init__(self, op_def, g_output):
        if not isinstance(op_def, OperatorDef):
            raise TypeError(f"{type(self).__name__}: expected an OperatorDef, got {type(op_def).__name__}")
        g_output = list(g_output)
        if len(g_output) != len(op_def.outputs):
            raise ValueError(
                f"{op_def.type}: g_output must have one entry per output ({len(op_def.outputs)}), got {len(g_output)}"
            )
        self.def_ = op_def
        self.g_output = [
            _as_gradient(op_def.type, f"gradient of output {i} ({name!r})", g)
            for i, (name, g) in enumerate(zip(op_def.outputs, g_output, strict=True))
        ]
        # Per input: None, ("dense", name) or ("sparse", indices or None, values or None).
        self._g_input = [None] * len(op_def.inputs)

    # --- names of the forward operator ---------------------------------------

    def _input_index(self, i):
        if not isinstance(i, int) or not 0 <= i < len(self.def_.inputs):
            raise IndexError(f"{self.def_.type}: input index {i!r} out of range ({len(self.def_.inputs)} inputs)")
        return i

    def _output_index(self, i):
        if not isinstance(i, int) or not 0 <= i < len(self.def_.outputs):
            raise IndexError(f"{self.def_.type}: output index {i!r} out of range ({len(self.def_.outputs)} outputs)")
        return i

    def I(self, i):  # noqa: E743 - Caffe2's name
        """Name of forward input ``i``.

        Parameters
        ----------
        i : int
            Input position.

        Returns
        -------
        str
            The blob name.

        Raises
        ------
        IndexError
            If there is no input ``i``.

        Examples
        --------
        >>> import caffe2op
        >>> fwd = caffe2op.OperatorDef(type="Mul", inputs=["a", "b"], outputs=["y"])
        >>> caffe2op.GradientMakerBase(fwd, ["y_grad"]).I(1)
        'b'
        """
        return self.def_.inputs[self._input_index(i)]

    def O(self, i):  # noqa: E743 - Caffe2's name
        """Name of forward output ``i``.

        Parameters
        ----------
        i : int
            Output position.

        Returns
        -------
        str
            The blob name.

        Raises
        ------
        IndexError
            If there is no output ``i``.

        Examples
        --------
        >>> import caffe2op
        >>> fwd = caffe2op.OperatorDef(type="Mul", inputs=["a", "b"], outputs=["y"])
        >>> caffe2op.GradientMakerBase(fwd, ["y_grad"]).O(0)
        'y'
        """
        return self.def_.outputs[self._output_index(i)]

    # --- gradients of the inputs (recorded) -----------------------------------

    def _record(self, i, kind, indices=None, values=None, dense=None):
        current = self._g_input[i]
        if current is not None and current[0] != kind:
            raise ValueError(
                f"{self.def_.type}: the gradient of input {i} ({self.def_.inputs[i]!r}) is already set to "
                f"{current[0]}; one input cannot have both a dense and a sparse gradient"
            )
        if kind == "dense":
            self._g_input[i] = ("dense", dense)
        else:
            old_indices, old_values = (current[1], current[2]) if current is not None else (None, None)
            self._g_input[i] = (
                "sparse",
                indices if indices is not None else old_indices,
                values if values is not None else old_values,
            )

    def GI(self, i):
        """Name of input ``i``'s dense gradient (``<input>_grad``), recorded as that input's gradient.

        Parameters
        ----------
        i : int
            Input position.

        Returns
        -------
        str
            ``I(i) + "_grad"``.

        Raises
        ------
        IndexError
            If there is no input ``i``.
        ValueError
            If input ``i`` already has a sparse gradient.

        Examples
        --------
        >>> import caffe2op
        >>> fwd = caffe2op.OperatorDef(type="Mul", inputs=["a", "b"], outputs=["y"])
        >>> maker = caffe2op.GradientMakerBase(fwd, ["y_grad"])
        >>> maker.GI(1)
        'b_grad'
        >>> maker.g_input()  # recorded for input 1; input 0 gets no gradient
        [None, 'b_grad']
        """
        name = self.I(i) + "_grad"
        self._record(i, "dense", dense=name)
        return name

    def GI_I(self, i):
        """Name of the indices of input ``i``'s sparse gradient (``<input>_grad_indices``), recorded.

        Parameters
        ----------
        i : int
            Input position.

        Returns
        -------
        str
            ``I(i) + "_grad_indices"``.

        Raises
        ------
        IndexError
            If there is no input ``i``.
        ValueError
            If input ``i`` already has a dense gradient.

        Examples
        --------
        >>> import caffe2op
        >>> fwd = caffe2op.OperatorDef(type="Lookup", inputs=["table", "ids"], outputs=["rows"])
        >>> maker = caffe2op.GradientMakerBase(fwd, ["rows_grad"])
        >>> maker.GI_I(0), maker.GI_V(0)
        ('table_grad_indices', 'table_grad_values')
        >>> maker.g_input()
        [GradientSlice(indices='table_grad_indices', values='table_grad_values'), None]
        """
        name = self.I(i) + "_grad_indices"
        self._record(i, "sparse", indices=name)
        return name

    def GI_V(self, i):
        """Name of the values of input ``i``'s sparse gradient (``<input>_grad_values``), recorded.

        Parameters
        ----------
        i : int
            Input position.

        Returns
        -------
        str
            ``I(i) + "_grad_values"``.

        Raises
        ------
        IndexError
            If there is no input ``i``.
        ValueError
            If input ``i`` already has a dense gradient.

        Examples
        --------
        Indices and values are recorded separately; the sparse gradient is
        complete once both are:

        >>> import caffe2op
        >>> fwd = caffe2op.OperatorDef(type="Lookup", inputs=["table", "ids"], outputs=["rows"])
        >>> maker = caffe2op.GradientMakerBase(fwd, ["rows_grad"])
        >>> maker.GI_V(0)
        'table_grad_values'
        >>> maker.g_input()
        Traceback (most recent call last):
            ...
        ValueError: Lookup: the sparse gradient of input 0 ('table') needs both indices and values, ...
        """
        name = self.I(i) + "_grad_values"
        self._record(i, "sparse", values=name)
        return name

    def set_dense(self, i, name):
        """Record ``name`` as input ``i``'s dense gradient (Caffe2's ``SetDense``).

        Parameters
        ----------
        i : int
            Input position.
        name : str
            Blob name of the gradient (for instance an output gradient passed through).

        Raises
        ------
        IndexError
            If there is no input ``i``.
        ValueError
            If input ``i`` already has a sparse gradient.
        TypeError
            If ``name`` is not a non-empty str.

        Examples
        --------
        An operator whose gradient is its output's gradient, passed through
        with no operator (as Sum's maker does for every input):

        >>> import caffe2op
        >>> fwd = caffe2op.OperatorDef(type="Identity", inputs=["x"], outputs=["y"])
        >>> maker = caffe2op.GradientMakerBase(fwd, ["y_grad"])
        >>> maker.set_dense(0, maker.GO(0))
        >>> maker.g_input()
        ['y_grad']
        """
        self._input_index(i)
        self._record(i, "dense", dense=_check_blob_name(self.def_.type, f"gradient of input {i}", name))

    def set_sparse(self, i, indices, values):
        """Record ``(indices, values)`` as input ``i``'s sparse gradient (Caffe2's ``SetSparse``).

        Parameters
        ----------
        i : int
            Input position.
        indices, values : str
            Blob names of the gradient's indices and values.

        Raises
        ------
        IndexError
            If there is no input ``i``.
        ValueError
            If input ``i`` already has a dense gradient.
        TypeError
            If a name is not a non-empty str.

        Examples
        --------
        An embedding lookup ``rows = table[ids]``: the table's gradient is
        sparse, row ``ids[k]`` receiving ``rows_grad[k]``, and needs no
        operator at all:

        >>> import caffe2op
        >>> fwd = caffe2op.OperatorDef(type="Lookup", inputs=["table", "ids"], outputs=["rows"])
        >>> maker = caffe2op.GradientMakerBase(fwd, ["rows_grad"])
        >>> maker.set_sparse(0, maker.I(1), maker.GO(0))
        >>> maker.g_input()
        [GradientSlice(indices='ids', values='rows_grad'), None]
        """
        self._input_index(i)
        self._record(
            i,
            "sparse",
            indices=_check_blob_name(self.def_.type, f"gradient indices of input {i}", indices),
            values=_check_blob_name(self.def_.type, f"gradient values of input {i}", values),
        )

    # --- gradients of the outputs (given) -------------------------------------

    def GO(self, i):
        """Name of output ``i``'s dense gradient.

        Parameters
        ----------
        i : int
            Output position.

        Returns
        -------
        str
            The blob name.

        Raises
        ------
        IndexError
            If there is no output ``i``.
        ValueError
            If output ``i``'s gradient is sparse or not provided.

        Examples
        --------
        >>> import caffe2op
        >>> fwd = caffe2op.OperatorDef(type="Mul", inputs=["a", "b"], outputs=["y"])
        >>> caffe2op.GradientMakerBase(fwd, ["y_grad"]).GO(0)
        'y_grad'
        >>> caffe2op.GradientMakerBase(fwd, [None]).GO(0)
        Traceback (most recent call last):
            ...
        ValueError: Mul: gradient of output 0 ('y') is either sparse or not provided (ZeroGradient gives ...
        """
        g = self.g_output[self._output_index(i)]
        if not isinstance(g, str):
            raise ValueError(
                f"{self.def_.type}: gradient of output {i} ({self.def_.outputs[i]!r}) is either sparse or "
                f"not provided (ZeroGradient gives a blob that receives no gradient an all-zero one)"
            )
        return g

    def _sparse_go(self, i):
        g = self.g_output[self._output_index(i)]
        if not isinstance(g, GradientSlice):
            raise ValueError(
                f"{self.def_.type}: gradient of output {i} ({self.def_.outputs[i]!r}) is either dense or not provided"
            )
        return g

    def GO_I(self, i):
        """Name of the indices of output ``i``'s sparse gradient.

        Parameters
        ----------
        i : int
            Output position.

        Returns
        -------
        str
            The blob name.

        Raises
        ------
        IndexError
            If there is no output ``i``.
        ValueError
            If output ``i``'s gradient is dense or not provided.

        Examples
        --------
        >>> import caffe2op
        >>> fwd = caffe2op.OperatorDef(type="Lookup", inputs=["table", "ids"], outputs=["rows"])
        >>> sparse = caffe2op.GradientSlice("rows_grad_indices", "rows_grad_values")
        >>> caffe2op.GradientMakerBase(fwd, [sparse]).GO_I(0)
        'rows_grad_indices'
        """
        return self._sparse_go(i).indices

    def GO_V(self, i):
        """Name of the values of output ``i``'s sparse gradient.

        Parameters
        ----------
        i : int
            Output position.

        Returns
        -------
        str
            The blob name.

        Raises
        ------
        IndexError
            If there is no output ``i``.
        ValueError
            If output ``i``'s gradient is dense or not provided.

        Examples
        --------
        >>> import caffe2op
        >>> fwd = caffe2op.OperatorDef(type="Lookup", inputs=["table", "ids"], outputs=["rows"])
        >>> sparse = caffe2op.GradientSlice("rows_grad_indices", "rows_grad_values")
        >>> caffe2op.GradientMakerBase(fwd, [sparse]).GO_V(0)
        'rows_grad_values'
        >>> caffe2op.GradientMakerBase(fwd, ["rows_grad"]).GO_V(0)
        Traceback (most recent call last):
            ...
        ValueError: Lookup: gradient of output 0 ('rows') is either dense or not provided
        """
        return self._sparse_go(i).values

    # --- building operators ---------------------------------------------------

    @staticmethod
    def single_gradient_def(op_type, name, inputs, outputs, **args):
        """A one-element list with a new operator definition (Caffe2's ``SingleGradientDef``).

        The definition is not checked against a schema here: the forward
        arguments are merged in afterwards, and the workspace checks it
        when it runs.

        Parameters
        ----------
        op_type : str
            Type of the gradient operator.
        name : str
            Operator name (usually ``""``).
        inputs, outputs : str or list of str
            Blob names.
        **args
            Arguments of the gradient operator.

        Returns
        -------
        list of OperatorDef
            ``[OperatorDef(type=op_type, ...)]``.

        Examples
        --------
        >>> import caffe2op
        >>> [op] = caffe2op.GradientMakerBase.single_gradient_def("ConstantFill", "", ["x"], ["x_grad"], value=0.0)
        >>> op.describe()
        'ConstantFill(x) -> (x_grad)  value=0.0'
        """
        return [OperatorDef(type=op_type, inputs=inputs, outputs=outputs, args=args, name=name)]

    def get_gradient_defs(self):
        """The gradient operators; override this (recording input gradients with ``GI``...).

        Returns
        -------
        list of OperatorDef
            The operators that compute the input gradients.

        Raises
        ------
        NotImplementedError
            In the base class.

        Examples
        --------
        A maker for ``y = a * b`` (element-wise): one ``MulGradient``
        operator computes both input gradients.  The maker's operators are
        returned as they are; :func:`get_gradient_defs` then adds the
        forward operator's arguments and device:

        >>> import caffe2op
        >>> class GetDocMulGradient(caffe2op.GradientMakerBase):
        ...     def get_gradient_defs(self):
        ...         return self.single_gradient_def(
        ...             "DocMulGradient", "", [self.I(0), self.I(1), self.GO(0)], [self.GI(0), self.GI(1)]
        ...         )
        >>> fwd = caffe2op.OperatorDef(type="DocMul", inputs=["a", "b"], outputs=["y"])
        >>> [op] = GetDocMulGradient(fwd, ["y_grad"]).get_gradient_defs()
        >>> op.describe()
        'DocMulGradient(a, b, y_grad) -> (a_grad, b_grad)'
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement get_gradient_defs()")

    def g_input(self):
        """The input gradients recorded so far, one entry per forward input.

        Returns
        -------
        list
            None, a dense gradient name, or a :class:`GradientSlice` per input.

        Raises
        ------
        ValueError
            If a sparse gradient has its indices or its values only.

        Examples
        --------
        >>> import caffe2op
        >>> fwd = caffe2op.OperatorDef(type="Mul", inputs=["a", "b"], outputs=["y"])
        >>> maker = caffe2op.GradientMakerBase(fwd, ["y_grad"])
        >>> maker.g_input()  # nothing recorded yet
        [None, None]
        >>> _ = maker.GI(0)
        >>> maker.g_input()
        ['a_grad', None]
        """
        result = []
        for i, g in enumerate(self._g_input):
            if g is None:
                result.append(None)
            elif g[0] == "dense":
                result.append(g[1])
            else:
                if g[1] is None or g[2] is None:
                    raise ValueError(
                        f"{self.def_.type}: the sparse gradient of input {i} ({self.def_.inputs[i]!r}) needs both "
                        f"indices and values, got indices={g[1]!r}, values={g[2]!r}"
                    )
                result.append(GradientSlice(g[1], g[2]))
        return result

    def get(self):
        """Run the maker: ``(gradient operators, g_input)``, the operators flagged ``is_gradient_op``.

        Returns
        -------
        tuple of (list of OperatorDef, list)
            The gradient operators and one gradient (or None) per forward input.

        Examples
        --------
        :func:`caffe2op.get_gradient_defs` calls this, then copies the
        forward operator's arguments and device onto the operators:

        >>> import caffe2op
        >>> fwd = caffe2op.create_operator("ZeroGradient", "h", [])
        >>> [op], g_input = caffe2op.GetZeroGradientOpGradient(fwd, []).get()
        >>> op.describe(), op.is_gradient_op, g_input
        ('ConstantFill(h) -> (h_grad)  value=0.0', True, ['h_grad'])
        """
        ops = self.get_gradient_defs()
        ops = [] if ops is None else ops
        for op in ops if isinstance(ops, (list, tuple)) else ():
            if isinstance(op, OperatorDef):
                op.is_gradient_op = True
        return ops, self.g_input()


class NoGradient(GradientMakerBase):
    """The maker of :func:`no_gradient`: no operators, no input gradients."""

    def get_gradient_defs(self):
        """No operators.

        Returns
        -------
        list
            An empty list.
        """
        return []


class ThrowInTheTowelIfGradientIsCalled(GradientMakerBase):
    """The maker of :func:`should_not_do_gradient`: asking for a gradient raises ``RuntimeError``."""

    def get(self):
        """Refuse.

        Raises
        ------
        RuntimeError
            Always.
        """
        raise RuntimeError(f"One should not call gradient for operator {self.def_.type}.")


class GradientNotImplementedYet(GradientMakerBase):
    """The maker of :func:`gradient_not_implemented_yet`: asking for a gradient raises ``NotImplementedError``."""

    def get(self):
        """Refuse.

        Raises
        ------
        NotImplementedError
            Always.
        """
        raise NotImplementedError(f"Operator {self.def_.type} should have a gradient but is not implemented yet.")


class _FunctionMaker(GradientMakerBase):
    """Adapts a Caffe2-Python-style function ``f(op_def, g_output) -> (grad_ops, g_input)``."""

    function = None

    def get(self):
        result = type(self).function(self.def_, list(self.g_output))
        if not isinstance(result, tuple) or len(result) != 2:
            raise TypeError(
                f"{self.def_.type}: gradient function {type(self).function.__name__} must return "
                f"(grad_ops, g_input), got {type(result).__name__}"
            )
        ops, g_input = result
        if ops is None:
            ops = []
        elif isinstance(ops, OperatorDef):
            ops = [ops]
        # get_gradient_defs checks the operators and flags them is_gradient_op.
        return ops, g_input


_GRADIENT_MAKERS = _tables.Table("gradient maker", bumps_generation=False)


def _check_op_type(where, op_type):
    if not isinstance(op_type, str) or not op_type:
        raise TypeError(f"{where}: operator type must be a non-empty str, got {op_type!r}")
    return op_type


def register_gradient(op_type):
    """Register the gradient maker of ``op_type`` (a decorator).

    Decorate either a :class:`GradientMakerBase` subclass (Caffe2's C++
    ``REGISTER_GRADIENT``) or a plain function
    ``f(op_def, g_output) -> (grad_ops, g_input)`` (Caffe2 Python's
    ``GradientRegistry.RegisterGradient``), where ``grad_ops`` is a list of
    :class:`~caffe2op.OperatorDef` (or one, or None) and ``g_input`` has one
    gradient (None, a name or a :class:`GradientSlice`) per forward input.
    As in Caffe2, a class's operators get the forward operator's arguments,
    device and engine and are flagged ``is_gradient_op``; a function's are
    used as it made them.  A later registration for the same type replaces
    the earlier one.

    Parameters
    ----------
    op_type : str
        The forward operator type.

    Returns
    -------
    callable
        The decorator; it returns the decorated class or function unchanged.

    Raises
    ------
    TypeError
        If ``op_type`` is not a non-empty str, or the decorated object is
        neither a GradientMakerBase subclass nor callable.

    Examples
    --------
    >>> import caffe2op
    >>> @caffe2op.register_gradient("DocAddOne")
    ... def add_one_gradient(op_def, g_output):
    ...     return [], [g_output[0]]          # d(x + 1)/dx = 1: pass the gradient through
    >>> fwd = caffe2op.OperatorDef(type="DocAddOne", inputs=["x"], outputs=["y"])
    >>> caffe2op.get_gradient_defs(fwd, ["y_grad"])
    ([], ['y_grad'])
    """
    _check_op_type("register_gradient", op_type)

    def decorate(maker):
        if isinstance(maker, type) and issubclass(maker, GradientMakerBase):
            _GRADIENT_MAKERS.set(op_type, maker)
        elif callable(maker) and not isinstance(maker, type):
            _GRADIENT_MAKERS.set(
                op_type, type(f"FunctionMaker[{op_type}]", (_FunctionMaker,), {"function": staticmethod(maker)})
            )
        else:
            raise TypeError(
                f"register_gradient({op_type!r}): expected a GradientMakerBase subclass or a function "
                f"f(op_def, g_output) -> (grad_ops, g_input), got {maker!r}"
            )
        return maker

    return decorate


def no_gradient(op_type):
    """Declare that ``op_type`` has no gradient: gradients stop there, without error (Caffe2's ``NO_GRADIENT``).

    Parameters
    ----------
    op_type : str
        The operator type.

    Returns
    -------
    type
        The registered maker class.

    Raises
    ------
    TypeError
        If ``op_type`` is not a non-empty str.

    Examples
    --------
    >>> import caffe2op
    >>> _ = caffe2op.no_gradient("DocPrint")
    >>> caffe2op.get_gradient_defs(caffe2op.OperatorDef(type="DocPrint", inputs=["x"]), [])
    ([], [None])
    """
    _check_op_type("no_gradient", op_type)
    _GRADIENT_MAKERS.set(op_type, NoGradient)
    return NoGradient


def should_not_do_gradient(op_type):
    """Declare that asking for the gradient of ``op_type`` is an error (Caffe2's ``SHOULD_NOT_DO_GRADIENT``).

    :func:`get_gradient_defs` then raises ``RuntimeError("One should not
    call gradient for operator <type>.")``.

    Parameters
    ----------
    op_type : str
        The operator type.

    Returns
    -------
    type
        The registered maker class.

    Raises
    ------
    TypeError
        If ``op_type`` is not a non-empty str.

    Examples
    --------
    >>> import caffe2op
    >>> op = caffe2op.create_operator("SparseNormalize", ["w", "idx"], "w")
    >>> try:
    ...     caffe2op.get_gradient_defs(op, ["w_grad"])
    ... except RuntimeError as err:
    ...     print(err)
    One should not call gradient for operator SparseNormalize.
    """
    _check_op_type("should_not_do_gradient", op_type)
    _GRADIENT_MAKERS.set(op_type, ThrowInTheTowelIfGradientIsCalled)
    return ThrowInTheTowelIfGradientIsCalled


def gradient_not_implemented_yet(op_type):
    """Declare that ``op_type`` should have a gradient that is not written yet (``GRADIENT_NOT_IMPLEMENTED_YET``).

    :func:`get_gradient_defs` then raises ``NotImplementedError`` (a
    ``RuntimeError``) saying so.

    Parameters
    ----------
    op_type : str
        The operator type.

    Returns
    -------
    type
        The registered maker class.

    Raises
    ------
    TypeError
        If ``op_type`` is not a non-empty str.

    Examples
    --------
    >>> import caffe2op
    >>> _ = caffe2op.gradient_not_implemented_yet("DocLater")
    >>> try:
    ...     caffe2op.get_gradient_defs(caffe2op.OperatorDef(type="DocLater", inputs="x", outputs="y"), ["y_grad"])
    ... except NotImplementedError as err:
    ...     print(err)
    Operator DocLater should have a gradient but is not implemented yet.
    """
    _check_op_type("gradient_not_implemented_yet", op_type)
    _GRADIENT_MAKERS.set(op_type, GradientNotImplementedYet)
    return GradientNotImplementedYet


def registered_gradients():
    """Sorted operator types that have a registered gradient maker (of any flavour).

    Returns
    -------
    list of str
        The types.

    Examples
    --------
    >>> import caffe2op
    >>> {"Sum", "StopGradient", "ZeroGradient"} <= set(caffe2op.registered_gradients())
    True
    """
    return sorted(_GRADIENT_MAKERS.snapshot())


def gradient_maker_for(op_type):
    """The registered maker class of ``op_type``, or None."""
    return _GRADIENT_MAKERS.get(op_type)


def describe_gradient(op_type):
    """What the gradient registered for ``op_type`` does, as reStructuredText (for its documentation page).

    The operator pages of the documentation call this: a maker class or
    function is named (linked when it is public) with the first line of its
    own docstring; the three declarations say what they mean.

    Parameters
    ----------
    op_type : str
        The operator type.

    Returns
    -------
    str or None
        The description, or None when no gradient maker is registered.

    Examples
    --------
    >>> from caffe2op.gradient import describe_gradient
    >>> print(describe_gradient("ZeroGradient"))
    Gradient maker: :class:`~caffe2op.GetZeroGradientOpGradient` (a class).
    <BLANKLINE>
    The gradient maker of ZeroGradient: ``ConstantFill([X], [X_grad], value=0.0)``.
    >>> print(describe_gradient("SparseNormalize"))  # doctest: +ELLIPSIS
    Asking for a gradient raises :class:`RuntimeError` (``SHOULD_NOT_DO_GRADIENT``, ...
    >>> describe_gradient("NoSuchOperator") is None
    True
    """
    maker = _GRADIENT_MAKERS.get(op_type)
    if maker is None:
        return None
    if issubclass(maker, NoGradient):
        return (
            "No gradient (``NO_GRADIENT``, declared with :func:`caffe2op.no_gradient`): the backward pass "
            "stops here without an error, and the inputs get no gradient from this operator."
        )
    if issubclass(maker, ThrowInTheTowelIfGradientIsCalled):
        return (
            "Asking for a gradient raises :class:`RuntimeError` (``SHOULD_NOT_DO_GRADIENT``, declared with "
            ":func:`caffe2op.should_not_do_gradient`): the operator must not be part of a net that is "
            "differentiated."
        )
    if issubclass(maker, GradientNotImplementedYet):
        return (
            "Not implemented yet (``GRADIENT_NOT_IMPLEMENTED_YET``, declared with "
            ":func:`caffe2op.gradient_not_implemented_yet`): a backward pass through this operator raises "
            ":class:`NotImplementedError`."
        )
    import caffe2op  # (the package imports this module: look it up when called)

    if issubclass(maker, _FunctionMaker):
        target, kind, role = maker.function, "a function", "func"
    else:
        target, kind, role = maker, "a class", "class"
    name = getattr(target, "__name__", repr(target))
    if name in caffe2op.__all__ and getattr(caffe2op, name, None) is target:
        ref = f":{role}:`~caffe2op.{name}`"
    else:
        ref = f"``{name}``"
    lines = [f"Gradient maker: {ref} ({kind})."]
    # Its own docstring only: a maker class without one would otherwise show GradientMakerBase's.
    summary = (target.__doc__ or "").strip().splitlines()
    if summary and summary[0].strip():
        lines += ["", summary[0].strip()]
    return "\n".join(lines)


def _verify_forward_op(op_def):
    """Check the forward operator against its schema, as Caffe2's ``GradientMakerBase::VerifyOp`` did."""
    schema = get_schema(op_def.type, None)
    if schema is None:
        return
    try:
        schema.verify(op_def)
    except SchemaError as err:
        raise type(err)(
            f"{op_def.type}: the forward operator does not pass its schema, so it has no gradient "
            f"(Caffe2's GradientMakerBase::VerifyOp): {err}. Operator: {op_def.describe()}"
        ) from err


def get_gradient_defs(op_def, g_output):
    """The gradient operators of one forward operator, and the gradients of its inputs.

    Checks ``op_def`` against its schema (Caffe2's ``VerifyOp``) and calls
    the maker registered for ``op_def.type``.  For a maker class, as
    Caffe2's C++ ``GetGradientForOp``: copies the forward operator's
    ``device_option`` (when set), ``engine`` (when set) and arguments onto
    every gradient operator (an argument the gradient operator sets itself
    keeps its own value) and flags them ``is_gradient_op``.  The operators
    of a gradient function are kept as the function made them, as in
    Caffe2's Python ``GradientRegistry``.  Either way there must be one
    input gradient per forward input.  The returned operators are new
    objects: the maker's own are never modified.

    Parameters
    ----------
    op_def : OperatorDef
        The forward operator.
    g_output : sequence
        One entry per output of ``op_def``: its gradient's blob name, a
        :class:`GradientSlice` (or a 2-tuple ``(indices, values)``), or None.

    Returns
    -------
    grad_ops : list of OperatorDef
        The gradient operators.
    g_input : list
        One entry per input of ``op_def``: a dense gradient name, a
        :class:`GradientSlice`, or None.

    Raises
    ------
    GradientNotRegisteredError
        If no maker is registered for ``op_def.type``.
    RuntimeError
        If the type is registered with :func:`should_not_do_gradient`
        (``NotImplementedError``, a subclass, for
        :func:`gradient_not_implemented_yet`).
    ValueError
        If ``g_output`` has the wrong length, the maker asks for a missing
        output gradient, mixes dense and sparse for an input, or returns a
        ``g_input`` of the wrong length.
    TypeError
        If ``op_def`` is not an OperatorDef, ``g_output`` is not a list, or
        the maker returns something other than operator definitions and a
        list of gradients.
    SchemaError
        If ``op_def`` breaks its operator's schema.

    Examples
    --------
    >>> import caffe2op
    >>> fwd = caffe2op.create_operator("ZeroGradient", "h", [])
    >>> ops, g_input = caffe2op.get_gradient_defs(fwd, [])
    >>> ops[0].describe(), ops[0].is_gradient_op, g_input
    ('ConstantFill(h) -> (h_grad)  value=0.0', True, ['h_grad'])
    """
    if not isinstance(op_def, OperatorDef):
        raise TypeError(f"get_gradient_defs: expected an OperatorDef, got {type(op_def).__name__}")
    if isinstance(g_output, (str, bytes, dict)) or not hasattr(g_output, "__iter__"):
        raise TypeError(
            f"{op_def.type}: g_output must be a list with one gradient (a blob name, a GradientSlice or None) "
            f"per output, got {type(g_output).__name__} ({g_output!r})"
        )
    maker_cls = _GRADIENT_MAKERS.get(op_def.type)
    if maker_cls is None:
        message = (
            f"No gradient maker is registered for operator type {op_def.type!r}. "
            f"Register one with caffe2op.register_gradient({op_def.type!r}), or declare it with "
            f"caffe2op.no_gradient({op_def.type!r}) if gradients should stop there."
        )
        close = difflib.get_close_matches(op_def.type, sorted(_GRADIENT_MAKERS.snapshot()), n=3, cutoff=0.6)
        if close:
            message += " Did you mean: " + ", ".join(close) + "?"
        raise GradientNotRegisteredError(message)
    _verify_forward_op(op_def)
    maker = maker_cls(op_def, g_output)
    ops, g_input = maker.get()
    # Caffe2 returns the operators of a Python gradient function as the function made them; only
    # its C++ makers (our GradientMakerBase classes) copy the forward operator's settings.
    is_function = issubclass(maker_cls, _FunctionMaker)
    if isinstance(ops, OperatorDef):
        ops = [ops]
    try:
        ops = list(ops)
    except TypeError:
        raise TypeError(
            f"{op_def.type}: the gradient maker must return a list of OperatorDef, got {type(ops).__name__}"
        ) from None
    grad_ops = []
    for op in ops:
        if not isinstance(op, OperatorDef):
            raise TypeError(
                f"{op_def.type}: the gradient maker returned {type(op).__name__} ({op!r}) among its operators; "
                f"expected OperatorDef"
            )
        # A fresh object: the backward pass renames outputs in place.
        is_gradient_op = op.is_gradient_op
        op = dataclasses.replace(op, inputs=list(op.inputs), outputs=list(op.outputs), args=dict(op.args))
        op.is_gradient_op = is_gradient_op
        if not is_function:
            if maker_cls.copy_device_option and op_def.device_option is not None:
                op.device_option = op_def.device_option
            if maker_cls.copy_engine and op_def.engine:
                op.engine = op_def.engine
            if maker_cls.copy_arguments and op_def.args:
                op.args = {**op_def.args, **op.args}
            op.is_gradient_op = True
        grad_ops.append(op)
    if isinstance(g_input, (str, bytes, dict)):
        raise TypeError(
            f"{op_def.type}: the gradient maker must return g_input as a list with one gradient per input, "
            f"got {type(g_input).__name__} ({g_input!r})"
        )
    try:
        g_input = list(g_input)
    except TypeError:
        raise TypeError(
            f"{op_def.type}: the gradient maker must return g_input as a list, got {type(g_input).__name__}"
        ) from None
    if len(g_input) != len(op_def.inputs):
        raise ValueError(
            f"{op_def.type}: the gradient maker returned {len(g_input)} input gradients for {len(op_def.inputs)} inputs"
        )
    g_input = [
        _as_gradient(op_def.type, f"gradient of input {i} ({name!r})", g)
        for i, (name, g) in enumerate(zip(op_def.inputs, g_input, strict=True))
    ]
    return grad_ops, g_input


_tables.add_known_types_provider(registered_gradients)
