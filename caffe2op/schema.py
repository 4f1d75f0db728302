# SPDX-License-Identifier: BSD-3-Clause
"""Operator schemas: what an operator accepts, stated once and checked before it runs.

A schema gives the number of inputs and outputs, their names and docs, the
in-place rules (Caffe2's ``AllowInplace``, ``EnforceInplace``,
``EnforceOneToOneInplace``), type and shape inference
(``IdenticalTypeAndShape``) and the arguments with their types, defaults,
validators and docs.  :func:`caffe2op.create_operator` checks a definition
against its schema at once; the workspace checks hand-built definitions
before it instantiates them.
"""

import dataclasses
import math
import numbers
import types

import numpy as np

from . import _tables
from .errors import SchemaError, SchemaTypeError, UnknownOperatorError, unknown_operator_message

__all__ = [
    "Argument",
    "OpSchema",
    "get_schema",
    "register_schema",
    "registered_schemas",
    "non_negative_finite",
]

_REQUIRED = object()
_SCHEMAS = _tables.Table("schema")


def non_negative_finite(value):
    """Validator: the value is finite and >= 0.

    Parameters
    ----------
    value : float
        The argument's value.

    Returns
    -------
    str or None
        None when the value is valid, else the rule it breaks.

    Examples
    --------
    >>> from caffe2op.schema import non_negative_finite
    >>> non_negative_finite(2.0) is None, non_negative_finite(float("nan"))
    (True, 'must be finite and >= 0')
    """
    if not math.isfinite(value) or value < 0:
        return "must be finite and >= 0"
    return None


_TYPE_NAMES = {bool: "a bool", int: "an int", float: "a real number", str: "a str"}


def _type_name(arg_type):
    if arg_type in _TYPE_NAMES:
        return _TYPE_NAMES[arg_type]
    if isinstance(arg_type, types.GenericAlias):
        return f"a list of {_TYPE_NAMES[arg_type.__args__[0]][2:]}s".replace("a list of n ", "a list of ")
    return getattr(arg_type, "__name__", str(arg_type))


def _convert_scalar(value, arg_type):
    """Return ``value`` converted to ``arg_type``, or raise TypeError."""
    if arg_type is float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError
        return float(value)
    if arg_type is int:
        # True is an Integral too, but axis=True is a mistake, not axis 1.
        if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
            return int(value)
        raise TypeError
    if arg_type is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        # Caffe2 stored bools as ints: use_max_norm=1 is fine, 2 is not.
        if isinstance(value, numbers.Integral) and int(value) in (0, 1):
            return bool(value)
        raise TypeError
    if arg_type is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if arg_type is object:
        return value
    raise AssertionError(f"unsupported argument type {arg_type!r}")


@dataclasses.dataclass(frozen=True)
class Argument:
    """One operator argument: name, type, default, validator and doc.

    Parameters
    ----------
    name : str
        Argument name.
    type : type
        ``bool``, ``int``, ``float``, ``str``, ``list[int]``, ``list[float]``
        or ``object`` (anything).  ``float`` accepts ints, ``bool`` accepts
        0 and 1 (Caffe2 stored bools as ints).
    default : object, optional
        Value used when the argument is not given.  Omit it for arguments that
        are optional without a default (the operator sees None) or required.
    doc : str, default ""
        What the argument means.
    validator : callable, optional
        ``validator(value) -> str | None``: None if the converted value is
        valid, else the rule it breaks (e.g. ``"must be >= 0"``).
    required : bool, default False
        Whether the argument must be given.

    Examples
    --------
    >>> from caffe2op import Argument
    >>> Argument("scale", float, default=1.0, doc="Multiplier.").convert("Scale", 2)
    2.0
    """

    name: str
    type: object = object
    default: object = None
    doc: str = ""
    validator: object = None
    required: bool = False

    def convert(self, op_type, value):
        """Check ``value`` and return it converted to the argument's type.

        Parameters
        ----------
        op_type : str
            Operator type, for the error message.
        value : object
            The given value.

        Returns
        -------
        object
            The converted value.

        Raises
        ------
        SchemaTypeError
            If the value has the wrong type.
        SchemaError
            If the validator rejects it.

        Examples
        --------
        >>> from caffe2op import Argument
        >>> Argument("use_max_norm", bool, default=True).convert("SparseNormalize", 1)
        True
        >>> Argument("norm", float).convert("SparseNormalize", "big")
        Traceback (most recent call last):
            ...
        caffe2op.errors.SchemaTypeError: SparseNormalize: argument 'norm' must be a real number, got str ('big')
        """
        try:
            if type(value) is self.type:  # the common case: nothing to convert
                converted = value
            elif isinstance(self.type, types.GenericAlias):
                if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                    raise TypeError
                item_type = self.type.__args__[0]
                converted = [_convert_scalar(v, item_type) for v in value]
            else:
                converted = _convert_scalar(value, self.type)
        except OverflowError:  # float() of an int beyond float's range: a value error, not a kind error
            digits = len(str(abs(int(value))))
            raise SchemaError(
                f"{op_type}: argument {self.name!r} must be finite, got an int of {digits} digits"
            ) from None
        except TypeError:
            raise SchemaTypeError(
                f"{op_type}: argument {self.name!r} must be {_type_name(self.type)}, "
                f"got {type(value).__name__} ({value!r})"
            ) from None
        if self.validator is not None:
            problem = self.validator(converted)
            if problem:
                raise SchemaError(f"{op_type}: argument {self.name!r} {problem}, got {value!r}")
        return converted


