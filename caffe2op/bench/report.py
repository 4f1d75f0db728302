# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark output: the machine description, JSON, the Markdown report and one plot per sweep.

Every ratio is a quotient of two median times ``t(...)`` measured in the same
case, and says which way round it is: in the tables, the figure after a time
is ``t(contender) / t(caffe2op)``; each target states its own formula.
"""

import datetime
import json
import os
import pathlib
import platform
import re
import sys

import numpy as np


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def machine_info():
    """Facts about the machine and software the benchmark ran on.

    Returns
    -------
    dict
        CPU model, core count, memory, OS, and versions of Python and peers.
    """
    import caffe2op
    from caffe2op._cpu import _runtime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = None
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "caffe2op": caffe2op.__version__,
        "openmp": _runtime.openmp_enabled(),
        "numpy": np.__version__,
        "torch": _version("torch"),
        "scikit-learn": _version("sklearn"),
        "scipy": _version("scipy"),
        "numba": _version("numba"),
        "command": "python -m caffe2op bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
    }


def format_seconds(seconds):
    """``3.51 ms``-style text for a duration."""
    if seconds is None:
        return "n/a"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def record(case, results):
    """The JSON record of one measured case (its targets evaluated)."""
    from .timing import evaluate_targets

    return {
        "group": case.group,
        "name": case.name,
        "threads": case.threads,
        "series": case.series,
        "x": case.x,
        "params": case.params,
        "results": results,
        "targets": evaluate_targets(case, results),
    }


def write_json(path, machine, records):
    """Write the machine description and every case's results as JSON."""
    with open(path, "w") as f:
        json.dump({"machine": machine, "cases": records}, f, indent=1, default=float)


def write_all(folder, machine, records, *, quick, markdown_name=None, plot_dir=None, json_name="auto"):
    """Write the JSON, the Markdown report and the plots into ``folder``; return the paths written.

    Parameters
    ----------
    folder : path
        Where the report goes.
    machine, records
        Output of :func:`machine_info` and :func:`record`.
    quick : bool
        A ``--quick`` run: the files are named ``benchmarks-quick.*``.
    markdown_name : str, optional
        File name of the report (default ``benchmarks.md`` or ``benchmarks-quick.md``).
    plot_dir : path, optional
        Folder of the plots (default ``plots`` in ``folder``).
    json_name : str or None
        ``"auto"`` (``benchmarks[-quick].json``), a name, or None for no JSON.
    """
    folder = pathlib.Path(folder)
    stem = "benchmarks-quick" if quick else "benchmarks"
    written = []
    if json_name is not None:
        json_path = folder / (f"{stem}.json" if json_name == "auto" else json_name)
        write_json(json_path, machine, records)
        written.append(json_path)
    plot_dir = pathlib.Path(plot_dir) if plot_dir is not None else folder / "plots"
    plots = plot_sweeps(plot_dir, records)
    written += list(plots.values())
    for stale in plot_dir.glob("*.png") if plots else ():  # the folder is the report's own: drop old sweeps' plots
        if stale not in plots.values():
            stale.unlink()
    markdown_path = folder / (markdown_name or f"{stem}.md")
    relative = {key: os.path.relpath(path, markdown_path.parent).replace(os.sep, "/") for key, path in plots.items()}
    markdown_path.write_text(markdown(machine, records, relative))
    written.append(markdown_path)
    return written


def _ratio(result, ours):
    if ours is None or result is ours or "median_s" not in result or "median_s" not in ours:
        return ""
    return f" ({result['median_s'] / ours['median_s']:.2f})"


def _cell(result, ours):
    if result is None:
        return ""
    if "missing" in result:
        return "missing"  # the reason is in the notes under the tables
    return format_seconds(result["median_s"]) + _ratio(result, ours)


def _measured(row):
    if row["measured"] is None:
        return "n/a"
    if row["kind"] in ("speedup", "within"):
        return f"{row['measured']:.2f}"
    return format_seconds(row["measured"])


