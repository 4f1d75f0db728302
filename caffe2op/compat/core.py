# SPDX-License-Identifier: BSD-3-Clause
"""Caffe2's ``caffe2.python.core`` names over caffe2op: ``CreateOperator``, ``Net``, ``GradientRegistry`` ...

Everything here converts Caffe2's calling conventions and returns Caffe2's
kinds of objects (OperatorDef messages, :class:`BlobReference`), then calls
caffe2op's own functions: operators are :class:`caffe2op.OperatorDef`
objects underneath, nets are :class:`caffe2op.Net` objects, gradients come
from :func:`caffe2op.get_backward_pass`.

Differences from Caffe2 that ported code may meet:

* ``CreateOperator`` checks what caffe2op checks when an operator runs,
  not at once (as Caffe2); but an argument the operator's schema does not
  declare is dropped with a :class:`CompatWarning` (Caffe2 ignores it; the
  native API rejects it), and a bool argument given an int is read as
  Caffe2 reads it (``use_max_norm=2`` is true).
* Gradient functions registered with ``GradientRegistry.RegisterGradient``
  receive and return OperatorDef messages, as in Caffe2.

Examples
--------
>>> import numpy as np
>>> from caffe2op.compat import core, workspace
>>> net = core.Net("example")
>>> s = net.Sum(["a", "b"], "s")
>>> grad_map = net.AddGradientOperators([s])
>>> [op.type for op in net.Proto().op]
['Sum', 'ConstantFill']
>>> workspace.FeedBlob("a", np.ones(2, np.float32)); workspace.FeedBlob("b", np.ones(2, np.float32))
True
True
>>> workspace.RunNetOnce(net)
True
>>> workspace.FetchBlob(grad_map["a"])
array([1., 1.], dtype=float32)
"""

import contextlib
import contextvars
import copy as _copy
import difflib
import numbers
import threading
import warnings

from .. import _tables
from .. import core as _core
from .. import net as _net
from ..backward import get_backward_pass
from ..gradient import GradientSlice, get_gradient_defs, register_gradient
from ..schema import get_schema
from . import caffe2_pb2

__all__ = [
    "BlobReference",
    "CompatWarning",
    "CreateOperator",
    "DeviceOption",
    "DeviceScope",
    "GradientRegistry",
    "GradientSlice",
    "IsOperator",
    "NameScope",
    "Net",
    "ScopedBlobReference",
    "ScopedName",
]


_NAMES_LOCK = threading.Lock()


class CompatWarning(UserWarning):
    """Caffe2 code did something caffe2op does differently (the message says what happened).

    Examples
    --------
    >>> import warnings
    >>> from caffe2op.compat import core
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     op = core.CreateOperator("StopGradient", "x", "y", bogus=1)
    >>> caught[0].category is core.CompatWarning, op.native.args
    (True, {})
    """


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


# --- devices -------------------------------------------------------------------------------------


def DeviceOption(device_type, device_id=0, random_seed=None, node_name=None, numa_node_id=None, extra_info=None):  # noqa: N802
    """A ``caffe2_pb2.DeviceOption`` (Caffe2's ``core.DeviceOption``).

    Parameters
    ----------
    device_type : int
        ``caffe2_pb2.CPU``, ``CUDA`` or ``OPENCL``.
    device_id : int, default 0
        Index among devices of that type.
    random_seed, node_name, numa_node_id, extra_info : optional
        Accepted for compatibility; caffe2op does not use them.

    Returns
    -------
    caffe2_pb2.DeviceOption
        The option.

    Examples
    --------
    >>> from caffe2op.compat import caffe2_pb2, core
    >>> core.DeviceOption(caffe2_pb2.OPENCL, 1).native
    DeviceOption(device_type=<DeviceType.OPENCL: 4>, device_id=1)
    """
    return caffe2_pb2.DeviceOption(device_type, device_id, random_seed=random_seed or 0, node_name=node_name or "")


