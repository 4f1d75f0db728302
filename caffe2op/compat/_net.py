# SPDX-License-Identifier: BSD-3-Clause
"""Caffe2's ``core.Net`` for :mod:`caffe2op.compat.core` (which re-exports it)."""

import copy as _copy
import difflib
import threading

from .. import _tables
from .. import net as _net
from . import caffe2_pb2
from ._gradients import _ys
from ._names import BlobReference, ScopedName, _rectify
from ._operators import CreateOperator, IsOperator

_NAMES_LOCK = threading.Lock()


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
