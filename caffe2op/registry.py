# SPDX-License-Identifier: BSD-3-Clause
"""Operator registries, one per device type, and the :class:`Operator` base class.

An implementation is registered under ``(device type, operator type,
engine)``.  The workspace looks it up when it runs an :class:`OperatorDef`:
the definition's engines first (a comma-separated preference list), then the
default engine ``""``, as Caffe2's ``CreateOperator`` did.
"""

import abc

from . import _tables
from ._tables import add_known_types_provider, known_operator_types
from .core import DeviceType
from .errors import UnknownOperatorError, unknown_operator_message

__all__ = [
    "Operator",
    "register_cpu_operator",
    "register_cuda_operator",
    "register_opencl_operator",
    "registered_operators",
]

# (device type) -> {(op_type, engine): class}
_REGISTRIES = {device_type: _tables.Table(f"{device_type.name} implementation") for device_type in DeviceType}


class Operator(abc.ABC):
    """Base class of every operator implementation.

    Subclass it, implement :meth:`run_on_device`, and register the class with
    :func:`register_cpu_operator` (or the OpenCL/CUDA registries).  The
    workspace builds one instance per run from an :class:`~caffe2op.OperatorDef`.

    Parameters
    ----------
    op_def : OperatorDef
        The definition being run.
    workspace : Workspace
        The workspace holding the blobs.
    args : dict
        Arguments with the schema's defaults filled in.
    backend : object
        The device backend the operator runs on (see :mod:`caffe2op.devices`).

    Raises
    ------
    MissingBlobError
        If an input blob does not exist (checked when the operator is built,
        as in Caffe2).

    Examples
    --------
    >>> import numpy as np, caffe2op
    >>> caffe2op.register_schema(caffe2op.OpSchema(
    ...     "DocScale", inputs=[("X", "input")], outputs=[("Y", "scaled")],
    ...     args=[caffe2op.Argument("scale", float, default=2.0)]))
    OpSchema('DocScale', inputs=1, outputs=1, args=['scale'])
    >>> @caffe2op.register_cpu_operator("DocScale")
    ... class DocScale(caffe2op.Operator):
    ...     def run_on_device(self):
    ...         self.set_output(0, self.input(0) * self.arg("scale"))
    >>> ws = caffe2op.Workspace()
    >>> ws.feed_blob("x", np.arange(3.0))
    >>> ws.run_operator_once(caffe2op.create_operator("DocScale", "x", "y"))
    >>> ws.fetch_blob("y")
    array([0., 2., 4.])
    """

    def __init__(self, op_def, workspace, args, backend):
        self.op_def = op_def
        self.workspace = workspace
        self.args = args
        self.backend = backend
        self._inputs = [workspace._lookup_input(op_def, i, name) for i, name in enumerate(op_def.inputs)]

    @property
    def type(self):
        """The operator type (str)."""
        return self.op_def.type

    @property
    def device_option(self):
        """The :class:`~caffe2op.DeviceOption` the operator runs on."""
        return self.op_def.device

    @property
    def num_inputs(self):
        """Number of inputs (int)."""
        return len(self.op_def.inputs)

    @property
    def num_outputs(self):
        """Number of outputs (int)."""
        return len(self.op_def.outputs)

    def input_name(self, index):
        """Blob name of input ``index``.

        Parameters
        ----------
        index : int
            Input position.

        Returns
        -------
        str
            The blob name.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> @caffe2op.register_cpu_operator("DocNames")
        ... class DocNames(caffe2op.Operator):
        ...     def run_on_device(self):
        ...         print(self.input_name(0), "->", self.output_name(0))
        >>> ws = caffe2op.Workspace()
        >>> ws.feed_blob("x", np.zeros(2))
        >>> ws.run_operator_once(caffe2op.OperatorDef(type="DocNames", inputs="x", outputs="y"))
        x -> y
        """
        return self.op_def.inputs[index]

    def output_name(self, index):
        """Blob name of output ``index``.

        Parameters
        ----------
        index : int
            Output position.

        Returns
        -------
        str
            The blob name.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> @caffe2op.register_cpu_operator("DocOutputName")
        ... class DocOutputName(caffe2op.Operator):
        ...     def run_on_device(self):
        ...         print([self.output_name(i) for i in range(self.num_outputs)])
        >>> ws = caffe2op.Workspace()
        >>> ws.feed_blob("x", np.zeros(2))
        >>> ws.run_operator_once(caffe2op.OperatorDef(type="DocOutputName", inputs="x", outputs=["a", "b"]))
        ['a', 'b']
        """
        return self.op_def.outputs[index]

    def input(self, index):
        """The value of input ``index``, checked to live on the operator's device.

        Parameters
        ----------
        index : int
            Input position.

        Returns
        -------
        numpy.ndarray or pyopencl.array.Array
            The blob (not a copy: in-place operators modify it).

        Raises
        ------
        ValueError
            If the blob lives on another device than the operator.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> @caffe2op.register_cpu_operator("DocNegate")
        ... class DocNegate(caffe2op.Operator):
        ...     def run_on_device(self):
        ...         x = self.input(0)  # a NumPy array on the CPU
        ...         self.set_output(0, -x)
        >>> ws = caffe2op.Workspace()
        >>> ws.feed_blob("x", np.array([1.0, -2.0]))
        >>> ws.run_operator_once(caffe2op.OperatorDef(type="DocNegate", inputs="x", outputs="y"))
        >>> ws.fetch_blob("y")
        array([-1.,  2.])
        """
        value = self._inputs[index]
        if not self.backend.owns(value):
            self.workspace._raise_wrong_device(self.op_def, index, value, self.backend)
        return value

    @property
    def inputs(self):
        """All input values, in order (list)."""
        return [self.input(i) for i in range(self.num_inputs)]

    def arg(self, name, default=None):
        """An argument's value (the schema default when not given).

        Parameters
        ----------
        name : str
            Argument name.
        default : object, optional
            Returned when the argument is neither given nor declared.

        Returns
        -------
        object
            The value.

        Examples
        --------
        Operators without a schema see only the arguments they are given:

        >>> import numpy as np, caffe2op
        >>> @caffe2op.register_cpu_operator("DocAddConst")
        ... class DocAddConst(caffe2op.Operator):
        ...     def run_on_device(self):
        ...         self.set_output(0, self.input(0) + self.arg("value", 1.0))
        >>> ws = caffe2op.Workspace()
        >>> ws.feed_blob("x", np.zeros(2))
        >>> ws.run_operator_once(caffe2op.OperatorDef(type="DocAddConst", inputs="x", outputs="y"))
        >>> ws.fetch_blob("y")
        array([1., 1.])
        >>> ws.run_operator_once(caffe2op.OperatorDef(type="DocAddConst", inputs="x", outputs="y", args={"value": 5.0}))
        >>> ws.fetch_blob("y")
        array([5., 5.])
        """
        return self.args.get(name, default)

    def has_arg(self, name):
        """Whether the definition gives argument ``name`` explicitly.

        Parameters
        ----------
        name : str
            Argument name.

        Returns
        -------
        bool
            True if it appears in ``op_def.args``.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> @caffe2op.register_cpu_operator("DocHasArg")
        ... class DocHasArg(caffe2op.Operator):
        ...     def run_on_device(self):
        ...         print(self.has_arg("scale"))
        >>> ws = caffe2op.Workspace()
        >>> ws.feed_blob("x", np.zeros(1))
        >>> ws.run_operator_once(caffe2op.OperatorDef(type="DocHasArg", inputs="x", args={"scale": 2.0}))
        True
        """
        return name in self.op_def.args

    def output(self, index, shape, dtype):
        """A writable array for output ``index`` with the given shape and dtype.

        Reuses the blob already stored under that name when it has the right
        shape, dtype and device (as Caffe2's ``Tensor::Resize`` kept memory),
        otherwise allocates a new one on the operator's device and stores it.

        Parameters
        ----------
        index : int
            Output position.
        shape : tuple of int
            Required shape.
        dtype : numpy.dtype
            Required dtype.

        Returns
        -------
        numpy.ndarray or pyopencl.array.Array
            The output array.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> @caffe2op.register_cpu_operator("DocSquare")
        ... class DocSquare(caffe2op.Operator):
        ...     def run_on_device(self):
        ...         x = self.input(0)
        ...         np.square(x, out=self.output(0, x.shape, x.dtype))
        >>> ws = caffe2op.Workspace()
        >>> ws.feed_blob("x", np.array([1.0, 2.0, 3.0]))
        >>> ws.run_operator_once(caffe2op.OperatorDef(type="DocSquare", inputs="x", outputs="y"))
        >>> ws.fetch_blob("y")
        array([1., 4., 9.])
        """
        name = self.op_def.outputs[index]
        shape = tuple(shape)
        current = self.workspace._blobs.get(name)
        if (
            current is not None
            and self.backend.owns(current)
            and tuple(current.shape) == shape
            and current.dtype == dtype
            and (name in self.op_def.inputs or not any(current is x for x in self._inputs))
        ):
            return current
        value = self.backend.empty(shape, dtype)
        self.workspace._blobs[name] = value
        return value

    def set_output(self, index, value):
        """Store ``value`` as output ``index``.

        Parameters
        ----------
        index : int
            Output position.
        value : numpy.ndarray or pyopencl.array.Array
            The result, on the operator's device.

        Raises
        ------
        TypeError
            If ``value`` is not an array of the operator's device.

        Examples
        --------
        >>> import numpy as np, caffe2op
        >>> @caffe2op.register_cpu_operator("DocRange")
        ... class DocRange(caffe2op.Operator):
        ...     def run_on_device(self):
        ...         self.set_output(0, np.arange(self.arg("n")))
        >>> ws = caffe2op.Workspace()
        >>> ws.run_operator_once(caffe2op.OperatorDef(type="DocRange", outputs="r", args={"n": 4}))
        >>> ws.fetch_blob("r")
        array([0, 1, 2, 3])
        """
        if not self.backend.owns(value):
            raise TypeError(
                f"{self.type}: output {index} ({self.op_def.outputs[index]!r}) must be an array on "
                f"{self.backend.name}, got {type(value).__name__}"
            )
        self.workspace._blobs[self.op_def.outputs[index]] = value

    @abc.abstractmethod
    def run_on_device(self):
        """Compute the outputs from the inputs (implemented by each operator).

        Examples
        --------
        Every implementation overrides it; it returns nothing and communicates
        through its outputs:

        >>> import numpy as np, caffe2op
        >>> @caffe2op.register_cpu_operator("DocCopyRows")
        ... class DocCopyRows(caffe2op.Operator):
        ...     def run_on_device(self):
        ...         x = self.input(0)
        ...         np.copyto(self.output(0, x.shape, x.dtype), x)
        >>> ws = caffe2op.Workspace()
        >>> ws.feed_blob("x", np.eye(2))
        >>> ws.run_operator_once(caffe2op.OperatorDef(type="DocCopyRows", inputs="x", outputs="y"))
        >>> ws.fetch_blob("y")
        array([[1., 0.],
               [0., 1.]])
        """


