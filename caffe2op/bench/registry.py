# SPDX-License-Identifier: BSD-3-Clause
"""The registry of benchmark groups: what ``--groups`` selects and in which order they run.

A group is a key, a one-line description, and builders ``builder(quick) ->
iterable of Case`` named as ``"module:function"`` within this package; the
module is imported only when its group runs (so a group may need packages
the others do not).  To add a group, put its builder in a module of its own
in ``caffe2op/bench/`` and call :func:`register_group` at the end of this
file (or from that module, imported here).
"""

import dataclasses
import importlib

__all__ = ["Group", "GROUPS", "register_group", "select"]


@dataclasses.dataclass(frozen=True)
class Group:
    """A group of benchmark cases.

    Attributes
    ----------
    key : str
        The name ``--groups`` matches (by prefix).
    description : str
        One line for ``--help``.
    builders : tuple of str
        ``"module:function"``, the module within :mod:`caffe2op.bench` (or a
        dotted absolute name); each function takes ``quick`` (bool) and
        yields cases.
    """

    key: str
    description: str
    builders: tuple

    def cases(self, quick):
        """Yield the group's cases, building each only when it is asked for (inputs can be large)."""
        for spec in self.builders:
            module, function = spec.split(":")
            module = module if "." in module else f"{__package__}.{module}"
            yield from getattr(importlib.import_module(module), function)(quick)


GROUPS = {}


def register_group(key, description, *builders):
    """Add a group (or replace the one of the same key).

    Parameters
    ----------
    key : str
        Lower-case name without spaces or commas.
    description : str
        One line for ``--help``.
    *builders : str
        ``"module:function"``, the module within :mod:`caffe2op.bench` (or a dotted absolute name).
    """
    GROUPS[key] = Group(key, description, tuple(builders))


def select(names):
    """The groups whose keys start with one of ``names`` (all of them for none), in registry order.

    Raises
    ------
    ValueError
        If a name matches no group.
    """
    names = [n.strip().lower().replace(" ", "") for n in names if n.strip()]
    unknown = [n for n in names if not any(key.startswith(n) for key in GROUPS)]
    if unknown:
        raise ValueError(f"no benchmark group starts with {', '.join(map(repr, unknown))}; groups: {', '.join(GROUPS)}")
    return [g for key, g in GROUPS.items() if not names or any(key.startswith(n) for n in names)]


register_group(
    "sparsenormalize",
    "headline 1,000,000 x 64 case (1 and 2 threads), float16 and one-index pairs",
    "sparse_normalize_cases:headline_cases",
    "sparse_normalize_cases:pair_cases",
)
register_group(
    "sweeps",
    "SparseNormalize against index count, duplicates, dtype, row width, table rows",
    "sparse_normalize_cases:sweep_cases",
)
register_group(
    "smallbatch",
    "a 512-index training step: overhead, the facade, a busy machine",
    "sparse_normalize_cases:small_batch_cases",
)
register_group("stopgradient", "StopGradient above the last-level cache, and in place", "cases:stop_gradient_cases")
register_group("normalize", "Normalize dense (both axes) and CSR/CSC", "cases:normalize_cases")
register_group("constantfill", "ConstantFill through a workspace", "cases:constant_fill_cases")
register_group("backward", "get_backward_pass up to 100,000 operators, gc enabled", "cases:backward_cases")
register_group("opencl", "SparseNormalize and StopGradient on each OpenCL device", "cases:opencl_cases")
register_group(
    "dask",
    "caffe2op.dask: a Zarr table through 1 and 2 workers (skipped without the dask extra)",
    "dask_cases:dask_cases",
)
