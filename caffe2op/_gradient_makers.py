# SPDX-License-Identifier: BSD-3-Clause
"""Gradient makers: :class:`GradientMakerBase`, the three declaration makers and the function adapter.

The machinery a maker is written with (``I``, ``O``, ``GI``, ``GO``...,
Caffe2's C++ ``GradientMakerBase``), the gradient names it deals in
(:class:`GradientSlice`) and the makers that :func:`caffe2op.no_gradient`,
:func:`caffe2op.should_not_do_gradient` and
:func:`caffe2op.gradient_not_implemented_yet` register.  The registry is in
``_gradient_registry``; :func:`caffe2op.get_gradient_defs`, which runs a
maker, is in :mod:`caffe2op.gradient`, which re-exports every public name
defined here.
"""

import collections

from .core import OperatorDef
from .errors import _ReadableKeyError

__all__ = []  # the public names are caffe2op.gradient's


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


def _as_gradients(op_type, kind, names, gradients):
    """:func:`_as_gradient` of each gradient (one per blob of ``names``, a ``kind``: "input" or "output").

    None and non-empty names, nearly all of them in a backward pass, are kept as they are without a call.
    """
    result = []
    for i, g in enumerate(gradients):
        if g is not None and (type(g) is not str or not g):
            g = _as_gradient(op_type, f"gradient of {kind} {i} ({names[i]!r})", g)
        result.append(g)
    return result


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
        if type(op_def) is not OperatorDef and not isinstance(op_def, OperatorDef):
            raise TypeError(f"{type(self).__name__}: expected an OperatorDef, got {type(op_def).__name__}")
        g_output = g_output.copy() if type(g_output) is list else list(g_output)
        if len(g_output) != len(op_def.outputs):
            raise ValueError(
                f"{op_def.type}: g_output must have one entry per output ({len(op_def.outputs)}), got {len(g_output)}"
            )
        self.def_ = op_def
        self.g_output = _as_gradients(op_def.type, "output", op_def.outputs, g_output)
        # Per input: None, ("dense", name) or ("sparse", indices or None, values or None).
        self._g_input = [None] * len(op_def.inputs)

    # --- names of the forward operator ---------------------------------------

    def _input_index(self, i):
        if type(i) is int and 0 <= i < len(self.def_.inputs):
            return i
        if not isinstance(i, int) or not 0 <= i < len(self.def_.inputs):
            raise IndexError(f"{self.def_.type}: input index {i!r} out of range ({len(self.def_.inputs)} inputs)")
        return i

    def _output_index(self, i):
        if type(i) is int and 0 <= i < len(self.def_.outputs):
            return i
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
        for op in ops if type(ops) is list or isinstance(ops, (list, tuple)) else ():
            if type(op) is OperatorDef or isinstance(op, OperatorDef):
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