def _register(device_type, op_type, cls, engine, overwrite):
    if not isinstance(op_type, str) or not op_type:
        raise TypeError(f"operator type must be a non-empty str, got {op_type!r}")
    if not isinstance(engine, str):
        raise TypeError(f"engine must be a str, got {type(engine).__name__}")
    where = f"register_{device_type.name.lower()}_operator"

    def decorate(klass):
        if not (isinstance(klass, type) and issubclass(klass, Operator)):
            raise TypeError(f"{op_type}: an operator implementation must subclass caffe2op.Operator, got {klass!r}")
        table = _REGISTRIES[device_type]
        # Caffe2 refuses a second registration of one key; the same class again is harmless.
        if not overwrite and table.get((op_type, engine)) not in (None, klass):
            engine_text = f" (engine {engine!r})" if engine else ""
            raise ValueError(
                f"{where}: {op_type!r}{engine_text} already has a {device_type.name} implementation "
                f"({table.get((op_type, engine)).__qualname__}); pass overwrite=True to replace it"
            )
        table.set((op_type, engine), klass, where=where)
        return klass

    return decorate if cls is None else decorate(cls)


def register_cpu_operator(op_type, cls=None, *, engine="", overwrite=False):
    """Register a CPU implementation of ``op_type`` (usable as a class decorator).

    Parameters
    ----------
    op_type : str
        Operator type.
    cls : type, optional
        The :class:`Operator` subclass.  Omit it to use the call as a decorator.
    engine : str, default ""
        Engine name; operators select it with ``engine=`` in their definition.
    overwrite : bool, default False
        Replace an implementation already registered for ``(op_type, engine)``
        instead of raising (registering the same class again is always allowed).

    Returns
    -------
    type or callable
        ``cls``, or a decorator when ``cls`` is omitted.

    Raises
    ------
    TypeError
        If ``cls`` does not subclass :class:`Operator`.
    ValueError
        If another class is already registered for ``(op_type, engine)`` on
        this device type and ``overwrite`` is False (Caffe2 refuses duplicates).

    Examples
    --------
    >>> import caffe2op
    >>> @caffe2op.register_cpu_operator("DocNoop")
    ... class DocNoop(caffe2op.Operator):
    ...     def run_on_device(self):
    ...         pass
    >>> "DocNoop" in caffe2op.registered_operators(caffe2op.DeviceType.CPU)
    True
    """
    return _register(DeviceType.CPU, op_type, cls, engine, overwrite)


