# SPDX-License-Identifier: BSD-3-Clause
"""Build script for caffe2op.

The CPU kernels are Cython modules in ``pyx/``; they are compiled as the
private package ``caffe2op._cpu``.  The OpenCL C sources in
``opencl_kernels/`` are installed as the data package ``caffe2op._cl``.

Every Cython compiler directive is set here and nowhere else.  Set
``CAFFE2OP_DEBUG_CYTHON=1`` to build with bounds, wraparound and
initialisation checks turned back on.

OpenMP is probed with a tiny test program.  Without it the build still
succeeds, with a warning, and the kernels run serially
(``caffe2op.show_config()`` reports it).

CPU variants: on x86-64 the modules of ``VARIANT_MODULES`` are compiled
once more per entry of ``CPU_VARIANTS`` (e.g. ``caffe2op._cpu.sparse_normalize_avx2``
beside the baseline ``caffe2op._cpu.sparse_normalize``), from a generated
one-line ``.pyx`` that includes the module's source.  ``caffe2op._dispatch``
imports the best variant the CPU supports (cpuid) and falls back to the
baseline, so a wheel still runs on any x86-64; other architectures build the
baseline only.  A variant the compiler cannot build is left out with a warning.
"""

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
    "embedsignature": False,  # garbles fused-type signatures; autodoc reads binding=True ones
    "binding": True,
}

if os.environ.get("CAFFE2OP_DEBUG_CYTHON") == "1":
    CYTHON_DIRECTIVES.update(boundscheck=True, wraparound=True, initializedcheck=True)

# Kernel modules (stems of pyx/*.pyx) built in every CPU variant, and the variants:
# name -> extra compiler flags.  Names must match caffe2op/_dispatch.py's cpuid checks.
# (stop_gradient is a memcpy per thread: one baseline build.)
VARIANT_MODULES = ["normalize_sparse", "sparse_normalize"]
CPU_VARIANTS = {
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": [
        "-mavx2",
        "-mfma",
        "-mf16c",
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mprefer-vector-width=512",
    ],
}


def _builds_cpu_variants():
    """Whether this build makes the x86-64 variants (GCC-style compilers on x86-64 only)."""
    if os.environ.get("CAFFE2OP_NO_CPU_VARIANTS") == "1" or sys.platform == "win32":
        return False
    return platform.machine().lower() in ("x86_64", "amd64")


OPENMP_TEST_PROGRAM = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d", n > 0 && omp_get_max_threads() > 0);
        return 0;
    }
    """
)


def _openmp_flags(compiler):
    """Return (compile_args, link_args) that enable OpenMP, or ([], []) without it."""
    if os.environ.get("CAFFE2OP_DISABLE_OPENMP") == "1":
        warnings.warn("caffe2op: OpenMP disabled by CAFFE2OP_DISABLE_OPENMP=1; CPU kernels run serially")
        return [], []
    if compiler.compiler_type == "msvc":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    tmp = Path(tempfile.mkdtemp(prefix="caffe2op-openmp-"))
    try:
        source = tmp / "test_openmp.c"
        source.write_text(OPENMP_TEST_PROGRAM)
        for compile_args, link_args in candidates:
            try:
                objects = compiler.compile([str(source)], output_dir=str(tmp), extra_postargs=compile_args)
                exe = str(tmp / "test_openmp")
                compiler.link_executable(objects, exe, extra_postargs=link_args)
                out = subprocess.run([exe], capture_output=True, text=True, timeout=30)
                if out.returncode == 0 and out.stdout.strip() == "1":
                    return compile_args, link_args
            except Exception:  # any failure just means "this flag set does not work"
                continue
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    warnings.warn(
        "caffe2op: the C compiler has no working OpenMP; the CPU kernels are built "
        "serially (caffe2op.show_config() will say 'OpenMP: no')"
    )
    return [], []


class BuildExtWithOpenMP(build_ext):
    """``build_ext`` that compiles in parallel and adds OpenMP flags when they work."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1
        # Objects compiled with other flags must not be reused (setuptools only
        # compares timestamps): each configuration gets its own object folder.
        self.build_temp = os.path.join(self.build_temp, _configuration_name())

    def build_extensions(self):
        # A change of configuration since the last build rebuilds every module,
        # also those whose sources did not change (in place or in build/lib).
        configuration = _configuration_name()
        stamp = HERE / "build" / "extension-configuration.txt"
        if stamp.exists() and stamp.read_text() != configuration:
            self.force = True
        compile_args, link_args = _openmp_flags(self.compiler)
        # No FMA contraction: float16 rounding in caffe2op_cpu.h relies on separately
        # rounded products, and results stay identical across platforms.
        optimise = ["/O2"] if self.compiler.compiler_type == "msvc" else ["-O3", "-fno-math-errno", "-ffp-contract=off"]
        self.extensions = [ext for ext in self.extensions if self._compiler_accepts(ext.extra_compile_args)]
        for ext in self.extensions:
            ext.extra_compile_args = optimise + compile_args + list(ext.extra_compile_args or [])
            ext.extra_link_args = link_args + list(ext.extra_link_args or [])
        super().build_extensions()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(configuration)

    def _compiler_accepts(self, flags):
        """Whether the compiler builds a trivial file with ``flags`` (variants need them)."""
        key = tuple(flags or ())
        _cache = _ACCEPTED_FLAGS
        if not key:
            return True
        if key not in _cache:
            tmp = Path(tempfile.mkdtemp(prefix="caffe2op-flags-"))
            try:
                source = tmp / "probe.c"
                source.write_text("int probe(void) { return 0; }\n")
                self.compiler.compile([str(source)], output_dir=str(tmp), extra_postargs=list(key))
                _cache[key] = True
            except Exception:  # this compiler does not know the flags
                warnings.warn(f"caffe2op: the C compiler rejects {' '.join(key)}; that CPU variant is not built")
                _cache[key] = False
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return _cache[key]