@contextlib.contextmanager
def DeviceScope(scope, node_name=None):  # noqa: N802 - Caffe2's name
    """Operators created inside get ``scope`` as their device option (Caffe2's ``core.DeviceScope``).

    Parameters
    ----------
    scope : caffe2_pb2.DeviceOption or caffe2op.DeviceOption or None
        The device.
    node_name : str, optional
        Ignored.

    Yields
    ------
    None

    Examples
    --------
    >>> from caffe2op.compat import caffe2_pb2, core
    >>> with core.DeviceScope(core.DeviceOption(caffe2_pb2.OPENCL, 0)):
    ...     op = core.CreateOperator("StopGradient", "x", "y")
    >>> op.device_option.device_type
    4
    """
    with _core.device_scope(caffe2_pb2._native_device(scope)):
        yield


def CurrentDeviceScope():  # noqa: N802 - Caffe2's name
    """The device option of the current :func:`DeviceScope` (a message), or None."""
    native = _core.current_device_scope()
    return None if native is None else caffe2_pb2.DeviceOption(native.device_type, native.device_id)


# --- operators -----------------------------------------------------------------------------------


def IsOperator(op_type):  # noqa: N802 - Caffe2's name
    """Whether ``op_type`` is an operator type caffe2op knows (implementation, schema or gradient).

    Parameters
    ----------
    op_type : str
        The type.

    Returns
    -------
    bool
        True if known.

    Examples
    --------
    >>> from caffe2op.compat import core
    >>> core.IsOperator("SparseNormalize"), core.IsOperator("NoSuchThing")
    (True, False)
    """
    return op_type in _tables.known_operator_types()


def IsOperatorWithEngine(op_type, engine):  # noqa: N802 - Caffe2's name
    """Whether ``op_type`` has an implementation for ``engine`` (``"DEFAULT"``: the default engine) on some device."""
    from ..registry import _REGISTRIES

    engine = "" if engine == "DEFAULT" else engine
    return any((op_type, engine) in table.snapshot() for table in _REGISTRIES.values())


def _caffe2_args(op_type, args):
    """Caffe2's reading of Python arguments: bools from ints, undeclared ones dropped (with a warning)."""
    schema = get_schema(op_type, None)
    if schema is None:
        return args
    declared = {a.name: a for a in schema.args}
    unknown = sorted(name for name in args if name not in declared)
    if unknown:
        warnings.warn(
            f"{op_type}: ignoring argument(s) {', '.join(unknown)} that its schema does not declare, as Caffe2 "
            f"does (the native caffe2op API rejects them)",
            CompatWarning,
            stacklevel=3,
        )
    kept = {}
    for name, value in args.items():
        if name not in declared:
            continue
        if declared[name].type is bool and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = bool(value)  # Caffe2 reads a bool from the int field: any non-zero is true
        kept[name] = value
    return kept


def CreateOperator(  # noqa: N802 - Caffe2's name
    operator_type,
    inputs,
    outputs,
    name="",
    control_input=None,
    device_option=None,
    arg=None,
    engine=None,
    debug_info=None,
    **kwargs,
):
    """An OperatorDef message (Caffe2's ``core.CreateOperator``), not checked until it runs.

    Parameters
    ----------
    operator_type : str
        The type.
    inputs, outputs : str, BlobReference or list of them
        Blob names.
    name : str, default ""
        Operator name.
    control_input : list, optional
        Ignored with a :class:`CompatWarning` (operators run in order).
    device_option : caffe2_pb2.DeviceOption, optional
        Where it runs; the current :func:`DeviceScope` otherwise.
    arg : list of caffe2_pb2.Argument, optional
        Arguments as messages (added before ``kwargs``).
    engine : str, optional
        Engine preference.
    debug_info : str, optional
        Ignored.
    **kwargs
        Arguments.

    Returns
    -------
    caffe2_pb2.OperatorDef
        The definition (a view of a :class:`caffe2op.OperatorDef`).

    Raises
    ------
    TypeError
        If blob names are not str.
    ValueError
        If an argument is None (as Caffe2).

    Warns
    -----
    CompatWarning
        When arguments the schema does not declare, or control inputs, are dropped.

    Examples
    --------
    >>> from caffe2op.compat import core
    >>> op = core.CreateOperator("SparseNormalize", ["w", "idx"], ["w"], use_max_norm=1, norm=2.0)
    >>> op.type, list(op.input), op.native.args
    ('SparseNormalize', ['w', 'idx'], {'use_max_norm': True, 'norm': 2.0})
    """
    if control_input:
        warnings.warn(
            f"{operator_type}: ignoring control_input {control_input!r}: caffe2op runs a net's operators in "
            f"order, so there is nothing to schedule",
            CompatWarning,
            stacklevel=2,
        )
    args = {}
    for a in arg or ():
        args[a.name] = a._get_value()
    for key, value in kwargs.items():
        if value is None:
            # Caffe2's MakeArgument cannot store None.
            raise ValueError(f"{operator_type}: argument {key!r} is None, which an argument cannot hold")
        args[key] = value
    if device_option is None:
        device = _core.current_device_scope()
    else:
        device = caffe2_pb2._native_device(device_option)
    op = _core.OperatorDef(
        type=operator_type,
        inputs=[str(n) for n in _rectify(inputs)],
        outputs=[str(n) for n in _rectify(outputs)],
        args=_caffe2_args(operator_type, args),
        name=name or "",
        device_option=device,
        engine=engine or "",
    )
    return caffe2_pb2.view(op)