_READING = (
    "How to read this page: `t(X)` is the median time of contender X in one case.  In the tables, the figure in "
    "parentheses after a time is **t(contender) / t(caffe2op)**, both measured in the same case: above 1 the "
    "contender is slower than caffe2op.  For a limit (a *limits* table: C kernels measured on this machine) it is "
    "the fraction of the limit's speed caffe2op reaches: 1 is at the limit.  Each target states its own formula "
    "(for example `t(caffe2op) / t(C floor kernel) <= 1.1`), and its measured value is that formula's left side."
)


def _case_title(record, group_threads):
    threads = record["threads"]
    return record["name"] if threads == group_threads else f"{record['name']} ({threads} thread{'s' * (threads > 1)})"


def _tables(members, role_sets, group_threads, max_columns=4):
    """Markdown tables of the contenders whose roles are in ``role_sets``; at most ``max_columns`` besides ours."""
    lines = []
    for title, roles in role_sets:
        labels = []
        for r in members:
            labels += [
                label
                for label, res in r["results"].items()
                if res.get("role") in roles and label not in labels and label != "caffe2op"
            ]
        if not labels:
            continue
        for start in range(0, len(labels), max_columns):
            chunk = labels[start : start + max_columns]
            header = ["case", "caffe2op", *chunk]
            rows = []
            for r in members:
                ours = next((res for res in r["results"].values() if res.get("role") == "ours"), None)
                ours_label = next((lab for lab, res in r["results"].items() if res.get("role") == "ours"), None)
                if not any(label in r["results"] for label in chunk):
                    continue
                ours_cell = (
                    _cell(ours, None)
                    if ours_label == "caffe2op" or ours is None
                    else (f"{ours_label}: {_cell(ours, None)}")
                )
                rows.append(
                    [_case_title(r, group_threads), ours_cell] + [_cell(r["results"].get(x), ours) for x in chunk]
                )
            if not rows:
                continue
            lines += ["", f"*{title}*", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(machine, records, plots=None):
    """The Markdown report: how to read it, machine, targets, then each group's tables and plots.

    Parameters
    ----------
    machine : dict
        Output of :func:`machine_info`.
    records : list of dict
        Output of :func:`record`, one per case.
    plots : dict, optional
        ``{(group, series): relative path}`` of the plots to show.

    Returns
    -------
    str
        The report.
    """
    plots = plots or {}
    seconds = machine.get("seconds")
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{machine['command'].strip()}` on {machine['date']}"
        + (f" in {seconds / 60:.1f} minutes" if seconds else "")
        + ".  Rerun it to refresh this page (`python -m caffe2op bench --update-docs`); "
        "`python -m caffe2op bench --help` lists the options.",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['os']}",
        f"- Software: Python {machine['python']}, caffe2op {machine['caffe2op']} "
        f"(OpenMP {'yes' if machine['openmp'] else 'no'}), NumPy {machine['numpy']}, numba {machine.get('numba')}, "
        f"torch {machine['torch']}, scikit-learn {machine['scikit-learn']}, SciPy {machine['scipy']}",
        "- Method: each contender is first checked against the same reference result, warmed up, then timed at "
        "least 5 times (short calls more, up to 200) on fresh inputs prepared outside the timed region; the "
        "contenders of a case are timed in interleaved rounds, so that a noisy stretch of the machine hits every "
        "side of a ratio.  The thread count is caffe2op's and the peers' (NumPy is single-threaded; torch's "
        "renorm is a serial loop, run with one thread).",
        "",
        _READING,
        "",
        "## Targets",
        "",
        "| case | goal | measured | met |",
        "|---|---|---|---|",
    ]
    for r in records:
        for row in r["targets"]:
            met = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
            threads = "" if r["threads"] == 2 else f" ({r['threads']} thread{'s' * (r['threads'] > 1)})"
            lines.append(f"| {r['group']}: {r['name']}{threads} | `{row['goal']}` | {_measured(row)} | {met} |")
    groups = []
    for r in records:
        if r["group"] not in groups:
            groups.append(r["group"])
    for group in groups:
        members = [r for r in records if r["group"] == group]
        counts = {}
        for r in members:
            counts[r["threads"]] = counts.get(r["threads"], 0) + 1
        group_threads = max(counts, key=lambda t: (counts[t], t))
        lines += ["", f"## {group}", "", f"{group_threads} thread{'s' * (group_threads > 1)} unless the case says."]
        lines += _tables(
            members,
            [("against peers", {"peer"}), ("other caffe2op entry points", {"ours"}), ("against limits", {"floor"})],
            group_threads,
        )
        notes = sorted(
            {f"{label}: {res['note']}" for r in members for label, res in r["results"].items() if res.get("note")}
            | {
                f"{label}: missing: {res['missing']}"
                for r in members
                for label, res in r["results"].items()
                if "missing" in res
            }
        )
        if notes:
            lines += [""] + [f"- {note}" for note in notes]
        for (plot_group, series), path in plots.items():
            if plot_group == group:
                lines += ["", f"[![{group}: time against {series}]({path})]({path})"]
    return "\n".join(lines) + "\n"


def _slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def plot_sweeps(folder, records):
    """One PNG per swept series: caffe2op, its limits and its best peer against the swept quantity.

    Returns
    -------
    dict
        ``{(group, series): path}``; empty without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    series = []
    for r in records:
        key = (r["group"], r.get("series"))
        if key[1] and key not in series:
            series.append(key)
    written = {}
    for group, name in series:
        members = [r for r in records if (r["group"], r.get("series")) == (group, name)]
        lines = _plot_lines(members)
        if not lines:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(7, 4.4))
        for label, role, points in lines:
            xs, ys = zip(*points, strict=True)
            style = dict(ours=dict(linewidth=2.6), peer=dict(linewidth=1.4), floor=dict(linewidth=1.4, linestyle="--"))
            ax.plot(xs, ys, marker="o", label=f"{label} (limit)" if role == "floor" else label, **style[role])
        ax.set_title(f"{group}: time against {name}", fontsize=11)
        ax.set_xlabel(name)
        ax.set_ylabel("median time (s)")
        ax.set_yscale("log")
        xs = sorted({r["x"] for r in members})
        if min(xs) > 0 and max(xs) / min(xs) >= 100:
            ax.set_xscale("log")
        ax.set_xticks(xs, [_tick(x) for x in xs])  # the measured sizes, named as in the tables
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=9)
        fig.tight_layout()
        path = folder / f"{_slug(group)}-{_slug(name)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written[(group, name)] = path
    return written


def _tick(x):
    """``100``, ``10^6``, ``0.3``: an axis label for a measured size."""
    if x >= 10_000 and float(np.log10(x)).is_integer():
        return f"$10^{{{int(np.log10(x))}}}$"
    return f"{x:g}" if x < 10_000 else f"{x:,.0f}"


def _plot_lines(members):
    """``[(label, role, [(x, seconds)])]``: caffe2op, every limit, and the peer fastest in geometric mean."""

    def points(label):
        return sorted(
            (r["x"], r["results"][label]["median_s"]) for r in members if "median_s" in r["results"].get(label, {})
        )

    roles = {}
    for r in members:
        for label, res in r["results"].items():
            if "median_s" in res:
                roles.setdefault(label, res["role"])
    lines = [(label, role, points(label)) for label, role in roles.items() if role == "ours"][:1]
    peers = [(label, points(label)) for label, role in roles.items() if role == "peer"]
    if peers:
        # The best peer: fastest in geometric mean over the points it shares with caffe2op's line.
        def score(item):
            own = dict(lines[0][2]) if lines else {}
            shared = [(t, own[x]) for x, t in item[1] if x in own]
            return (-len(shared), float(np.exp(np.mean([np.log(t / o) for t, o in shared]))) if shared else 0.0)

        label, best = min(peers, key=score)
        lines.append((label, "peer", best))
    lines += [(label, role, points(label)) for label, role in roles.items() if role == "floor"]
    return [line for line in lines if line[2]]
