# SPDX-License-Identifier: BSD-3-Clause
"""Sphinx extension: one page per built-in operator, generated from its schema and the registries.

When the builder starts, this writes ``operators/generated/<Type>.rst`` for
every operator type implemented inside the caffe2op package (not the ones a
user, a test or a docs example registers), plus
``operators/generated/summary.rst.inc``, a table of all of them that
``operators/index.rst`` includes.  A page shows the schema's doc, formula
(LaTeX, rendered with ``.. math::``), how to create the operator, its inputs,
outputs and arguments, in-place rules, type and shape inference, the devices
it runs on, its gradient and its example.  Files are only rewritten when
their text changes, so incremental builds stay incremental.

Gradient behaviour comes from ``caffe2op.gradient.describe_gradient(op_type)``
when that function exists (it returns reStructuredText, or None for nothing to
say); without it the section is left out.
"""

import importlib
import json
import math
import pathlib

from sphinx.util import logging

import caffe2op
from caffe2op import registry as _registry

logger = logging.getLogger(__name__)

GENERATED = pathlib.Path("operators") / "generated"
EXCLUDED_MODULES = ("caffe2op.examples",)  # the demo's own operators are user code, shown in the demo guide


def builtin_operator_types():
    """Sorted operator types with an implementation defined inside the caffe2op package."""
    types = set()
    for device_type in caffe2op.DeviceType:
        for op_type in caffe2op.registered_operators(device_type):
            cls = _registry.lookup_operator_class(
                caffe2op.OperatorDef(type=op_type, device_option=caffe2op.DeviceOption(device_type))
            )
            module = cls.__module__ or ""
            if module.startswith("caffe2op.") and not module.startswith(EXCLUDED_MODULES):
                types.add(op_type)
    return sorted(types)


def describe_gradient(op_type):
    """The gradient registry's description of ``op_type`` (rST), or None when there is none."""
    try:
        gradient = importlib.import_module("caffe2op.gradient")
    except ImportError:
        return None
    describe = getattr(gradient, "describe_gradient", None)
    if not callable(describe):
        return None
    text = describe(op_type)
    if text is None:
        return None
    return str(text).strip() or None


def _count_text(low, high, what):
    if high == math.inf:
        return f"{low} or more {what}"
    if low == high == 0:
        return f"no {what}"
    if low == high:
        return f"exactly {low} {what[:-1] if low == 1 else what}"
    return f"{low} to {high} {what}"


def _type_text(arg_type):
    names = {bool: "bool", int: "int", float: "float", str: "str", object: "any"}
    if arg_type in names:
        return names[arg_type]
    args = getattr(arg_type, "__args__", None)
    if args:
        return f"list of {names.get(args[0], getattr(args[0], '__name__', str(args[0])))}"
    return getattr(arg_type, "__name__", str(arg_type))


def _cell(text):
    """Text for a list-table cell: one line, never empty."""
    text = " ".join(str(text).split())
    return text or "\\-"


def _io_name(schema, which, index):
    named = schema.inputs if which == "input" else schema.outputs
    words = named[index][0].split() if index < len(named) else []
    if words and words[0].isidentifier():
        return words[0]
    return f"{which}_{index}"


def _pair_text(schema, rule):
    """Human text of an in-place rule given as pairs, or None for a callable/None rule."""
    if rule is None or callable(rule):
        return None
    parts = []
    for i, o in sorted((int(i), int(o)) for i, o in rule):
        in_name, out_name = _io_name(schema, "input", i), _io_name(schema, "output", o)
        parts.append(f"input {i} (``{in_name}``) and output {o} (``{out_name}``)")
    return "; ".join(parts)


def inplace_lines(schema):
    """Bullet points describing the schema's in-place rules."""
    lines = []
    if schema.enforce_one_to_one_inplace:
        lines.append(
            "Output *i* **must** be the same blob as input *i*, for every *i* that has both "
            "(``EnforceOneToOneInplace``)."
        )
    elif schema.allow_one_to_one_inplace:
        lines.append("Output *i* may be the same blob as input *i* (``AllowOneToOneInplace``).")
    enforced = _pair_text(schema, schema.enforce_inplace)
    if enforced:
        lines.append(f"Must be in place (``EnforceInplace``): {enforced}.")
    elif callable(schema.enforce_inplace):
        lines.append("Some input/output pairs must be in place (``EnforceInplace``, a rule given as a function).")
    allowed = _pair_text(schema, schema.allow_inplace)
    if allowed:
        lines.append(f"May run in place (``AllowInplace``): {allowed}.")
    elif callable(schema.allow_inplace):
        lines.append("Some input/output pairs may be in place (``AllowInplace``, a rule given as a function).")
    if not lines:
        lines.append("No input may be the same blob as an output.")
    return lines


