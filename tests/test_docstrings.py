# SPDX-License-Identifier: BSD-3-Clause
"""The public API's docstrings: numpydoc sections, parameters that match signatures, a complete API page.

Like scikit-learn's ``test_docstring_parameters.py``, with a small numpydoc
section parser of its own (numpydoc itself is a docs dependency, not a test
one).  For every name in ``caffe2op.__all__`` (and every public method and
property of the public classes):

- the docstring exists and starts with a one-line summary;
- the ``Parameters`` section documents exactly the signature's parameters, in
  order (``*args``/``**kwargs`` written with their stars);
- a function whose body returns a value has ``Returns``, a generator
  ``Yields``; one that raises has ``Raises``, and every name listed there is
  an exception class (a builtin, a caffe2op one, or a dotted path such as
  ``pyopencl.RuntimeError``);
- functions, classes and methods have ``Examples`` (properties, documented
  as values, are exempt);
- a public module (``caffe2op.opencl``) has a docstring and an ``__all__``,
  and every name in it is checked like the others;
- section headers are numpydoc's.

The docstring examples themselves run as doctests (``--doctest-modules`` in
``pyproject.toml``); the schema examples shown on the operator pages run here.
"""

import ast
import builtins
import doctest
import enum
import importlib
import inspect
import pathlib
import re
import textwrap

import pytest

import caffe2op
from caffe2op import registry
from tests._helpers import skip_opencl_examples

ROOT = pathlib.Path(__file__).resolve().parents[1]
API_PAGES = ROOT / "docs" / "api"  # index.rst and one page per section

NUMPYDOC_SECTIONS = {
    "Parameters",
    "Returns",
    "Yields",
    "Receives",
    "Other Parameters",
    "Raises",
    "Warns",
    "Warnings",
    "See Also",
    "Notes",
    "References",
    "Examples",
    "Attributes",
    "Methods",
}


# --- a small numpydoc parser ------------------------------------------------


def sections(doc):
    """``{header: [lines]}`` of a numpydoc docstring (the summary is under ``""``)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    result = {"": []}
    current = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        underline = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"-{3,}", underline) and len(underline) == len(line.strip()):
            current = line.strip()
            result[current] = []
            i += 2
            continue
        result[current].append(line)
        i += 1
    return result


def entry_names(section_lines):
    """Names of the entries of a Parameters-like section (``a, b : int`` gives a and b)."""
    names = []
    for line in section_lines:
        if not line.strip() or line.startswith((" ", "\t")):
            continue
        head = line.split(" : ", 1)[0].strip()
        names += [name.strip() for name in head.split(",") if name.strip()]
    return names


# --- what to check ----------------------------------------------------------


def _source_tree(func):
    func = inspect.unwrap(func)
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return None
    tree = ast.parse(source)
    return tree.body[0] if tree.body and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def _own_nodes(function_node):
    """AST nodes of a function's body, not descending into nested functions or classes."""
    stack = list(function_node.body)
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                stack.append(child)


def body_facts(func):
    """(returns a value, yields, raises) from the function's own source."""
    node = _source_tree(func)
    if node is None:
        return False, False, False
    returns = yields = raises = False
    for n in _own_nodes(node):
        if isinstance(n, ast.Return) and n.value is not None:
            returns = returns or not (isinstance(n.value, ast.Constant) and n.value.value is None)
        elif isinstance(n, (ast.Yield, ast.YieldFrom)):
            yields = True
        elif isinstance(n, ast.Raise) and n.exc is not None:
            raises = True
    return returns, yields, raises


def signature_names(func, *, drop_first=False):
    """Parameter names as a docstring writes them (``*args``, ``**kwargs``)."""
    params = list(inspect.signature(func).parameters.values())
    if drop_first and params:
        params = params[1:]
    prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return [prefix.get(p.kind, "") + p.name for p in params]


