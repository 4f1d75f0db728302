# SPDX-License-Identifier: BSD-3-Clause
"""Write ``numpy.inv``: a Sphinx inventory of NumPy's public API, made from the installed NumPy.

NumPy's own ``objects.inv`` could not be downloaded where these docs were set
up (and Debian ships no NumPy documentation package), so this script lists
NumPy's public names and points them at the pages of the NumPy manual that
hold them, following the manual's URL layout
(``reference/generated/numpy.<name>.html#numpy.<name>``).  It covers what the
caffe2op docs link to: top-level functions and classes, ``ndarray`` methods
and attributes, ``numpy.linalg``, the scalar types and a few glossary terms.

Replace it by the real inventory when there is network access::

    python -c "import urllib.request as u; open('docs/_intersphinx/numpy.inv', 'wb').write(
        u.urlopen('https://numpy.org/doc/stable/objects.inv').read())"

Run it from the repository root::

    .venv/bin/python docs/_intersphinx/make_numpy_inventory.py
"""

import inspect
import pathlib
import zlib

import numpy as np

OUT = pathlib.Path(__file__).with_name("numpy.inv")

SCALARS = [
    "bool_",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "generic",
    "number",
    "integer",
    "floating",
]
GLOSSARY = ["array_like", "array", "view", "C order", "contiguous", "dtype", "ufunc", "broadcast", "ndarray"]


def _entries():
    entries = []
    seen = set()

    def add(name, role, uri):
        if (name, role) not in seen:
            seen.add((name, role))
            entries.append(f"{name} py:{role} 1 {uri} -")

    for name in sorted(dir(np)):
        if name.startswith("_") or name in SCALARS:
            continue
        obj = getattr(np, name)
        uri = f"reference/generated/numpy.{name}.html#$"
        if callable(obj) and not inspect.isclass(obj):  # functions, ufuncs, array-function dispatchers
            add(f"numpy.{name}", "function", uri)
        elif inspect.isclass(obj) and not issubclass(obj, np.generic):
            add(f"numpy.{name}", "class", uri)
    for name in sorted(dir(np.ndarray)):
        if name.startswith("_"):
            continue
        role = "method" if callable(getattr(np.ndarray, name)) else "attribute"
        add(f"numpy.ndarray.{name}", role, f"reference/generated/numpy.ndarray.{name}.html#$")
    for name in sorted(dir(np.linalg)):
        obj = getattr(np.linalg, name)
        if not name.startswith("_") and callable(obj) and not inspect.isclass(obj):
            add(f"numpy.linalg.{name}", "function", f"reference/generated/numpy.linalg.{name}.html#$")
    for name in SCALARS:
        # The manual documents the scalar types as attributes of numpy; :class: links work too.
        for role in ("class", "attribute"):
            add(f"numpy.{name}", role, "reference/arrays.scalars.html#$")
    lines = entries[:]
    for term in GLOSSARY:
        anchor = "term-" + term.replace(" ", "-")
        lines.append(f"{term} std:term -1 glossary.html#{anchor} -")
    return lines


def main():
    header = (
        "# Sphinx inventory version 2\n"
        "# Project: NumPy\n"
        f"# Version: {'.'.join(np.__version__.split('.')[:2])}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "\n".join(_entries()) + "\n"
    OUT.write_bytes(header.encode() + zlib.compress(body.encode(), 9))
    print(f"wrote {OUT} ({body.count(chr(10))} entries)")


if __name__ == "__main__":
    main()