def _pair_rule(rule):
    """Normalise an in-place rule: pairs, a callable (in, out) -> bool, or None."""
    if rule is None:
        return lambda i, o: False
    if callable(rule):
        return rule
    pairs = frozenset((int(i), int(o)) for i, o in rule)
    return lambda i, o: (i, o) in pairs


def _count_range(count):
    if isinstance(count, numbers.Integral):
        return int(count), int(count)
    low, high = count
    return int(low), (math.inf if high is None else int(high))


class OpSchema:
    """The declared interface of an operator type.

    Parameters
    ----------
    op_type : str
        Operator type the schema describes.
    num_inputs : int or (int, int or None), optional
        Exact count or ``(min, max)`` range of inputs; ``max=None`` means
        unbounded (Caffe2's ``NumInputs(1, INT_MAX)``).  Defaults to the
        number of named ``inputs`` (1 when none are named).
    num_outputs : int or (int, int or None), optional
        Same for outputs (defaults to the number of named ``outputs``, 1
        when none are named).
    inputs : sequence of (str, str), optional
        ``(name, doc)`` of each input, in order.
    outputs : sequence of (str, str), optional
        ``(name, doc)`` of each output, in order.
    args : sequence of Argument, optional
        The arguments the operator accepts.
    allow_inplace : iterable of (int, int) or callable, optional
        ``(input, output)`` index pairs that may name the same blob
        (Caffe2's ``AllowInplace``).
    enforce_inplace : iterable of (int, int) or callable, optional
        Pairs that must name the same blob (``EnforceInplace``).
    allow_one_to_one_inplace : bool, default False
        Input ``i`` may be output ``i`` for every ``i`` (``AllowOneToOneInplace``).
    enforce_one_to_one_inplace : bool, default False
        Input ``i`` must be output ``i`` for every ``i`` that has both
        (``EnforceOneToOneInplace``).
    identical_type_and_shape : bool, default False
        Every output has the dtype and shape of input 0
        (``IdenticalTypeAndShape``).
    doc : str, default ""
        What the operator does (reStructuredText; shown on its docs page).
    formula : str, default ""
        The computation, as a LaTeX math expression for the docs.
    example : str, default ""
        A short doctest-style example for the docs.
    validate : callable, optional
        ``validate(op_def, args) -> str | None``: a rule across several
        arguments or inputs (``args`` are the converted values with defaults);
        it returns the broken rule, reported as a :class:`SchemaError`.

    Examples
    --------
    >>> from caffe2op import Argument, OpSchema
    >>> schema = OpSchema(
    ...     "Scale", num_inputs=1, num_outputs=1,
    ...     inputs=[("X", "input")], outputs=[("Y", "X * scale")],
    ...     args=[Argument("scale", float, default=1.0, doc="Multiplier.")],
    ...     allow_inplace=[(0, 0)], identical_type_and_shape=True,
    ...     doc="Multiply by a constant.")
    >>> schema.input_range, schema.arg("scale").default
    ((1, 1), 1.0)
    """

    def __init__(
        self,
        op_type,
        *,
        num_inputs=None,
        num_outputs=None,
        inputs=(),
        outputs=(),
        args=(),
        allow_inplace=None,
        enforce_inplace=None,
        allow_one_to_one_inplace=False,
        enforce_one_to_one_inplace=False,
        identical_type_and_shape=False,
        doc="",
        formula="",
        example="",
        validate=None,
    ):
        if not isinstance(op_type, str) or not op_type:
            raise TypeError(f"OpSchema: op_type must be a non-empty str, got {op_type!r}")
        self.op_type = op_type
        self.inputs = tuple((str(n), str(d)) for n, d in inputs)
        self.outputs = tuple((str(n), str(d)) for n, d in outputs)
        # Counts not given are those of the named inputs and outputs (1 when none are named).
        self._counts_given = (num_inputs is not None, num_outputs is not None)
        self.min_input, self.max_input = _count_range(len(self.inputs) or 1 if num_inputs is None else num_inputs)
        self.min_output, self.max_output = _count_range(len(self.outputs) or 1 if num_outputs is None else num_outputs)
        self.args = tuple(args)
        for a in self.args:
            if not isinstance(a, Argument):
                raise TypeError(f"OpSchema({op_type}): args must be Argument objects, got {type(a).__name__}")
        self._args = {a.name: a for a in self.args}
        self.allow_inplace = allow_inplace
        self.enforce_inplace = enforce_inplace
        self.allow_one_to_one_inplace = bool(allow_one_to_one_inplace)
        self.enforce_one_to_one_inplace = bool(enforce_one_to_one_inplace)
        self.identical_type_and_shape = bool(identical_type_and_shape)
        self.doc = doc
        self.formula = formula
        self.example = example
        self.validate = validate
        allowed, enforced = _pair_rule(allow_inplace), _pair_rule(enforce_inplace)
        one_to_one_allowed = self.allow_one_to_one_inplace or self.enforce_one_to_one_inplace
        self._inplace_allowed = lambda i, o: allowed(i, o) or (one_to_one_allowed and i == o)
        self._inplace_enforced = lambda i, o: enforced(i, o) or (self.enforce_one_to_one_inplace and i == o)
        self._defaults = {a.name: a.default for a in self.args if not a.required}

    @property
    def input_range(self):
        """``(min, max)`` number of inputs (``max`` may be ``math.inf``)."""
        return self.min_input, self.max_input

    @property
    def output_range(self):
        """``(min, max)`` number of outputs (``max`` may be ``math.inf``)."""
        return self.min_output, self.max_output

    def arg(self, name):
        """The :class:`Argument` called ``name``.

        Parameters
        ----------
        name : str
            Argument name.

        Returns
        -------
        Argument
            Its declaration.

        Raises
        ------
        KeyError
            If the schema has no such argument.

        Examples
        --------
        >>> import caffe2op
        >>> caffe2op.get_schema("SparseNormalize").arg("norm").default
        1.0
        """
        return self._args[name]

    def inplace_allowed(self, input_index, output_index):
        """Whether input ``input_index`` may be the same blob as output ``output_index``.

        Parameters
        ----------
        input_index, output_index : int
            Positions of the input and output.

        Returns
        -------
        bool
            True if in place is allowed or enforced for this pair.

        Examples
        --------
        >>> import caffe2op
        >>> caffe2op.get_schema("StopGradient").inplace_allowed(0, 0)
        True
        >>> caffe2op.get_schema("Sum").inplace_allowed(1, 0)
        False
        """
        return self._inplace_allowed(input_index, output_index) or self._inplace_enforced(input_index, output_index)

    def inplace_enforced(self, input_index, output_index):
        """Whether input ``input_index`` must be the same blob as output ``output_index``.

        Parameters
        ----------
        input_index, output_index : int
            Positions of the input and output.

        Returns
        -------
        bool
            True if the pair must be in place.

        Examples
        --------
        >>> import caffe2op
        >>> caffe2op.get_schema("SparseNormalize").inplace_enforced(0, 0)
        True
        >>> caffe2op.get_schema("StopGradient").inplace_enforced(0, 0)
        False
        """
        return self._inplace_enforced(input_index, output_index)

    def _count_disagreement(self):
        """Where given counts and named inputs/outputs disagree, say how; else None."""
        for what, names, low, high in (
            ("inputs", self.inputs, self.min_input, self.max_input),
            ("outputs", self.outputs, self.min_output, self.max_output),
        ):
            # A variadic schema may name only its first inputs; it must not name more than it takes.
            if names and not (len(names) <= high and (len(names) >= low or high == math.inf)):
                rule = "num_inputs" if what == "inputs" else "num_outputs"
                span = str(low) if low == high else f"{low}..{'inf' if high == math.inf else high}"
                return (
                    f"{self.op_type}: {len(names)} named {what} ({', '.join(n for n, _ in names)}) but "
                    f"{rule}={span}; make them agree (or omit {rule}: it defaults to the named count)"
                )
        return None

    def _count_problem(self, what, count, low, high):
        if low <= count <= high:
            return None
        if low == high:
            expected, plural = f"{low}", low != 1
        elif high == math.inf:
            expected, plural = f"at least {low}", low != 1
        else:
            expected, plural = f"{low} to {high}", True
        rule = "NumInputs" if what == "inputs" else "NumOutputs"
        noun = what if plural else what[:-1]
        return f"{self.op_type}: expects {expected} {noun}, got {count} ({rule})"

    def verify(self, op_def, *, allow_unknown_args=None):
        """Check an operator definition and return its arguments with defaults filled in.

        Parameters
        ----------
        op_def : OperatorDef
            The definition to check.
        allow_unknown_args : bool, optional
            Accept arguments the schema does not declare.  Defaults to
            ``op_def.is_gradient_op``: gradient operators carry every argument
            of their forward operator, as in Caffe2.

        Returns
        -------
        dict
            Every declared argument's value (converted) or default, plus any
            accepted unknown arguments as given.

        Raises
        ------
        SchemaError
            If a count, in-place rule, argument value or argument name is wrong.
        SchemaTypeError
            If an argument has the wrong type.

        Examples
        --------
        >>> import caffe2op
        >>> op = caffe2op.OperatorDef(type="SparseNormalize", inputs=["w", "idx"], outputs=["w"], args={"norm": 2})
        >>> caffe2op.get_schema("SparseNormalize").verify(op)
        {'use_max_norm': True, 'norm': 2.0}
        """
        n_in, n_out = len(op_def.inputs), len(op_def.outputs)
        problem = self._count_problem("inputs", n_in, self.min_input, self.max_input) or self._count_problem(
            "outputs", n_out, self.min_output, self.max_output
        )
        if problem:
            raise SchemaError(problem)
        for i, in_name in enumerate(op_def.inputs):
            for o, out_name in enumerate(op_def.outputs):
                if in_name == out_name and not self.inplace_allowed(i, o):
                    raise SchemaError(
                        f"{self.op_type}: input {i} and output {o} are the same blob ({in_name!r}), "
                        f"which {self.op_type} does not allow (AllowInplace)"
                    )
                if in_name != out_name and self._inplace_enforced(i, o):
                    rule = "EnforceOneToOneInplace" if self.enforce_one_to_one_inplace and i == o else "EnforceInplace"
                    raise SchemaError(
                        f"{self.op_type}: output {o} ({out_name!r}) must be the same blob as "
                        f"input {i} ({in_name!r}) ({rule})"
                    )
        if allow_unknown_args is None:
            allow_unknown_args = op_def.is_gradient_op
        resolved = dict(self._defaults)
        for name, value in op_def.args.items():
            declared = self._args.get(name)
            if declared is None:
                if not allow_unknown_args:
                    known = ", ".join(sorted(self._args)) or "none"
                    raise SchemaError(f"{self.op_type}: unknown argument {name!r} (known arguments: {known})")
                resolved[name] = value
                continue
            resolved[name] = declared.convert(self.op_type, value)
        for a in self.args:
            if a.required and a.name not in op_def.args:
                raise SchemaError(f"{self.op_type}: missing required argument {a.name!r}")
        if self.validate is not None:
            problem = self.validate(op_def, resolved)
            if problem:
                raise SchemaError(f"{self.op_type}: {problem}")
        return resolved

    def infer_types_and_shapes(self, inputs):
        """Infer output (shape, dtype) pairs from input ones, where the schema says how.

        Parameters
        ----------
        inputs : sequence of (tuple, numpy.dtype)
            Shape and dtype of each input.

        Returns
        -------
        list of (tuple, numpy.dtype) or None
            One pair per output for ``IdenticalTypeAndShape`` schemas (the
            number of outputs is the schema's minimum), else None.

        Examples
        --------
        >>> import caffe2op, numpy as np
        >>> caffe2op.get_schema("StopGradient").infer_types_and_shapes([((3, 4), np.dtype("float32"))])
        [((3, 4), dtype('float32'))]
        """
        if not self.identical_type_and_shape or not inputs:
            return None
        shape, dtype = inputs[0]
        return [(tuple(shape), np.dtype(dtype)) for _ in range(max(self.min_output, 1))]

    def __repr__(self):
        def fmt(low, high):
            return str(low) if low == high else f"{low}..{'inf' if high == math.inf else high}"

        return (
            f"OpSchema({self.op_type!r}, inputs={fmt(self.min_input, self.max_input)}, "
            f"outputs={fmt(self.min_output, self.max_output)}, args={[a.name for a in self.args]})"
        )