# --- nets ----------------------------------------------------------------------------------------


class Net(_net.Net):
    """Caffe2's ``core.Net`` on top of :class:`caffe2op.Net`.

    Operator builders by attribute (``net.Sum(["a", "b"], "s")``) return
    :class:`BlobReference` objects, inputs not made by the net become its
    external inputs, and ``Proto()``, ``AddGradientOperators``,
    ``AddExternalInput`` ... behave as in Caffe2.  ``ops`` holds the
    caffe2op operators, so a compat Net runs in a :class:`caffe2op.Workspace`
    as it is.

    Parameters
    ----------
    name_or_proto : str, Net or caffe2_pb2.NetDef
        A name, or a net or NetDef to copy.
    inplace : bool, default False
        Accepted for compatibility (a copy is always made).

    Examples
    --------
    >>> from caffe2op.compat import core
    >>> net = core.Net("doc_net")
    >>> h = net.StopGradient("x")
    >>> h, list(net.Proto().external_input)
    ('doc_net/StopGradient', ['x'])

    Names are unique per process, as in Caffe2: a second ``Net("doc_net")``
    is called ``doc_net_1``.
    """

    _names_used = set()

    @classmethod
    def _next_net_name(cls, base):
        # Caffe2 gives every Net of a process its own name: "net", then "net_1", "net_2" ...
        with _NAMES_LOCK:
            name, index = base, 1
            while name in cls._names_used:
                name, index = f"{base}_{index}", index + 1
            cls._names_used.add(name)
            return name

    def __init__(self, name_or_proto="net", inplace=False):
        source = None
        if isinstance(name_or_proto, (Net, caffe2_pb2.NetDef)):
            source, name = (
                name_or_proto,
                name_or_proto.name if isinstance(name_or_proto, caffe2_pb2.NetDef) else (name_or_proto.Name()),
            )
        else:
            name = str(name_or_proto)
        super().__init__(self._next_net_name(name))
        self._handed_out = set()
        self._external_input = []
        self._external_output = []
        self._next_name_ids = {}
        if source is not None:
            proto = source if isinstance(source, caffe2_pb2.NetDef) else source.Proto()
            self.ops[:] = [_copy.deepcopy(op) for op in proto._ops]
            self._external_input[:] = list(proto.external_input)
            self._external_output[:] = list(proto.external_output)

    def Name(self):  # noqa: N802 - Caffe2's name
        """The net's name.

        Returns
        -------
        str
            The name (unique in the process, as in Caffe2).

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> core.Net("doc_name").Name()
        'doc_name'
        """
        return self.name

    def Proto(self):  # noqa: N802 - Caffe2's name
        """A ``caffe2_pb2.NetDef`` that views this net (its ``op`` is the net's operator list).

        Returns
        -------
        caffe2_pb2.NetDef
            The view.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> net = core.Net("doc_proto")
        >>> _ = net.StopGradient("x", "y")
        >>> net.Proto().op[0].type
        'StopGradient'
        """
        return caffe2_pb2.NetDef._of(self.name, self.ops, self._external_input, self._external_output)

    def _defined(self):
        return {name for op in self.ops for name in op.outputs} | set(self._external_input)

    def BlobIsDefined(self, blob):  # noqa: N802 - Caffe2's name
        """Whether ``blob`` is an external input or an operator's output.

        Parameters
        ----------
        blob : str or BlobReference
            The blob.

        Returns
        -------
        bool
            True if defined by the net.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> net = core.Net("doc_defined")
        >>> y = net.StopGradient("x", "y")
        >>> net.BlobIsDefined(y), net.BlobIsDefined("z")
        (True, False)
        """
        return str(blob) in self._defined()

    def UsesBlob(self, blob):  # noqa: N802 - Caffe2's name
        """Whether any operator reads or writes ``blob``, or it is an external input.

        Parameters
        ----------
        blob : str or BlobReference
            The blob.

        Returns
        -------
        bool
            True if used.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> net = core.Net("doc_uses")
        >>> _ = net.StopGradient("x", "y")
        >>> net.UsesBlob("x"), net.UsesBlob("q")
        (True, False)
        """
        blob = str(blob)
        return blob in self._external_input or any(blob in op.inputs or blob in op.outputs for op in self.ops)

    def AddExternalInput(self, *inputs):  # noqa: N802 - Caffe2's name
        """Declare external inputs of the net.

        Parameters
        ----------
        *inputs : str or BlobReference
            The blobs (or one list of them).

        Returns
        -------
        BlobReference or list of BlobReference
            One reference, or a list for several.

        Raises
        ------
        ValueError
            If a name is already an external input, or none is given.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> net = core.Net("doc_inputs")
        >>> a, b = net.AddExternalInput("a", "b")
        >>> a, b, list(net.Proto().external_input)
        ('a', 'b', ['a', 'b'])
        """
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if not inputs:
            raise ValueError("AddExternalInput: give at least one blob name")
        refs = []
        for blob in inputs:
            name = str(blob)
            if name in self._external_input:
                raise ValueError(f"Net {self.name!r} already contains an input named {name}")
            self._external_input.append(name)
            refs.append(BlobReference(name, self))
        return refs[0] if len(refs) == 1 else refs

    AddExternalInputs = AddExternalInput

    def AddExternalOutput(self, *outputs):  # noqa: N802 - Caffe2's name
        """Declare external outputs (blobs the net defines).

        Parameters
        ----------
        *outputs : str or BlobReference
            The blobs (or one list of them).

        Returns
        -------
        BlobReference or list of BlobReference
            One reference, or a list for several.

        Raises
        ------
        ValueError
            If a blob is not defined by the net.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> net = core.Net("doc_outputs")
        >>> y = net.StopGradient("x", "y")
        >>> net.AddExternalOutput(y), list(net.Proto().external_output)
        ('y', ['y'])
        """
        if len(outputs) == 1 and isinstance(outputs[0], (list, tuple)):
            outputs = tuple(outputs[0])
        refs = []
        for blob in outputs:
            name = str(blob)
            if not self.BlobIsDefined(name):
                raise ValueError(f"Net {self.name!r} does not define blob {name!r}, so it cannot be an output")
            self._external_output.append(name)
            refs.append(BlobReference(name, self))
        return refs[0] if len(refs) == 1 else refs

    AddExternalOutputs = AddExternalOutput

    @property
    def external_inputs(self):
        """The external inputs (list of str)."""
        return list(self._external_input)

    @property
    def external_outputs(self):
        """The external outputs (list of str)."""
        return list(self._external_output)

    def NextName(self, prefix=None, output_id=None):  # noqa: N802 - Caffe2's name
        """A fresh blob name ``<net>/<prefix>`` (``_2``, ``_3`` ... when taken in the current name scope), as Caffe2's.

        Parameters
        ----------
        prefix : str, optional
            Usually the operator type.
        output_id : int, optional
            Appended as ``:<id>`` (for operators with several outputs).

        Returns
        -------
        str
            The name (unscoped: builders add the name scope).

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> net = core.Net("doc_next")
        >>> net.NextName("Sum"), net.NextName("Sum"), net.NextName("Sum", 1)
        ('doc_next/Sum', 'doc_next/Sum_2', 'doc_next/Sum:1')
        """
        base = f"{self.name}/{prefix}" if prefix else f"{self.name}_blob"
        suffix = f":{output_id}" if output_id is not None else ""
        name = base + suffix
        key = name
        index = self._next_name_ids.get(key, 2)
        defined = self._defined() | self._handed_out
        while ScopedName(name) in defined:
            name = f"{base}_{index}{suffix}"
            index += 1
        self._next_name_ids[key] = index
        self._handed_out.add(ScopedName(name))
        return name

    def NextBlob(self, prefix="unnamed"):  # noqa: N802 - Caffe2's name
        """A BlobReference to ``prefix`` in the current name scope, or ``prefix_auto_<k>`` when it is taken.

        Parameters
        ----------
        prefix : str, default "unnamed"
            The wanted name.

        Returns
        -------
        BlobReference
            A name no earlier call or operator of the net has.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> net = core.Net("doc_blob")
        >>> net.NextBlob("h"), net.NextBlob("h")
        ('h', 'h_auto_0')
        """
        base = ScopedName(prefix)
        name, index = base, 0
        defined = self._defined() | self._handed_out
        while name in defined:
            name, index = f"{base}_auto_{index}", index + 1
        self._handed_out.add(name)
        return BlobReference(name, self)

    NextScopedBlob = NextBlob

    def AppendNet(self, net, device_option=None):  # noqa: N802 - Caffe2's name
        """Append the operators of ``net`` (and its external inputs not defined here); returns self.

        Parameters
        ----------
        net : Net
            The net to append (its operators are copied).
        device_option : caffe2_pb2.DeviceOption, optional
            Not supported: must be None.

        Returns
        -------
        Net
            This net.

        Raises
        ------
        ValueError
            If ``device_option`` is given.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> a, b = core.Net("doc_append_a"), core.Net("doc_append_b")
        >>> _ = a.StopGradient("x", "y"); _ = b.StopGradient("y", "z")
        >>> [op.type for op in a.AppendNet(b).Proto().op], a.external_inputs
        (['StopGradient', 'StopGradient'], ['x'])
        """
        if device_option is not None:
            raise ValueError("AppendNet: device_option is not supported by caffe2op")
        defined = self._defined()
        for blob in net._external_input:
            if blob not in defined:
                self._external_input.append(blob)
                defined.add(blob)
        self._external_output.extend(b for b in net._external_output if b not in self._external_output)
        self.ops.extend(_copy.deepcopy(op) for op in net.ops)
        return self

    def AddGradientOperators(self, ys, skip=0):  # noqa: N802 - Caffe2's name
        """Append the gradient operators of ``ys`` (Caffe2's ``Net.AddGradientOperators``).

        Parameters
        ----------
        ys : list of str or dict
            Blobs to differentiate, or ``{blob: gradient name or None}``.
        skip : int, default 0
            Operators at the start of the net to leave out.

        Returns
        -------
        dict
            Every blob with a gradient mapped to the gradient's name or GradientSlice.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> net = core.Net("doc_grad")
        >>> s = net.Sum(["a", "b"], "s")
        >>> net.AddGradientOperators([s])["a"]
        's_autogen_grad'
        """
        return self.add_gradient_operators(_ys(ys), skip)

    def AddOp(self, op):  # noqa: N802
        """Append an operator unchecked, as Caffe2's ``Proto().op.extend([op])``.

        Parameters
        ----------
        op : caffe2_pb2.OperatorDef or caffe2op.OperatorDef
            The operator.

        Returns
        -------
        caffe2_pb2.OperatorDef or caffe2op.OperatorDef
            ``op``.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> net = core.Net("doc_add_op")
        >>> _ = net.AddOp(core.CreateOperator("StopGradient", "x", "y"))
        >>> len(net.Proto().op)
        1
        """
        self.ops.append(caffe2_pb2.as_native(op))
        return op

    def Clone(
        self, name, blob_remap=None, op_id_mask=None, remap_funcs=None, keep_schema=True, update_external_list=False
    ):  # noqa: N802,E501
        """A copy of the net named ``name``, with blobs renamed by ``blob_remap``.

        Parameters
        ----------
        name : str
            Name of the copy.
        blob_remap : dict, optional
            ``{old blob name: new}``.
        op_id_mask : list of int, optional
            Keep only these operators.
        remap_funcs, keep_schema, update_external_list : optional
            Accepted for compatibility; ``remap_funcs`` must be empty.

        Returns
        -------
        Net
            The copy.

        Raises
        ------
        ValueError
            If ``remap_funcs`` is given.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> net = core.Net("doc_clone")
        >>> _ = net.StopGradient("x", "y")
        >>> [list(op.input) for op in net.Clone("doc_clone_2", blob_remap={"x": "x2"}).Proto().op]
        [['x2']]
        """
        if remap_funcs:
            raise ValueError("Clone: remap_funcs is not supported by caffe2op")
        remap = {str(k): str(v) for k, v in (blob_remap or {}).items()}
        clone = Net(name)
        ops = self.ops if op_id_mask is None else [self.ops[i] for i in op_id_mask]
        for op in ops:
            new = _copy.deepcopy(op)
            new.inputs[:] = [remap.get(b, b) for b in new.inputs]
            new.outputs[:] = [remap.get(b, b) for b in new.outputs]
            clone.ops.append(new)
        clone._external_input[:] = [remap.get(b, b) for b in self._external_input]
        clone._external_output[:] = [remap.get(b, b) for b in self._external_output]
        return clone

    def __getattr__(self, op_type):
        if op_type.startswith("_"):
            raise AttributeError(f"'Net' object has no attribute {op_type!r}")
        if not IsOperator(op_type):
            close = difflib.get_close_matches(op_type, sorted(_tables.known_operator_types()), n=3)
            raise AttributeError(f"Method {op_type} is not a registered operator. Did you mean: [{', '.join(close)}]")

        def build(inputs, outputs=None, **kwargs):
            return self._CreateAndAddToSelf(op_type, inputs, outputs, **kwargs)

        build.__name__ = op_type
        return build

    def _CreateAndAddToSelf(self, op_type, inputs, outputs=None, **kwargs):  # noqa: N802 - Caffe2's name
        inputs = _rectify(inputs)
        defined = self._defined()
        for blob in inputs:
            if str(blob) not in defined:
                self.AddExternalInput(blob)
                defined.add(str(blob))
        if outputs is None:
            outputs = self.NextName(prefix=op_type)
        elif isinstance(outputs, int) and not isinstance(outputs, bool):
            outputs = [self.NextName(prefix=op_type, output_id=i) for i in range(outputs)]
        op = CreateOperator(op_type, inputs, _rectify(outputs, self), **kwargs)
        self.ops.append(op.native)
        if not op.output:
            return None
        if len(op.output) == 1:
            return BlobReference(op.output[0], self)
        return tuple(BlobReference(o, self) for o in op.output)

    def __str__(self):
        return str(self.Proto())