def register_opencl_operator(op_type, cls=None, *, engine="", overwrite=False):
    """Register an OpenCL implementation of ``op_type`` (usable as a class decorator).

    Parameters
    ----------
    op_type : str
        Operator type.
    cls : type, optional
        The :class:`Operator` subclass.  Omit it to use the call as a decorator.
    engine : str, default ""
        Engine name.
    overwrite : bool, default False
        Replace an implementation already registered for ``(op_type, engine)``
        instead of raising.

    Returns
    -------
    type or callable
        ``cls``, or a decorator when ``cls`` is omitted.

    Raises
    ------
    TypeError
        If ``cls`` does not subclass :class:`Operator`.
    ValueError
        If another class is already registered for ``(op_type, engine)`` on
        this device type and ``overwrite`` is False (Caffe2 refuses duplicates).

    Examples
    --------
    An implementation whose blobs are ``pyopencl.array.Array`` objects on the
    operator's device (registering needs no OpenCL; running it does):

    >>> import caffe2op
    >>> @caffe2op.register_opencl_operator("DocDeviceNoop")
    ... class DocDeviceNoopOpenCL(caffe2op.Operator):
    ...     def run_on_device(self):
    ...         pass
    >>> "DocDeviceNoop" in caffe2op.registered_operators(caffe2op.DeviceType.OPENCL)
    True
    >>> "DocDeviceNoop" in caffe2op.registered_operators(caffe2op.DeviceType.CPU)
    False
    """
    return _register(DeviceType.OPENCL, op_type, cls, engine, overwrite)


