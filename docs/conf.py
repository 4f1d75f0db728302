# SPDX-License-Identifier: BSD-3-Clause
"""Sphinx configuration of the caffe2op documentation.

Build with ``make -C docs html`` (or ``bash .ci/docs``, which also installs the
``docs`` extra).  The build is hermetic: it needs no network.  Intersphinx
reads the inventories shipped in ``_intersphinx/``; set
``CAFFE2OP_DOCS_ONLINE_INVENTORIES=1`` to try the projects' live inventories
first (the local ones stay as fallbacks).  Formulas are typeset by MathJax in
the reader's browser.  Where Debian's ``libjs-mathjax`` is installed
(``/usr/share/javascript/mathjax``), the part of it the pages need (MathJax 2
with SVG output, about 2.5 MB) is copied into ``_build/html/_static/mathjax``
and used, so that formulas render without network; elsewhere the pages load
MathJax 3 from its CDN.  ``CAFFE2OP_DOCS_MATHJAX`` overrides the choice: a URL
or path of a MathJax script (``tex-mml-chtml.js``), or ``cdn`` for the CDN.
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

numpydoc_show_class_members = False  # conf.py's _add_method_summary writes the summary table instead
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

# Debian's MathJax 2 (libjs-mathjax): only what TeX input with SVG output loads is copied into the build.
DEBIAN_MATHJAX = pathlib.Path(os.environ.get("CAFFE2OP_DOCS_DEBIAN_MATHJAX", "/usr/share/javascript/mathjax"))
_MATHJAX_PARTS = [
    "MathJax.js",
    "config/TeX-AMS_SVG-full.js",
    "config/local",
    "extensions",
    "jax/element",
    "jax/input/TeX",
    "jax/output/SVG/jax.js",
    "jax/output/SVG/config.js",
    "jax/output/SVG/autoload",
    "jax/output/SVG/fonts/TeX",
]
_mathjax_choice = os.environ.get("CAFFE2OP_DOCS_MATHJAX", "")
USE_DEBIAN_MATHJAX = not _mathjax_choice and (DEBIAN_MATHJAX / "config" / "TeX-AMS_SVG-full.js").is_file()
if _mathjax_choice and _mathjax_choice != "cdn":
    mathjax_path = _mathjax_choice
elif USE_DEBIAN_MATHJAX:
    mathjax_path = "mathjax/MathJax.js?config=TeX-AMS_SVG-full"  # relative to _static
    mathjax2_config = {"showMathMenu": False}


def _copy_debian_mathjax(app, exception):
    """Copy the local MathJax into the HTML output (after a successful HTML build)."""
    if exception is not None or not USE_DEBIAN_MATHJAX or app.builder.format != "html":
        return
    import shutil

    target = pathlib.Path(app.outdir) / "_static" / "mathjax"
    for part in _MATHJAX_PARTS:
        source, destination = DEBIAN_MATHJAX / part, target / part
        if source.is_dir():
            shutil.copytree(source, destination, dirs_exist_ok=True)
        elif source.is_file() and not destination.exists():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def _link_images_to_full_size(app, doctree):
    """Mark every unscaled image as scaled to the column, so that the HTML links it to its full size.

    Sphinx's ``html_scaled_image_link`` wraps scaled images in a link to the
    original file: the benchmark plot, shrunk to the text column, opens at full
    size when clicked.
    """
    from docutils import nodes

    for image in doctree.findall(nodes.image):
        if not any(key in image for key in ("width", "height", "scale")) and not isinstance(
            image.parent, nodes.reference
        ):
            image["width"] = "100%"


def _own_methods(cls):
    """Public methods defined by ``cls`` itself (not inherited), in source order."""
    import inspect

    return [
        name
        for name, value in vars(cls).items()
        if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, (classmethod, staticmethod)))
    ]


def _add_method_summary(app, what, name, obj, options, lines):
    """Give a class page a summary table of its own methods, after its description and parameters.

    The table goes before the Examples (numpydoc has rendered the sections by
    now: this hook runs after it); every method is documented in full below
    the class, where the table's entries link.
    """
    if what not in ("class", "exception") or not isinstance(obj, type):
        return
    methods = _own_methods(obj)
    if not methods:
        return
    # Names relative to the page's current module (caffe2op or caffe2op.opencl), as autosummary wants them.
    table = [".. rubric:: Methods", "", ".. autosummary::", ""] + [f"   ~{obj.__qualname__}.{m}" for m in methods]
    table.append("")
    position = next((i for i, line in enumerate(lines) if line.strip() == ".. rubric:: Examples"), len(lines))
    lines[position:position] = table


def _skip_builtin_type_defaults(app, what, name, obj, skip, options):
    """Skip a class attribute whose value is a builtin type (a dataclass field default such as
    ``Argument.type = object``): autodoc would show it as "alias of object"; the field is a parameter."""
    if what in ("class", "exception") and isinstance(obj, type) and obj.__module__ == "builtins":
        return True
    return None


def setup(app):
    """Hooks of this configuration (Sphinx calls it like an extension's)."""
    app.connect("autodoc-skip-member", _skip_builtin_type_defaults)
    app.connect("build-finished", _copy_debian_mathjax)
    app.connect("doctree-read", _link_images_to_full_size)
    app.connect("autodoc-process-docstring", _add_method_summary, priority=600)  # after numpydoc's (500)


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
