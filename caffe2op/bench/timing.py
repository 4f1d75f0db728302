# SPDX-License-Identifier: BSD-3-Clause
"""Timing primitives of the benchmark harness: cases, contenders, and how they are measured.

Every contender of a case is first run once and its result compared with the
case's reference (a peer that computes something else is a bug, not a win),
then warmed up and timed ``repeats`` times.  Inputs are prepared afresh,
outside the timed region, before every repeat, so in-place operators never
work on rows an earlier repeat already normalised.
"""

import dataclasses
import gc
import random
import statistics
import time

import numpy as np

OURS, PEER, FLOOR = "ours", "peer", "floor"


class Missing(Exception):
    """A peer that cannot run here (not installed, unsupported dtype); reported, never faked."""


@dataclasses.dataclass
class Contender:
    """One implementation timed in a case.

    Attributes
    ----------
    label : str
        Name in tables and plots (e.g. ``"caffe2op"``, ``"numpy"``).
    run : callable
        ``run(inputs) -> output``: the timed call.
    prepare : callable
        ``prepare() -> inputs``: fresh inputs, not timed.
    role : str
        ``"ours"``, ``"peer"`` or ``"floor"``.
    result : callable, optional
        ``result(inputs, output) -> ndarray`` to check against the reference
        (default: the output itself).
    note : str
        Shown next to the timing (e.g. "eps 1e-7").
    expected : callable, optional
        ``expected() -> ndarray``: what this contender must give when it is not
        the case's reference (a floor that only moves memory, say).
    """

    label: str
    run: object
    prepare: object
    role: str = PEER
    result: object = None
    note: str = ""
    expected: object = None


@dataclasses.dataclass
class Target:
    """A goal checked in the report.

    Attributes
    ----------
    peer : str or None
        Label of the contender compared with (None for ``max_time``).
    value : float
        The bound; its meaning depends on ``kind``.
    kind : str
        ``"speedup"``: t(peer) / t(ours) >= value.
        ``"within"``: t(ours) / t(peer) <= value (floors, linearity).
        ``"max_time"``: t(ours) <= value seconds.
        ``"max_extra"``: t(ours) - t(peer) <= value seconds (overheads).
    ours : str
        Label of our contender (default "caffe2op").
    statistic : str
        Which of our timings counts: ``"median_s"`` (default) or ``"q3_s"``
        (the upper quartile, for "never slower" goals); the peer's is always
        its median.
    """

    peer: object
    value: float
    kind: str = "speedup"
    ours: str = "caffe2op"
    statistic: str = "median_s"

    def describe(self):
        """The goal as a formula of median times ``t(...)``, e.g. ``t(numpy) / t(caffe2op) >= 3``."""
        ours = f"t({self.ours})" if self.statistic == "median_s" else f"t75({self.ours})"
        if self.kind == "speedup":
            return f"t({self.peer}) / {ours} >= {self.value:g}"
        if self.kind == "within":
            return f"{ours} / t({self.peer}) <= {self.value:g}"
        if self.kind == "max_time":
            return f"{ours} <= {_seconds_text(self.value)}"
        return f"{ours} - t({self.peer}) <= {_seconds_text(self.value)}"