# Compiler flag sets already probed: tuple of flags -> accepted.
_ACCEPTED_FLAGS = {}


def _configuration_name():
    """Name of the build configuration chosen by the environment (folder of its objects)."""
    parts = ["serial" if os.environ.get("CAFFE2OP_DISABLE_OPENMP") == "1" else "openmp"]
    if os.environ.get("CAFFE2OP_DEBUG_CYTHON") == "1":
        parts.append("debug")
    return "-".join(parts)


def _extensions():
    from Cython.Build import cythonize

    modules = [
        Extension(
            f"caffe2op._cpu.{source.stem}",
            [f"pyx/{source.name}"],
            include_dirs=["pyx"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )
        for source in sorted((HERE / "pyx").glob("*.pyx"))
    ]
    if _builds_cpu_variants():
        variant_dir = HERE / "build" / "cpu-variants"
        variant_dir.mkdir(parents=True, exist_ok=True)
        for stem in VARIANT_MODULES:
            for variant, flags in CPU_VARIANTS.items():
                shim = variant_dir / f"{stem}_{variant}.pyx"
                text = f'# Generated by setup.py: {stem}.pyx for the {variant} CPU variant.\ninclude "{stem}.pyx"\n'
                if not shim.exists() or shim.read_text() != text:
                    shim.write_text(text)
                modules.append(
                    Extension(
                        f"caffe2op._cpu.{stem}_{variant}",
                        [str(shim.relative_to(HERE))],
                        include_dirs=["pyx"],
                        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                        extra_compile_args=list(flags),
                    )
                )
    # Generated C goes to a folder per directive set, so switching CAFFE2OP_DEBUG_CYTHON regenerates it.
    cython_dir = HERE / "build" / ("cython-debug" if os.environ.get("CAFFE2OP_DEBUG_CYTHON") == "1" else "cython")
    return cythonize(
        modules, compiler_directives=CYTHON_DIRECTIVES, include_path=["pyx"], build_dir=str(cython_dir), quiet=True
    )


setup(
    packages=find_packages(include=["caffe2op", "caffe2op.*"]) + ["caffe2op._cpu", "caffe2op._cl"],
    package_dir={"caffe2op._cpu": "pyx", "caffe2op._cl": "opencl_kernels"},
    package_data={"caffe2op._cl": ["*.cl", "*.h"], "caffe2op.bench": ["floor.c"]},
    exclude_package_data={"caffe2op._cpu": ["*.pyx", "*.pxd", "*.pxi", "*.c", "*.h"]},
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtWithOpenMP},
    zip_safe=False,
)