# --- gradients -----------------------------------------------------------------------------------


def _native_ops(ops, where):
    if ops is None:
        return []
    if isinstance(ops, (caffe2_pb2.OperatorDef, _core.OperatorDef)):
        ops = [ops]
    try:
        return [caffe2_pb2.as_native(op) for op in ops]
    except TypeError as err:
        raise TypeError(f"{where}: {err}") from None


def _ys(ys):
    """Blob names to differentiate, as Caffe2's IR takes them (no name scope added)."""
    if isinstance(ys, dict):
        return {str(y): (g if g is None or isinstance(g, tuple) else str(g)) for y, g in ys.items()}
    if isinstance(ys, str):
        return [str(ys)]
    return [str(y) for y in ys]


class GradientRegistry:
    """Caffe2's ``core.GradientRegistry``: register gradient functions, build gradients.

    Registrations go to caffe2op's one gradient registry
    (:func:`caffe2op.register_gradient`); functions see and return
    OperatorDef messages.

    Examples
    --------
    >>> from caffe2op.compat import core
    >>> @core.GradientRegistry.RegisterGradient("DocCompatScale")
    ... def scale_gradient(op, g_output):
    ...     return core.CreateOperator("DocCompatScale", g_output, [op.input[0] + "_grad"]), [op.input[0] + "_grad"]
    >>> ops = [core.CreateOperator("DocCompatScale", "x", "y")]
    >>> grads, grad_map = core.GradientRegistry.GetBackwardPass(ops, {"y": "y_grad"})
    >>> [str(g.native.describe()) for g in grads], grad_map["x"]
    (['DocCompatScale(y_grad) -> (x_grad)'], 'x_grad')
    """

    @classmethod
    def RegisterGradient(cls, op_type):  # noqa: N802 - Caffe2's name
        """Decorator registering ``f(op, g_output) -> (grad_ops, g_input)`` for ``op_type``.

        Parameters
        ----------
        op_type : str
            The forward operator type.

        Returns
        -------
        callable
            The decorator (it returns the function unchanged).

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> @core.GradientRegistry.RegisterGradient("DocCompatIdentity")
        ... def identity_gradient(op, g_output):
        ...     return [], g_output
        >>> core.GradientRegistry.GetGradientForOp(core.CreateOperator("DocCompatIdentity", "x", "y"), ["g"])
        ([], ['g'])
        """

        def decorate(function):
            def adapted(op_def, g_output):
                grad_ops, g_input = function(caffe2_pb2.view(op_def), list(g_output))
                return _native_ops(grad_ops, f"gradient of {op_type}"), g_input

            adapted.__name__ = getattr(function, "__name__", "gradient")
            adapted.__doc__ = function.__doc__
            register_gradient(op_type)(adapted)
            return function

        return decorate

    @classmethod
    def GetGradientForOp(cls, op, g_output):  # noqa: N802 - Caffe2's name
        """The gradient operators of one operator (:func:`caffe2op.get_gradient_defs`).

        Parameters
        ----------
        op : caffe2_pb2.OperatorDef or caffe2op.OperatorDef
            The forward operator.
        g_output : list
            One gradient (name, GradientSlice or None) per output.

        Returns
        -------
        tuple of (list of caffe2_pb2.OperatorDef, list)
            The gradient operators and one gradient per input.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> ops, g_input = core.GradientRegistry.GetGradientForOp(core.CreateOperator("Copy", "x", "y"), ["y_grad"])
        >>> ops[0].type, g_input
        ('CopyOnDeviceLike', ['x_grad'])
        """
        ops, g_input = get_gradient_defs(caffe2_pb2.as_native(op), [None if g is None else g for g in g_output])
        return [caffe2_pb2.view(o) for o in ops], g_input

    @classmethod
    def GetBackwardPass(cls, operators, ys, ys_generate_gradient=False):  # noqa: N802 - Caffe2's name
        """``(gradient operators as messages, grad_map)`` (:func:`caffe2op.get_backward_pass`).

        Parameters
        ----------
        operators : list of OperatorDef
            Forward operators (messages or caffe2op ones).
        ys : list or dict
            Blobs to differentiate.
        ys_generate_gradient : bool, default False
            Ignored (Caffe2 used it internally).

        Returns
        -------
        tuple of (list of caffe2_pb2.OperatorDef, dict)
            The gradient operators and the gradient map.

        Examples
        --------
        >>> from caffe2op.compat import core
        >>> ops = [core.CreateOperator("StopGradient", "x", "y"), core.CreateOperator("Sum", ["y", "w"], "s")]
        >>> grads, grad_map = core.GradientRegistry.GetBackwardPass(ops, ["s"])
        >>> [g.type for g in grads], sorted(grad_map)
        (['ConstantFill'], ['s', 'w', 'y'])
        """
        ops, grad_map = get_backward_pass(_native_ops(operators, "GetBackwardPass"), _ys(ys))
        return [caffe2_pb2.view(o) for o in ops], grad_map