def _exception_names():
    names = {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
    names |= {n for n in caffe2op.__all__ if isinstance(getattr(caffe2op, n), type)}
    return names


# Optional dependencies whose exceptions a docstring may name (``pyopencl.RuntimeError``) where they are not installed.
OPTIONAL_MODULES = {"pyopencl", "scipy"}


def _is_dotted_exception(name):
    """Whether ``name`` is a dotted path such as ``pyopencl.RuntimeError`` to an exception class."""
    module_name, _, attr = name.rpartition(".")
    if not module_name:
        return False
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return module_name.split(".")[0] in OPTIONAL_MODULES
    obj = getattr(module, attr, None)
    return isinstance(obj, type) and issubclass(obj, BaseException)


def check_callable(where, func, *, drop_first=False, needs_examples=True):
    """Problems with one function's or method's docstring (a list of str)."""
    doc = inspect.getdoc(func)
    if not doc or not doc.strip():
        return [f"{where}: no docstring"]
    parsed = sections(doc)
    problems = [f"{where}: unknown section {name!r}" for name in parsed if name and name not in NUMPYDOC_SECTIONS]
    summary = [line for line in parsed[""] if line.strip()]
    if not summary:
        problems.append(f"{where}: no summary line")
    expected = signature_names(func, drop_first=drop_first)
    documented = entry_names(parsed.get("Parameters", []))
    if expected != documented:
        problems.append(f"{where}: Parameters document {documented}, the signature has {expected}")
    returns, yields, raises = body_facts(func)
    if returns and "Returns" not in parsed:
        problems.append(f"{where}: returns a value but has no Returns section")
    if yields and "Yields" not in parsed:
        problems.append(f"{where}: yields but has no Yields section")
    if raises and "Raises" not in parsed:
        problems.append(f"{where}: raises but has no Raises section")
    known = _exception_names()
    for name in entry_names(parsed.get("Raises", [])):
        if name not in known and not _is_dotted_exception(name):
            problems.append(f"{where}: Raises lists {name!r}, which is not an exception class")
    if needs_examples and "Examples" not in parsed:
        problems.append(f"{where}: no Examples section")
    return problems


def _public_names():
    return [name for name in caffe2op.__all__ if name != "__version__"]


def _public_members(cls):
    """(name, raw attribute) of the public methods and properties a class defines (its own, and its
    caffe2op bases')."""
    seen = {}
    for klass in reversed(cls.__mro__):
        if not (klass.__module__ or "").startswith("caffe2op"):
            continue
        for name, raw in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(raw, (staticmethod, classmethod, property)) or inspect.isfunction(raw):
                seen[name] = raw
    return sorted(seen.items())


def check_class(name, cls):
    problems = []
    doc = inspect.getdoc(cls)
    if not doc:
        return [f"{name}: no docstring"]
    parsed = sections(doc)
    problems += [f"{name}: unknown section {s!r}" for s in parsed if s and s not in NUMPYDOC_SECTIONS]
    if "Examples" not in parsed:
        problems.append(f"{name}: no Examples section")
    own_init = "__init__" in vars(cls) and not issubclass(cls, enum.Enum)
    if own_init:
        expected = signature_names(cls.__init__, drop_first=True)
        documented = entry_names(parsed.get("Parameters", [])) or entry_names(parsed.get("Attributes", []))
        if expected != documented:
            problems.append(f"{name}: Parameters document {documented}, __init__ has {expected}")
    for member, raw in _public_members(cls):
        where = f"{name}.{member}"
        if isinstance(raw, property):
            if not (raw.__doc__ or "").strip():
                problems.append(f"{where}: property without a docstring")
            continue
        func = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
        problems += check_callable(where, func, drop_first=not isinstance(raw, staticmethod))
    return problems


def check_module(name, module):
    """A public module: a docstring with a summary, an ``__all__``, and every name in it checked as above."""
    doc = inspect.getdoc(module)
    if not doc or not doc.strip():
        return [f"{name}: no module docstring"]
    parsed = sections(doc)
    problems = [f"{name}: unknown section {s!r}" for s in parsed if s and s not in NUMPYDOC_SECTIONS]
    if not [line for line in parsed[""] if line.strip()]:
        problems.append(f"{name}: no summary line")
    public = getattr(module, "__all__", None)
    if not public:
        return [*problems, f"{name}: a public module needs an __all__ (its documented names)"]
    for member in public:
        obj = getattr(module, member)
        where = f"{name}.{member}"
        if isinstance(obj, type):
            problems += check_class(where, obj)
        elif callable(obj):
            problems += check_callable(where, obj)
        else:
            problems.append(f"{where}: neither a class nor a function")
    return problems


@pytest.mark.parametrize("name", _public_names())
def test_public_docstring(name):
    """Every public name has a numpydoc docstring whose parameters match its signature (a public module: every
    name of its ``__all__``)."""
    obj = getattr(caffe2op, name)
    if isinstance(obj, type):
        problems = check_class(name, obj)
    elif inspect.ismodule(obj):
        problems = check_module(name, obj)
    else:
        assert callable(obj), f"{name} is neither a class nor a function: document it in docs/api/index.rst"
        problems = check_callable(name, obj)
    assert not problems, "\n".join(problems)


def test_checker_catches_mismatches():
    """The checker itself: a wrong parameter name, a missing Returns and a missing Raises are reported."""

    def bad(alpha, *, beta=1):
        """Do something.

        Parameters
        ----------
        alpha : int
            First.
        gamma : int
            Not in the signature.
        """
        if alpha:
            raise ValueError("no")
        return alpha + beta

    problems = "\n".join(check_callable("bad", bad))
    assert "['alpha', 'gamma']" in problems and "['alpha', 'beta']" in problems
    assert "no Returns section" in problems and "no Raises section" in problems and "no Examples" in problems


def test_module_checker():
    """The checker of public modules: it wants a docstring and an __all__, and checks the names in it."""
    import types

    module = types.ModuleType("fake", "A fake module.")
    assert any("__all__" in problem for problem in check_module("fake", module))

    def undocumented(x):
        return x

    module.undocumented, module.__all__ = undocumented, ["undocumented"]
    assert check_module("fake", module) == ["fake.undocumented: no docstring"]
    assert _is_dotted_exception("pyopencl.RuntimeError") and not _is_dotted_exception("numpy.ndarray")


# --- the API page lists every public name exactly once ---------------------------------------------


def api_page_names():
    """Names listed on the pages of docs/api/: autosummary entries and ``.. data::`` directives."""
    names = []
    for page in sorted(API_PAGES.glob("*.rst")):
        in_autosummary = False
        module = "caffe2op"  # entries under another currentmodule (caffe2op.dask ...) are that module's names
        for line in page.read_text().splitlines():
            match = re.match(r"\.\. currentmodule:: (\S+)", line)
            if match:
                module = match.group(1)
            if line.startswith(".. autosummary::"):
                in_autosummary = True
                continue
            if in_autosummary:
                if line.startswith("   :") or not line.strip():
                    continue
                if line.startswith("   "):
                    if module == "caffe2op":
                        names.append(line.strip())
                    continue
                in_autosummary = False
            match = re.match(r"\.\. data:: (\S+)", line)
            if match:
                names.append(match.group(1))
    return names


def test_api_page_lists_every_public_name_once():
    listed = api_page_names()
    duplicates = sorted({n for n in listed if listed.count(n) > 1})
    assert not duplicates, f"listed more than once in {API_PAGES}: {duplicates}"
    missing = sorted(set(caffe2op.__all__) - set(listed))
    assert not missing, f"public names missing from {API_PAGES} (add each to its section page): {missing}"
    unknown = sorted(set(listed) - set(caffe2op.__all__))
    assert not unknown, f"{API_PAGES} lists names that are not in caffe2op.__all__: {unknown}"


# --- the operator pages' content ---------------------------------------------------------------------


def builtin_operator_types():
    """Operator types implemented in caffe2op.ops (what the operator pages document)."""
    types = set()
    for device_type in caffe2op.DeviceType:
        for op_type in caffe2op.registered_operators(device_type):
            op_def = caffe2op.OperatorDef(type=op_type, device_option=caffe2op.DeviceOption(device_type))
            if registry.lookup_operator_class(op_def).__module__.startswith("caffe2op.ops."):
                types.add(op_type)
    return sorted(types)


@pytest.mark.parametrize("op_type", builtin_operator_types())
def test_builtin_schema_is_documented(op_type):
    """Each built-in operator's schema has what its docs page shows: doc, formula, example, and docs for
    every input, output and argument."""
    schema = caffe2op.get_schema(op_type)
    assert schema.doc.strip() and schema.formula.strip() and schema.example.strip(), op_type
    undocumented = [n for n, d in (*schema.inputs, *schema.outputs) if not d.strip()]
    undocumented += [a.name for a in schema.args if not a.doc.strip()]
    assert not undocumented, f"{op_type}: no doc for {undocumented}"
    assert len(schema.inputs) >= min(schema.min_input, 1) and len(schema.outputs) >= min(schema.min_output, 1)


@pytest.mark.parametrize("op_type", builtin_operator_types())
def test_schema_example_runs(op_type):
    """The example on each operator page is a doctest that passes (on the CPU)."""
    example = caffe2op.get_schema(op_type).example
    test = doctest.DocTestParser().get_doctest(example, {}, f"{op_type} schema example", None, 0)
    assert test.examples, f"{op_type}: the schema example has no >>> lines"
    skip_opencl_examples(test.examples)  # ``# doctest: +OPENCL`` lines run where there is a device
    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    output = []
    runner = doctest.DocTestRunner(optionflags=flags)
    runner.run(test, out=output.append)
    assert runner.failures == 0, "".join(output)