def _py(value):
    """Python source of a value, with double-quoted strings (the project's style)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    return repr(value)


def creation_example(op_type, schema):
    """Python lines creating the operator with create_operator and with a Net builder (checked).

    An operator registered for devices only is created with ``device_option=gpu`` (an OpenCL device).
    """
    n_in = schema.min_input
    if schema.max_input == math.inf:
        n_in = max(n_in, 2)
    inputs = [_io_name(schema, "input", i) for i in range(n_in)]
    n_out = schema.min_output
    outputs = []
    for o in range(n_out):
        if o < n_in and schema.inplace_enforced(o, o):
            outputs.append(inputs[o])
        else:
            name = _io_name(schema, "output", o)
            outputs.append(name if name not in inputs else f"{name}_out")
    # Every optional argument with its default, so the page shows them all; if the defaults
    # together are not a valid call (cross-argument rules), show none.  Either way the call
    # is checked here: the docs never show code that fails.
    args = {a.name: a.default for a in schema.args if not a.required}
    try:
        caffe2op.create_operator(op_type, inputs, outputs, **args)
    except (ValueError, TypeError):
        args = {}
        caffe2op.create_operator(op_type, inputs, outputs)

    # An operator without a CPU implementation is only useful with a device option.
    on_device = op_type not in caffe2op.registered_operators(caffe2op.DeviceType.CPU)
    device = ["device_option=gpu"] if on_device else []

    def blobs(names):
        return _py(names[0]) if len(names) == 1 else _py(names)

    def call(prefix, items):
        """``prefix(items...)``, wrapped as ruff format would when it is too long."""
        items = [*items, blobs(inputs), blobs(outputs), *(f"{k}={_py(v)}" for k, v in args.items()), *device]
        inner = ", ".join(items)
        if len(prefix) + len(inner) + 2 <= 84:
            return [f"{prefix}({inner})"]
        if len(inner) + 4 <= 84:
            return [f"{prefix}(", f"    {inner}", ")"]
        return [f"{prefix}(", *(f"    {item}," for item in items), ")"]

    return [
        "import caffe2op",
        "",
        *(
            ["gpu = caffe2op.DeviceOption(caffe2op.DeviceType.OPENCL, 0)  # no CPU implementation", ""]
            if on_device
            else []
        ),
        *call("op = caffe2op.create_operator", [_py(op_type)]),
        "",
        'net = caffe2op.Net("example")',
        *call(f"net.{op_type}", []),
    ]


def functional_forms(op_type):
    """Public functions (not classes, such as a gradient maker) exported next to the operator's CPU implementation.

    That is the implementation's module, or, for an operator whose module is
    part of a package under ``caffe2op.ops`` (``caffe2op.ops.normalize.operators``),
    that package.
    """
    try:
        cls = _registry.lookup_operator_class(caffe2op.OperatorDef(type=op_type))
    except KeyError:
        return []
    parts = cls.__module__.split(".")
    depth = 3 if parts[:2] == ["caffe2op", "ops"] else len(parts)  # caffe2op.ops.<operator package>
    names = []
    for end in range(len(parts), min(depth, len(parts)) - 1, -1):
        module = importlib.import_module(".".join(parts[:end]))
        names += [
            name
            for name in getattr(module, "__all__", ())
            if name in caffe2op.__all__
            and name not in names
            and getattr(caffe2op, name) is getattr(module, name, None)
            and not isinstance(getattr(module, name), type)
        ]
    return names


def _heading(text, char):
    return [text, char * len(text), ""]


def _indent(text, prefix="   "):
    return [prefix + line if line.strip() else "" for line in str(text).splitlines()]


def operator_page(op_type):
    """reStructuredText of one operator's page."""
    schema = caffe2op.get_schema(op_type, default=None)
    lines = [f".. _op-{op_type}:", "", *_heading(op_type, "=")]
    if schema is None:
        lines += ["This operator has no schema: it accepts any inputs, outputs and arguments.", ""]
    else:
        lines += [*str(schema.doc).strip().splitlines(), ""]
        if schema.formula:
            lines += [".. math::", "", *_indent(schema.formula), ""]
        forms = functional_forms(op_type)
        if forms:
            refs = ", ".join(f":func:`caffe2op.{name}`" for name in forms)
            lines += [f"Functional form (NumPy arrays, no workspace): {refs}.", ""]

        lines += _heading("Creating it", "-")
        lines += [".. code-block:: python", "", *_indent("\n".join(creation_example(op_type, schema))), ""]

        lines += _heading("Inputs and outputs", "-")
        lines += [
            f"Takes {_count_text(schema.min_input, schema.max_input, 'inputs')} and produces "
            f"{_count_text(schema.min_output, schema.max_output, 'outputs')}.",
            "",
        ]
        for title, named in (("Inputs", schema.inputs), ("Outputs", schema.outputs)):
            if not named:
                continue
            lines += [
                f".. list-table:: {title}",
                "   :header-rows: 1",
                "   :width: 100%",
                "   :widths: 8 20 72",
                "",
                "   * - #",
                "     - Name",
                "     - Description",
            ]
            for index, (name, doc) in enumerate(named):
                lines += [f"   * - {index}", f"     - ``{name}``", f"     - {_cell(doc)}"]
            lines.append("")

        lines += _heading("Arguments", "-")
        if schema.args:
            lines += [
                ".. list-table::",
                "   :header-rows: 1",
                "   :width: 100%",
                "   :widths: 18 12 14 56",
                "",
                "   * - Name",
                "     - Type",
                "     - Default",
                "     - Description",
            ]
            for a in schema.args:
                default = "required" if a.required else f"``{a.default!r}``"
                lines += [
                    f"   * - ``{a.name}``",
                    f"     - {_type_text(a.type)}",
                    f"     - {default}",
                    f"     - {_cell(a.doc)}",
                ]
            lines.append("")
        else:
            lines += ["None.", ""]

        lines += _heading("In place, types and shapes", "-")
        lines += [f"- {line}" for line in inplace_lines(schema)]
        if schema.identical_type_and_shape:
            lines.append("- Every output has the dtype and shape of input 0 (``IdenticalTypeAndShape``).")
        lines.append("")

    lines += _heading("Devices", "-")
    devices = [d.name for d in caffe2op.DeviceType if op_type in caffe2op.registered_operators(d)]
    lines += [
        "Implemented for: " + ", ".join(f"``{d}``" for d in devices) + ".  Choose the device with a "
        ":class:`~caffe2op.DeviceOption` (see :ref:`install-opencl` for setting up OpenCL devices).",
        "",
    ]

    gradient = describe_gradient(op_type)
    if gradient:
        lines += _heading("Gradient", "-")
        lines += [*gradient.splitlines(), ""]

    if schema is not None and schema.example:
        lines += _heading("Example", "-")
        lines += [".. code-block:: pycon", "", *_indent(schema.example.strip()), ""]
    return "\n".join(lines).rstrip() + "\n"


