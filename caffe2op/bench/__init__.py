# SPDX-License-Identifier: BSD-3-Clause
"""The benchmark harness behind ``python -m caffe2op bench``.

caffe2op is timed against NumPy, numba, torch and scikit-learn and against
limits measured on the same machine (C kernels built on first use, see
:mod:`caffe2op.bench.floor`), in the same run; every contender's result is
checked against a reference first.  The results go to a folder of their own
(JSON, a Markdown report, one plot per sweep); ``--update-docs`` also
refreshes ``docs/benchmarks.md``.  Timings belong in this harness, never in
tests.
"""

import argparse
import pathlib
import sys
import textwrap
import time

from .registry import GROUPS, select

__all__ = ["main"]

_DESCRIPTION = (
    "Time caffe2op's operators against NumPy, numba, torch and scikit-learn and against limits measured on this "
    "machine (C kernels for memory bandwidth and a SparseNormalize written for speed alone), after checking every "
    "result against a reference.  Writes a JSON file, a Markdown report and one plot per sweep to the output folder."
)

_EXIT_STATUS = """\
exit status:
  0  the run finished (and, with --check, every target was met)
  1  with --check: a target was missed or could not be measured (a peer not installed);
     always: a contender gave a wrong result (the run stops there)
  2  a usage error (unknown option or group, --update-docs with --quick or --groups)

The reports are written whatever the targets' outcome.  Nothing outside the
output folder is written unless --update-docs is given; the measured limits
are built once into ~/.cache/caffe2op-bench (or $XDG_CACHE_HOME)."""


def _epilog():
    width = max(len(key) for key in GROUPS)
    groups = "\n".join(f"  {key:<{width}}  {group.description}" for key, group in GROUPS.items())
    return (
        f"groups (--groups takes a comma-separated list of these names or their prefixes):\n{groups}\n\n{_EXIT_STATUS}"
    )


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m caffe2op bench",
        description=textwrap.fill(_DESCRIPTION, 79),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer sizes per sweep and shorter timing (~2 minutes)")
    parser.add_argument(
        "--groups", default="", metavar="NAMES", help="run only these groups (listed below); default: all"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, metavar="N", help="timed repeats per contender, at least 5 (default 5)"
    )
    parser.add_argument(
        "--output",
        "--output-dir",
        default=".bench",
        metavar="DIR",
        help="folder for the JSON, the Markdown report and the plots (default: .bench in the current folder)",
    )
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="also write docs/benchmarks.md and its plots in the source checkout (a full run only)",
    )
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    return parser


def _docs_dir():
    """The ``docs`` folder of the source checkout caffe2op runs from (editable install), else of the current folder."""
    for root in (pathlib.Path(__file__).resolve().parents[2], pathlib.Path.cwd()):
        if (root / "docs" / "conf.py").exists():
            return root / "docs"
    return None


def main(argv=None):
    """Run the benchmarks and write the reports.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments after ``bench`` (see ``python -m caffe2op bench --help``).

    Returns
    -------
    int
        The exit status described by ``--help``: 0, or 1 with ``--check``
        when a target is missed, or 2 on a usage error.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        groups = select(args.groups.split(","))
    except ValueError as err:
        parser.error(str(err))
    docs = None
    if args.update_docs:
        if args.quick or args.groups:
            parser.error("--update-docs needs the full run: drop --quick and --groups")
        docs = _docs_dir()
        if docs is None:
            parser.error("--update-docs: no docs/conf.py in the source checkout or the current folder")

    from . import report
    from .timing import measure

    repeats = max(5, args.repeats or 5)
    out_dir = pathlib.Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = report.machine_info()
    records = []
    started = time.perf_counter()
    for group in groups:
        print(f"[{time.perf_counter() - started:6.0f} s] {group.key}", file=sys.stderr, flush=True)
        for case in group.cases(args.quick):
            try:
                results = measure(case, repeats, budget_s=0.5 if args.quick else 1.0)
            except AssertionError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            records.append(report.record(case, results))
            print(f"         {case.group}: {case.name}", file=sys.stderr, flush=True)
            del case
    machine["seconds"] = round(time.perf_counter() - started, 1)
    written = report.write_all(out_dir, machine, records, quick=args.quick)
    if docs is not None:
        written += report.write_all(
            docs,
            machine,
            records,
            quick=False,
            markdown_name="benchmarks.md",
            plot_dir=docs / "_static" / "benchmarks",
            json_name=None,
        )
    print("wrote " + ", ".join(str(p) for p in written))
    missed = [
        (r["group"], r["name"], t["goal"], t["met"]) for r in records for t in r["targets"] if t["met"] is not True
    ]
    for group, name, goal, met in missed:
        print(f"target {'missed' if met is False else 'not measured'}: {group}: {name}: {goal}")
    print(
        f"{len(records)} cases in {machine['seconds']:.0f} s; "
        f"{sum(len(r['targets']) for r in records) - len(missed)} targets met, {len(missed)} missed or not measured"
    )
    return 1 if args.check and missed else 0
