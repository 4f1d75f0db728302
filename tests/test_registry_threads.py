# SPDX-License-Identifier: BSD-3-Clause
"""Registries under concurrent readers and writers, and the one-way import graph of the registry modules.

issue 10 item 9: one thread registering operators while others built nets,
asked for unknown types or listed the registries raised ``RuntimeError:
dictionary changed size during iteration`` hundreds of times in 5 s.
"""

import ast
import pathlib
import threading

import pytest

import caffe2op
from caffe2op import Operator, OpSchema, register_cpu_operator, register_gradient, register_schema

WRITERS_REGISTER = 300  # per writer thread: implementations, schemas and gradient makers


class _Noop(Operator):
    def run_on_device(self):
        pass


def test_readers_never_see_a_registry_change_size():
    errors = []
    done = threading.Event()

    def writer(tag):
        try:
            for k in range(WRITERS_REGISTER):
                register_cpu_operator(f"ThrW{tag}_{k}", _Noop)
                register_schema(OpSchema(f"ThrS{tag}_{k}", doc="x"))
                register_gradient(f"ThrG{tag}_{k}")(lambda op, g: ([], [None] * len(op.inputs)))
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            errors.append(err)

    def reader():
        try:
            while not done.is_set():
                net = caffe2op.Net("threads")
                net.StopGradient("x", "y")
                with pytest.raises(caffe2op.UnknownOperatorError):
                    caffe2op.create_operator("ThrUnknownType", "x", "y")
                caffe2op.registered_operators()
                caffe2op.registered_schemas()
                caffe2op.registered_gradients()
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    writers = [threading.Thread(target=writer, args=(t,)) for t in range(2)]
    readers = [threading.Thread(target=reader) for _ in range(3)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    for thread in readers:
        thread.join()
    assert errors == []
    registered = set(caffe2op.registered_operators(caffe2op.DeviceType.CPU))
    assert all(f"ThrW{t}_{k}" in registered for t in range(2) for k in range(WRITERS_REGISTER))
    assert len([s for s in caffe2op.registered_schemas() if s.startswith("ThrS")]) == 2 * WRITERS_REGISTER


def test_concurrent_duplicate_registrations_keep_exactly_one():
    outcomes = []

    def register(klass):
        try:
            register_cpu_operator("ThrDuplicate", klass)
            outcomes.append(klass)
        except ValueError:
            outcomes.append(None)

    classes = [type(f"ThrDup{k}", (_Noop,), {}) for k in range(8)]
    threads = [threading.Thread(target=register, args=(k,)) for k in classes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [k for k in outcomes if k is not None]
    assert len(winners) == 1
    from caffe2op.registry import lookup_operator_class

    assert lookup_operator_class(caffe2op.OperatorDef(type="ThrDuplicate")) is winners[0]


def test_duplicate_registration_raises_unless_overwrite():
    """issue 15 item 5: Caffe2 refuses a second registration of an operator type."""

    class First(_Noop):
        pass

    class Second(_Noop):
        pass

    register_cpu_operator("RegDuplicate", First)
    register_cpu_operator("RegDuplicate", First)  # the same class again is harmless
    with pytest.raises(
        ValueError,
        match=r"register_cpu_operator: 'RegDuplicate' already has a CPU implementation \(.*First\).*overwrite=True",
    ):
        register_cpu_operator("RegDuplicate", Second)
    register_cpu_operator("RegDuplicate", Second, overwrite=True)
    register_cpu_operator("RegDuplicate", Second, engine="FAST")  # another engine is another key
    from caffe2op.registry import lookup_operator_class

    assert lookup_operator_class(caffe2op.OperatorDef(type="RegDuplicate")) is Second


REGISTRY_MODULES = [
    "errors",
    "_tables",
    "schema",
    "core",
    "registry",
    "_gradient_makers",
    "_gradient_registry",
    "gradient",
    "backward",
    "net",
    "workspace",
]


def _imports(module):
    """caffe2op modules imported by ``module``, anywhere in it (functions included)."""
    path = pathlib.Path(caffe2op.__file__).parent / f"{module}.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found & set(REGISTRY_MODULES)


def test_registry_modules_import_one_way():
    """issue 10: core, registry and schema imported each other in a circle (lazily, inside functions)."""
    order = {name: k for k, name in enumerate(REGISTRY_MODULES)}
    for module in REGISTRY_MODULES:
        for imported in _imports(module):
            assert order[imported] < order[module], f"caffe2op.{module} imports caffe2op.{imported}, which is above it"
