# SPDX-License-Identifier: BSD-3-Clause
"""Import each CPU kernel module in the best variant this CPU supports.

``setup.py`` builds some kernel modules more than once on x86-64 (baseline,
AVX2+FMA+F16C, AVX-512), side by side in ``caffe2op._cpu``.  At import the
best variant that the CPU supports (cpuid, :func:`caffe2op._cpu._runtime.cpu_supports`)
and that was built is used; the baseline module is the fallback.  Every variant
computes the same bits.  ``CAFFE2OP_CPU_VARIANT=baseline`` (or ``avx2``,
``avx512``) forces one, for tests and comparisons; a variant the CPU cannot
run is never chosen.
"""

import importlib
import os

from ._cpu import _runtime

VARIANTS = ("avx512", "avx2")  # best first; "baseline" is always last

# stem -> variant loaded, for show_config().
loaded = {}


def usable_variants():
    """The variants this CPU supports, best first, ending with "baseline"."""
    supported = [v for v in VARIANTS if _runtime.cpu_supports(v)] + ["baseline"]
    forced = os.environ.get("CAFFE2OP_CPU_VARIANT", "").strip().lower()
    if forced in supported:
        return supported[supported.index(forced) :]
    return supported


def load(stem):
    """The kernel module ``caffe2op._cpu.<stem>`` in the best variant available."""
    for variant in usable_variants():
        name = f"caffe2op._cpu.{stem}" + ("" if variant == "baseline" else f"_{variant}")
        try:
            module = importlib.import_module(name)
        except ImportError:  # not built here (other architecture, old compiler)
            continue
        loaded[stem] = variant
        return module
    raise ImportError(f"caffe2op: no build of the CPU kernel module {stem!r}")