def register_cuda_operator(op_type, cls=None, *, engine="", overwrite=False):
    """Register an implementation of ``op_type`` for ``DeviceType.CUDA`` devices.

    CUDA devices are the NVIDIA devices of an OpenCL platform, so these
    implementations are usually the OpenCL ones registered a second time.

    Parameters
    ----------
    op_type : str
        Operator type.
    cls : type, optional
        The :class:`Operator` subclass.  Omit it to use the call as a decorator.
    engine : str, default ""
        Engine name.
    overwrite : bool, default False
        Replace an implementation already registered for ``(op_type, engine)``
        instead of raising.

    Returns
    -------
    type or callable
        ``cls``, or a decorator when ``cls`` is omitted.

    Raises
    ------
    TypeError
        If ``cls`` does not subclass :class:`Operator`.
    ValueError
        If another class is already registered for ``(op_type, engine)`` on
        this device type and ``overwrite`` is False (Caffe2 refuses duplicates).

    Examples
    --------
    The usual pattern: one OpenCL class registered for both device types.

    >>> import caffe2op
    >>> class DocCopyOpenCL(caffe2op.Operator):
    ...     def run_on_device(self):
    ...         self.set_output(0, self.input(0).copy())
    >>> caffe2op.register_opencl_operator("DocCopy", DocCopyOpenCL) is DocCopyOpenCL
    True
    >>> caffe2op.register_cuda_operator("DocCopy", DocCopyOpenCL) is DocCopyOpenCL
    True
    """
    return _register(DeviceType.CUDA, op_type, cls, engine, overwrite)