def register_schema(schema, *, overwrite=False):
    """Register an operator schema under its type.

    Parameters
    ----------
    schema : OpSchema
        The schema.
    overwrite : bool, default False
        Replace an existing schema of the same type instead of raising.

    Returns
    -------
    OpSchema
        ``schema``, so the call can be an expression.

    Raises
    ------
    TypeError
        If ``schema`` is not an :class:`OpSchema`.
    ValueError
        If the type already has a schema and ``overwrite`` is False.

    Examples
    --------
    >>> import caffe2op
    >>> s = caffe2op.register_schema(caffe2op.OpSchema("DocExampleOp", doc="Example."))
    >>> caffe2op.get_schema("DocExampleOp") is s
    True
    """
    if not isinstance(schema, OpSchema):
        raise TypeError(f"register_schema: expected an OpSchema, got {type(schema).__name__}")
    problem = schema._count_disagreement()
    if problem:
        raise ValueError(f"register_schema: {problem}")
    _SCHEMAS.set(schema.op_type, schema, overwrite=overwrite, where="register_schema")
    return schema


def get_schema(op_type, default=_REQUIRED):
    """The schema of an operator type.

    Parameters
    ----------
    op_type : str
        Operator type.
    default : object, optional
        Returned when the type has no schema; without it that raises.

    Returns
    -------
    OpSchema
        The registered schema (or ``default``).

    Raises
    ------
    UnknownOperatorError
        If the type has no schema and no ``default`` was given; the message
        suggests close names.
    TypeError
        If ``op_type`` is not a str.

    Examples
    --------
    >>> import caffe2op
    >>> caffe2op.get_schema("ZeroGradient")
    OpSchema('ZeroGradient', inputs=1, outputs=0, args=[])
    """
    schema = _SCHEMAS.get(op_type) if isinstance(op_type, str) else None
    if schema is not None:
        return schema
    if not isinstance(op_type, str):
        raise TypeError(
            f"get_schema: op_type must be an operator type name (str), got {type(op_type).__name__} ({op_type!r})"
        )
    if default is not _REQUIRED:
        return default
    if op_type in _tables.known_operator_types():
        raise UnknownOperatorError(f"{op_type!r} has no registered schema")
    raise UnknownOperatorError(unknown_operator_message(op_type, _SCHEMAS.snapshot()))


def registered_schemas():
    """Sorted list of the operator types that have a schema.

    Returns
    -------
    list of str
        The types.

    Examples
    --------
    >>> import caffe2op
    >>> "SparseNormalize" in caffe2op.registered_schemas()
    True
    """
    return sorted(_SCHEMAS.snapshot())


_tables.add_known_types_provider(lambda: _SCHEMAS.snapshot().keys())