def _first_sentence(text):
    text = " ".join(str(text).split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def summary_table(op_types):
    """A list-table of every operator: link, devices, one-line summary."""
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 26 18 56",
        "",
        "   * - Operator",
        "     - Devices",
        "     - Summary",
    ]
    for op_type in op_types:
        schema = caffe2op.get_schema(op_type, default=None)
        devices = ", ".join(d.name for d in caffe2op.DeviceType if op_type in caffe2op.registered_operators(d))
        summary = _first_sentence(schema.doc) if schema is not None else "(no schema)"
        lines += [f"   * - :ref:`{op_type} <op-{op_type}>`", f"     - {devices}", f"     - {_cell(summary)}"]
    return "\n".join(lines) + "\n"


def _write_if_changed(path, text):
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def generate(app):
    """builder-inited: write the operator pages and the summary table."""
    out = pathlib.Path(app.srcdir) / GENERATED
    out.mkdir(parents=True, exist_ok=True)
    op_types = builtin_operator_types()
    wanted = {f"{t}.rst" for t in op_types} | {"summary.rst.inc"}
    for stale in out.iterdir():
        if stale.name not in wanted:
            stale.unlink()
    for op_type in op_types:
        try:
            text = operator_page(op_type)
        except Exception as err:  # report it as a build warning (an error under -W), naming the operator
            logger.warning(f"caffe2op_operators: cannot document {op_type}: {type(err).__name__}: {err}")
            continue
        _write_if_changed(out / f"{op_type}.rst", text)
    _write_if_changed(out / "summary.rst.inc", summary_table(op_types))
    logger.info(f"caffe2op_operators: {len(op_types)} operator pages in {GENERATED}")


def setup(app):
    app.connect("builder-inited", generate)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