def _seconds_text(seconds):
    """``1 s``, ``10 us``: a round duration in its natural unit."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:g} {unit}"
    return f"{seconds * 1e9:g} ns"


@dataclasses.dataclass
class Case:
    """A benchmark case: contenders computing the same thing on the same inputs.

    Attributes
    ----------
    group : str
        Section of the report (operator or topic).
    name : str
        What is measured.
    contenders : list of Contender
        Implementations, ours first.
    reference : callable, optional
        ``reference() -> ndarray``: the expected result every contender must give.
    rtol, atol : float
        Tolerance of the correctness check.
    threads : int
        caffe2op thread count for the case.
    x : float, optional
        Position on the plot's x axis (for sweeps).
    series : str, optional
        Plot panel the case belongs to (for sweeps).
    targets : list of Target
        Goals checked in the report.
    params : dict
        Extra facts for the JSON output.
    context : callable, optional
        ``context() -> context manager`` entered around the whole case (checks
        and timed rounds), e.g. a process keeping one core busy.
    keep_gc : bool
        Leave the garbage collector as it is while timing (it is disabled by
        default, so that a collection does not land in one contender's time);
        for cases whose cost includes the collections a user would get.
    """

    group: str
    name: str
    contenders: list
    reference: object = None
    rtol: float = 1e-5
    atol: float = 1e-6
    threads: int = 2
    x: float = None
    series: str = None
    targets: list = dataclasses.field(default_factory=list)
    params: dict = dataclasses.field(default_factory=dict)
    context: object = None
    keep_gc: bool = False


def _check(case, contender, inputs, output):
    reference = contender.expected if contender.expected is not None else case.reference
    if reference is None:
        return
    got = contender.result(inputs, output) if contender.result is not None else output
    expected = reference()
    if hasattr(got, "tocsr") or hasattr(expected, "tocsr"):  # scipy.sparse: compare without densifying
        got, expected = got.tocsr().astype(np.float64), expected.tocsr().astype(np.float64)
        ok = got.shape == expected.shape
        worst = f"shape {got.shape}"
        if ok:
            # |got - expected| <= atol + rtol * |expected| everywhere, checked on the stored entries only.
            excess = abs(got - expected) - case.rtol * abs(expected)
            ok = (excess.max() if excess.nnz else 0.0) <= case.atol
            worst = abs(got - expected).max()
    else:
        got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
        ok = got.shape == expected.shape and np.allclose(got, expected, rtol=case.rtol, atol=case.atol, equal_nan=True)
        worst = np.max(np.abs(got - expected)) if got.shape == expected.shape and got.size else f"shape {got.shape}"
    if not ok:
        raise AssertionError(
            f"{case.group} / {case.name}: {contender.label} disagrees with the reference (max abs diff {worst})"
        )


def measure(case, repeats, warmup=1, budget_s=1.0):
    """Check and time every contender of ``case``, interleaving their repeats.

    Parameters
    ----------
    case : Case
        The case.
    repeats : int
        Timed repeats per contender at least (the median is reported); calls
        under ~60 ms get more, up to 200, for about 0.3 s of timed work.
    warmup : int, default 1
        Untimed runs before timing (after the correctness run).
    budget_s : float, default 1.0
        Wall time (preparation included) that extra repeats of a short call may take.

    Returns
    -------
    dict
        ``{label: {"median_s", "min_s", "q1_s", "q3_s", "repeats", "role", "note"}}``,
        or ``{"missing": reason}`` for peers that could not run.
    """
    import contextlib

    import caffe2op

    caffe2op.set_num_threads(case.threads)
    try:
        with case.context() if case.context is not None else contextlib.nullcontext():
            return _measure(case, repeats, warmup, budget_s)
    finally:
        caffe2op.set_num_threads(None)


def _measure(case, repeats, warmup, budget_s):
    results, plans = {}, []
    for contender in case.contenders:
        try:
            plans.append((contender, _check_and_warm_up(case, contender, repeats, warmup, budget_s)))
        except Missing as why:
            results[contender.label] = {"missing": str(why), "role": contender.role}
    # Rounds interleave the contenders, so that a noisy stretch of the machine hits both sides of a
    # ratio alike instead of one contender's whole block of repeats; each round takes them in a new
    # (seeded) order, so that none always runs right after the same one (or first, after idle threads).
    times = {contender.label: [] for contender, _ in plans}
    order = random.Random(len(case.name))
    gc_was_enabled = gc.isenabled()
    if not case.keep_gc:
        gc.disable()
    try:
        for round_index in range(max((count for _, count in plans), default=0)):
            for contender, count in order.sample(plans, len(plans)):
                if round_index >= count:
                    continue
                inputs = contender.prepare()
                start = time.perf_counter()
                contender.run(inputs)
                times[contender.label].append(time.perf_counter() - start)
                del inputs
    finally:
        if gc_was_enabled:
            gc.enable()
    for contender, count in plans:
        samples = times[contender.label]
        quartiles = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [samples[0]] * 3
        results[contender.label] = {
            "median_s": statistics.median(samples),
            "min_s": min(samples),
            "q1_s": quartiles[0],
            "q3_s": quartiles[2],
            "repeats": count,
            "role": contender.role,
            "note": contender.note,
        }
    # Report in the case's order (missing peers included).
    return {c.label: results[c.label] for c in case.contenders}


def _check_and_warm_up(case, contender, repeats, warmup, budget_s):
    """Run ``contender`` once against the reference, warm it up, and return how many repeats to time."""
    inputs = contender.prepare()
    output = contender.run(inputs)
    _check(case, contender, inputs, output)
    del inputs, output
    run_time, round_time = None, None
    for _ in range(warmup):
        begin = time.perf_counter()
        warm_inputs = contender.prepare()
        start = time.perf_counter()
        contender.run(warm_inputs)
        end = time.perf_counter()
        del warm_inputs
        run_time, round_time = end - start, end - begin
    # Short calls get more repeats (enough for ~0.3 s of timed work, at most 200): their medians are
    # otherwise at the mercy of single scheduler or cache hiccups.  Preparing the inputs (copying a
    # large table) counts against the wall-time budget.
    if not run_time:
        return repeats
    return int(max(repeats, min(200, 0.3 / run_time, budget_s / round_time)))


def evaluate_targets(case, results):
    """Each target of ``case`` with its measured value and whether it is met.

    Parameters
    ----------
    case : Case
        The case.
    results : dict
        Output of :func:`measure`.

    Returns
    -------
    list of dict
        ``{"ours", "peer", "goal", "kind", "required", "measured", "met"}`` per
        target; ``measured`` (a ratio, or seconds) is None when a side is missing.
    """
    rows = []
    for target in case.targets:
        ours = results.get(target.ours, {}).get(target.statistic)
        peer = results.get(target.peer, {}).get("median_s") if target.peer is not None else None
        measured = None
        if ours is not None and (peer is not None or target.kind == "max_time"):
            if target.kind == "speedup":
                measured = peer / ours
            elif target.kind == "within":
                measured = ours / peer
            elif target.kind == "max_time":
                measured = ours
            else:
                measured = ours - peer
        met = None
        if measured is not None:
            met = measured >= target.value if target.kind == "speedup" else measured <= target.value
        rows.append(
            {
                "ours": target.ours,
                "peer": target.peer,
                "goal": target.describe(),
                "kind": target.kind,
                "required": target.value,
                "measured": measured,
                "met": met,
            }
        )
    return rows