def registered_operators(device_type=None):
    """Sorted operator types with an implementation (on one device type, or any).

    Parameters
    ----------
    device_type : DeviceType, optional
        Restrict to one device type.

    Returns
    -------
    list of str
        The operator types.

    Raises
    ------
    ValueError
        If ``device_type`` is not a DeviceType.

    Examples
    --------
    >>> import caffe2op
    >>> "ZeroGradient" in caffe2op.registered_operators()
    True
    """
    if device_type is None:
        registries = _REGISTRIES.values()
    else:
        try:
            registries = [_REGISTRIES[DeviceType(device_type)]]
        except (ValueError, TypeError):
            raise ValueError(f"registered_operators: unknown device type {device_type!r}") from None
    return sorted({op_type for registry in registries for op_type, _ in registry.snapshot()})


def devices_implementing(op_type):
    """Device types that have an implementation of ``op_type`` (sorted by name)."""
    return sorted(
        (d for d, registry in _REGISTRIES.items() if any(t == op_type for t, _ in registry.snapshot())),
        key=lambda d: d.name,
    )


def is_known_operator_type(op_type):
    """Whether any registry knows ``op_type``."""
    return op_type in known_operator_types()


def lookup_operator_class(op_def):
    """The implementation class for an operator definition, honouring its engines.

    Parameters
    ----------
    op_def : OperatorDef
        The definition.

    Returns
    -------
    type
        The registered :class:`Operator` subclass.

    Raises
    ------
    UnknownOperatorError
        If no registry has ``op_def.type`` (with suggestions), or the type has
        no implementation on the requested device (listing those it has).
    """
    device_type = op_def.device.device_type
    registry = _REGISTRIES[device_type].snapshot()
    for engine in [e.strip() for e in op_def.engine.split(",") if e.strip()] + [""]:
        cls = registry.get((op_def.type, engine))
        if cls is not None:
            return cls
    elsewhere = devices_implementing(op_def.type)
    if elsewhere:
        engines = sorted({e for t, e in registry if t == op_def.type})
        if engines:
            raise UnknownOperatorError(
                f"{op_def.type}: no {device_type.name} implementation for engine(s) "
                f"{op_def.engine!r}; {device_type.name} engines: {', '.join(repr(e) for e in engines)}"
            )
        raise UnknownOperatorError(
            f"{op_def.type} has no implementation for {device_type.name}; "
            f"it is implemented for: {', '.join(d.name for d in elsewhere)}"
        )
    if is_known_operator_type(op_def.type):
        raise UnknownOperatorError(f"{op_def.type} has no implementation on any device (only a schema or a gradient)")
    raise UnknownOperatorError(unknown_operator_message(op_def.type, known_operator_types()))


add_known_types_provider(registered_operators)
