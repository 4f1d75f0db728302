# SPDX-License-Identifier: BSD-3-Clause
"""Sphinx extension: the ``caffe2op-net`` directive draws nets (operators and blobs) with Graphviz.

Give it Python code that assigns ``nets``, or a ``module:callable`` argument
returning the same thing.  ``nets`` is a :class:`caffe2op.Net`, a list of
:class:`caffe2op.OperatorDef`, or a dict ``{label: net or list of ops}`` (for
example ``{"forward": net, "backward": grad_ops}``)::

    .. caffe2op-net::
       :caption: A max-norm step.

       net = caffe2op.Net("step")
       net.SparseNormalize(["w", "idx"], "w", norm=1.0)
       nets = net

Operators are boxes, blobs ellipses.  A blob written again (in place, or
overwritten) gets a new node, labelled with its version, as the backward-pass
builder counts them.  Each net has its own colour; blobs first written by a
later net (gradients) are drawn in that net's colour.  The code runs when the
page is read, with ``caffe2op`` and ``numpy as np`` imported.
"""

import importlib

from docutils.parsers.rst import directives
from sphinx.ext.graphviz import figure_wrapper, graphviz
from sphinx.util.docutils import SphinxDirective

import caffe2op

# (op fill, blob fill) per net, in order: forward blue, backward orange, then more.
PALETTE = [("#d6e6f5", "#ffffff"), ("#fbe0c3", "#fff4e8"), ("#d9f0d3", "#f3fbf1"), ("#e8dcf2", "#f8f3fc")]


def _as_groups(nets):
    """[(label, [OperatorDef, ...]), ...] from a Net, a list of ops, or a dict of those."""
    if isinstance(nets, dict):
        items = list(nets.items())
    elif isinstance(nets, (list, tuple)) and nets and all(isinstance(n, caffe2op.Net) for n in nets):
        items = [(n.name, n) for n in nets]
    else:
        items = [(getattr(nets, "name", "net"), nets)]
    groups = []
    for label, ops in items:
        ops = list(ops.ops if isinstance(ops, caffe2op.Net) else ops)
        for op in ops:
            if not isinstance(op, caffe2op.OperatorDef):
                raise TypeError(f"caffe2op-net: expected OperatorDef objects, got {type(op).__name__}")
        groups.append((str(label), ops))
    return groups


def _quote(*lines):
    """A double-quoted DOT string; several lines are joined by DOT's \\n."""
    escaped = [str(line).replace("\\", "\\\\").replace('"', '\\"') for line in lines]
    return '"' + "\\n".join(escaped) + '"'


def _arg_text(op):
    parts = [f"{k}={v!r}" for k, v in sorted(op.args.items())]
    text = ", ".join(parts)
    return text if len(text) <= 40 else text[:37] + "..."


def net_to_dot(nets, rankdir="TB"):
    """Graphviz source of ``nets`` (see the module doc for the accepted forms)."""
    groups = _as_groups(nets)
    lines = [
        "digraph caffe2op_net {",
        f"  rankdir={rankdir}; nodesep=0.25; ranksep=0.3; bgcolor=transparent;",
        '  node [fontsize=10, margin="0.08,0.03", height=0.3];',
        '  edge [arrowsize=0.6, color="#555555"];',
    ]
    version = {}  # blob -> current version
    node_of = {}  # (blob, version) -> node id
    blob_count = 0

    def blob_node(name, group_index, *, new_version):
        nonlocal blob_count
        if new_version and name in version:
            version[name] += 1
        elif name not in version:
            version[name] = 0
        key = (name, version[name])
        if key not in node_of:
            blob_count += 1
            node_id = f"b{blob_count}"
            node_of[key] = node_id
            label = name if version[name] == 0 else f"{name} (v{version[name]})"
            fill = PALETTE[group_index % len(PALETTE)][1]
            lines.append(f"  {node_id} [label={_quote(label)}, shape=ellipse, style=filled, fillcolor={_quote(fill)}];")
        return node_of[key]

    op_count = 0
    for group_index, (label, ops) in enumerate(groups):
        fill = PALETTE[group_index % len(PALETTE)][0]
        for op in ops:
            op_count += 1
            op_id = f"op{op_count}"
            args = _arg_text(op)
            label_lines = [op.type, args] if args else [op.type]
            lines.append(
                f"  {op_id} [label={_quote(*label_lines)}, shape=box, "
                f'style="rounded,filled", fillcolor={_quote(fill)}, tooltip={_quote(label)}];'
            )
            for name in op.inputs:
                lines.append(f"  {blob_node(name, group_index, new_version=False)} -> {op_id};")
            for name in op.outputs:
                lines.append(f"  {op_id} -> {blob_node(name, group_index, new_version=True)};")
    if len(groups) > 1:
        legend = " ".join(
            f'<TD BGCOLOR="{PALETTE[i % len(PALETTE)][0]}">&nbsp;{label}&nbsp;</TD>'
            for i, (label, _) in enumerate(groups)
        )
        lines.append(
            f'  legend [shape=plaintext, label=<<TABLE BORDER="0" CELLSPACING="4"><TR>{legend}</TR></TABLE>>];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _load(argument, code, where):
    if argument:
        module_name, _, attr = argument.partition(":")
        target = getattr(importlib.import_module(module_name), attr)
        return target() if callable(target) else target
    namespace = {"caffe2op": caffe2op, "np": importlib.import_module("numpy")}
    exec(compile(code, where, "exec"), namespace)  # docs source, trusted like conf.py
    if "nets" not in namespace:
        raise ValueError("the directive's code must assign `nets`")
    return namespace["nets"]


class NetDirective(SphinxDirective):
    """``.. caffe2op-net:: [module:callable]`` with optional Python content assigning ``nets``."""

    has_content = True
    optional_arguments = 1
    option_spec = {
        "caption": directives.unchanged,
        "alt": directives.unchanged,
        "rankdir": lambda value: directives.choice(value, ("TB", "LR")),
    }

    def run(self):
        where = f"{self.env.doc2path(self.env.docname)}:{self.lineno}"
        try:
            nets = _load(self.arguments[0] if self.arguments else None, "\n".join(self.content), where)
            dot = net_to_dot(nets, self.options.get("rankdir", "TB"))
        except Exception as err:  # becomes a build warning (an error under -W) at this line
            return [
                self.state.document.reporter.warning(f"caffe2op-net: {type(err).__name__}: {err}", line=self.lineno)
            ]
        node = graphviz()
        node["code"] = dot
        node["options"] = {"docname": self.env.docname}
        node["alt"] = self.options.get("alt", "diagram of the net's operators and blobs")
        node["align"] = "center"
        if "caption" in self.options:
            return [figure_wrapper(self, node, self.options["caption"])]
        return [node]


def setup(app):
    app.setup_extension("sphinx.ext.graphviz")
    app.add_directive("caffe2op-net", NetDirective)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
