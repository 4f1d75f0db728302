# SPDX-License-Identifier: BSD-3-Clause
"""The benchmark harness behind ``python -m caffe2op bench``.

caffe2op is timed against vectorised NumPy, ``torch.embedding_renorm_``,
scikit-learn and the memory floor of each operation, in the same run, and the
results are written as JSON, as a Markdown page (``docs/benchmarks.md`` in a
source checkout) and as a PNG plot of time against size.  Timings belong in
this harness, never in tests.
"""

import argparse
import os
import pathlib

from . import cases as _cases
from .report import machine_info, markdown, plot, write_json
from .timing import evaluate_targets, measure

__all__ = ["main"]


def _default_docs_dir():
    docs = pathlib.Path.cwd() / "docs"
    return docs if (docs / "conf.py").exists() or (docs / "index.rst").exists() else None


def main(argv=None):
    """Run the benchmarks and write the reports.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments after ``bench`` (see ``python -m caffe2op bench --help``).

    Returns
    -------
    int
        0 when every target is met, 1 when one is missed (the reports are written either way).
    """
    parser = argparse.ArgumentParser(prog="python -m caffe2op bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="headline cases and short sweeps (under 2 minutes)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per contender (default 5, min 5)")
    parser.add_argument(
        "--groups",
        default="",
        help="comma-separated prefixes of case groups, e.g. 'sparsenormalize,normalize,stopgradient,constantfill,"
        "backward,opencl,torch' (default: all)",
    )
    parser.add_argument("--output-dir", default=".bench", help="where the JSON goes (default .bench/)")
    docs = _default_docs_dir()
    parser.add_argument(
        "--markdown",
        default=str(docs / "benchmarks.md") if docs else None,
        help="Markdown report path (default docs/benchmarks.md in a source checkout, else in --output-dir)",
    )
    parser.add_argument(
        "--plot",
        default=str(docs / "_static" / "benchmarks.png") if docs else None,
        help="PNG plot path (default docs/_static/benchmarks.png in a source checkout, else in --output-dir)",
    )
    args = parser.parse_args(argv)
    repeats = max(5, args.repeats or 5)
    out_dir = pathlib.Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown_path = pathlib.Path(args.markdown or out_dir / "benchmarks.md")
    plot_path = pathlib.Path(args.plot or out_dir / "benchmarks.png")
    selected = [g.strip().lower() for g in args.groups.split(",") if g.strip()]

    from tqdm import tqdm

    machine = machine_info()
    plan = [case for builder in _cases.CASE_BUILDERS for case in builder(args.quick)]
    if selected:
        # Prefix match, ignoring case and spaces: "sparsenormalize" selects its sweeps and small batch too.
        def chosen(case):
            group = case.group.lower().replace(" ", "")
            return any(group.startswith(s.replace(" ", "")) for s in selected)

        plan = [c for c in plan if chosen(c)]
    records = []
    for case in tqdm(plan, desc="benchmarks", unit="case"):
        results = measure(case, repeats, budget_s=0.5 if args.quick else 1.5)
        records.append(
            {
                "group": case.group,
                "name": case.name,
                "threads": case.threads,
                "series": case.series,
                "x": case.x,
                "params": case.params,
                "results": results,
                "targets": evaluate_targets(case, results),
            }
        )
    json_path = out_dir / ("benchmarks-quick.json" if args.quick else "benchmarks.json")
    write_json(json_path, machine, records)
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    have_plot = plot(plot_path, records)
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    relative_plot = os.path.relpath(plot_path, markdown_path.parent) if have_plot else None
    markdown_path.write_text(markdown(machine, records, relative_plot))
    missed = [(r["group"], r["name"], t["goal"]) for r in records for t in r["targets"] if t["met"] is False]
    print(f"wrote {json_path}, {markdown_path}" + (f", {plot_path}" if have_plot else ""))
    for group, name, goal in missed:
        print(f"target missed: {group}: {name}: {goal}")
    return 1 if missed else 0
