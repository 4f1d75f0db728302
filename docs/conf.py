# SPDX-License-Identifier: BSD-3-Clause
"""Sphinx configuration of the caffe2op documentation.

Build with ``make -C docs html`` (or ``bash .ci/docs``, which also installs the
``docs`` extra).  The build is hermetic: it needs no network.  Intersphinx
reads the inventories shipped in ``_intersphinx/``; set
``CAFFE2OP_DOCS_ONLINE_INVENTORIES=1`` to try the projects' live inventories
first (the local ones stay as fallbacks).  Formulas are typeset by MathJax in
the reader's browser; set ``CAFFE2OP_DOCS_MATHJAX`` to a URL or local path of
``tex-mml-chtml.js`` to use another copy (for reading offline).
"""

import importlib.util
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import caffe2op  # noqa: E402  (after the path change, so the build fails early if it is not installed)

# -- Project -----------------------------------------------------------------

project = "caffe2op"
author = "the caffe2op developers"
copyright = "the caffe2op developers, BSD-3-Clause"  # noqa: A001  (Sphinx's name)
release = caffe2op.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.graphviz",
    "numpydoc",
    "myst_parser",
    "caffe2op_operators",  # docs/_ext: one page per operator, from its schema
    "caffe2op_netgraph",  # docs/_ext: the caffe2op-net directive (net diagrams)
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_intersphinx", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
default_role = "code"
add_module_names = False
pygments_style = "sphinx"
pygments_dark_style = "monokai"

# -- autodoc / autosummary / numpydoc ----------------------------------------

autosummary_generate = True
# caffe2op.dask needs the optional extra "dask": without it, its API page is built against mocks.
autodoc_mock_imports = [name for name in ("dask", "distributed", "zarr") if importlib.util.find_spec(name) is None]
autosummary_imported_members = True
autosummary_ignore_module_all = False  # a public module's page lists its __all__ (templates/autosummary/module.rst)
# Names a module page links to the top-level pages instead of documenting them twice.
autosummary_context = {"toplevel_names": sorted(caffe2op.__all__)}
autodoc_typehints = "none"  # types are in the numpydoc sections
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
autodoc_inherit_docstrings = True

numpydoc_show_class_members = False  # the class template lists members itself
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = True
numpydoc_xref_ignore = "all"  # link only the aliases below; everything else stays plain text
numpydoc_xref_aliases = {
    # caffe2op
    "OperatorDef": "caffe2op.OperatorDef",
    "DeviceOption": "caffe2op.DeviceOption",
    "DeviceType": "caffe2op.DeviceType",
    "DataType": "caffe2op.DataType",
    "OpSchema": "caffe2op.OpSchema",
    "Argument": "caffe2op.Argument",
    "Operator": "caffe2op.Operator",
    "Workspace": "caffe2op.Workspace",
    "Net": "caffe2op.Net",
    "OpenCLDeviceInfo": "caffe2op.OpenCLDeviceInfo",
    "SchemaError": "caffe2op.SchemaError",
    "SchemaTypeError": "caffe2op.SchemaTypeError",
    "UnknownOperatorError": "caffe2op.UnknownOperatorError",
    "MissingBlobError": "caffe2op.MissingBlobError",
    # Python (an alias that maps a name to itself is not linked under xref_ignore="all": use a role)
    "str": ":class:`str`",
    "int": ":class:`int`",
    "float": ":class:`float`",
    "bool": ":class:`bool`",
    "dict": ":class:`dict`",
    "list": ":class:`list`",
    "tuple": ":class:`tuple`",
    "type": ":class:`type`",
    "object": ":class:`object`",
    "callable": ":term:`python:callable`",
    "file-like": ":term:`python:file-like object`",
    "None": ":obj:`None`",
    "TypeError": ":class:`TypeError`",
    "ValueError": ":class:`ValueError`",
    "IndexError": ":class:`IndexError`",
    "KeyError": ":class:`KeyError`",
    "RuntimeError": ":class:`RuntimeError`",
    "Exception": ":class:`Exception`",
    # NumPy, pyopencl
    "array_like": ":term:`numpy:array_like`",
    "ndarray": ":class:`numpy.ndarray`",
    "numpy.ndarray": ":class:`numpy.ndarray`",
    "numpy.dtype": ":class:`numpy.dtype`",
    "pyopencl.array.Array": ":class:`pyopencl.array.Array`",
}

# -- intersphinx (no network at build time) ---------------------------------

_INVENTORIES = HERE / "_intersphinx"
_ONLINE = os.environ.get("CAFFE2OP_DOCS_ONLINE_INVENTORIES") == "1"


def _inventory(url, name):
    local = str(_INVENTORIES / f"{name}.inv")
    return (url, (None, local) if _ONLINE else local)


intersphinx_mapping = {
    "python": _inventory("https://docs.python.org/3/", "python"),
    "numpy": _inventory("https://numpy.org/doc/stable/", "numpy"),
    "scipy": _inventory("https://docs.scipy.org/doc/scipy/", "scipy"),
    "pyopencl": _inventory("https://documen.tician.de/pyopencl/", "pyopencl"),
}
intersphinx_timeout = 10

# -- math, diagrams, Markdown -----------------------------------------------

if os.environ.get("CAFFE2OP_DOCS_MATHJAX"):
    mathjax_path = os.environ["CAFFE2OP_DOCS_MATHJAX"]
graphviz_output_format = "svg"
graphviz_dot_args = ["-Gfontname=DejaVu Sans", "-Nfontname=DejaVu Sans", "-Efontname=DejaVu Sans"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 2

# -- HTML --------------------------------------------------------------------

html_theme = "furo"
html_title = f"caffe2op {release}"
html_static_path = ["_static"]
html_css_files = ["caffe2op.css"]
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": True,
    "top_of_page_buttons": [],
}
