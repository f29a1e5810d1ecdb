"""``--precision auto``: the fastest graph on the target backend whose accuracy holds, found by measuring it.

The unit of choice is a layer group (``groups.py``). The search (``search``) is pure: it asks a ``Latency`` side for
per-group savings estimated from the backend's per-layer profiles and for whole-graph timings, and an ``Accuracy``
side for the gate on the checkpoint's *validation* actors and for each int8 group's share of the error. Real sides
are ``ProbeLatency`` (a ``latency.py`` probe) and ``ValidationAccuracy``; the tests give it stubs.

1. The plain choices are measured first: float, int8 all, and every ``--int8-scope``. Whatever the search finds,
   the result is never slower than the fastest of them that passes the gate (they compete in the final timing).
2. Start: int8 in every group the per-layer profiles say int8 makes faster on this backend, float elsewhere.
3. While the gate fails: rank the int8 groups by their share of the error (revert-and-score on the clips with the
   largest error, as NNCF's accuracy control does) and revert the largest to float. A step that makes the accuracy
   worse is undone and the rest are re-ranked without that group.
4. With budget left: the int8 groups whose estimated saving is the smallest are tried in float one at a time and
   kept in float when the whole graph is faster that way (the per-layer sums only order the search; whole-graph
   medians decide).
5. The candidates that pass are timed together, interleaved; the lowest median ratio to the float graph wins. A mix
   the search built has to beat the fastest plain choice that passes by ``PLAIN_MARGIN`` (point 5's 3%: within
   it the timing cannot tell them apart, and the plain choice is kept), and any int8 mix has to beat the float
   graph by ``MIN_GAIN`` in enough rounds to rule out chance (``beats_float``: a one-sided sign test). When no
   int8 mix passes, the float graph is returned, and the report says why.

Each evaluated candidate is written to a state file as soon as it is measured; a killed search continues where it
stopped, and a rerun with the same inputs reuses every measurement.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import CfnsrError
from ..fileio import write_json
from . import groups as groups_mod

INT8 = "int8"
PLAIN_SCOPES = ("no-stem", "no-grouped", "no-stem-grouped", "audio-fusion")
STATE_FORMAT = "cfnsr-auto-precision-state"
STATE_VERSION = 1


# ----------------------------------------------------------------------------------------------- the two sides
@dataclass
class AccuracyResult:
    passed: bool
    accuracy_drop: float | None  # points
    agreement: float
    failures: list[str] = field(default_factory=list)

    def badness(self, max_drop: float, min_agreement: float) -> float:
        """How far from the gate, in units of its thresholds (<= 1 on both counts passes): for "worse than"."""
        drop = (self.accuracy_drop or 0.0) / max(max_drop, 1e-9)
        agree = (1.0 - self.agreement) / max(1.0 - min_agreement, 1e-9)
        return max(drop, agree)


class Latency(Protocol):
    def estimated_savings(self) -> dict[str, dict[str, float]]:
        """{group: {"int8_ms": .., "float_ms": ..}} from the per-layer profiles of the all-int8 and float graphs."""

    def time(self, configs: list[frozenset[str]], runs: int) -> list[list[float]]:
        """Whole-graph wall times (ms, ``runs`` each) of each config (its int8 groups), interleaved."""


class Accuracy(Protocol):
    def evaluate(self, int8: frozenset[str]) -> AccuracyResult:
        """The gate on the validation clips for the graph with ``int8`` groups in int8."""

    def error_shares(self, int8: frozenset[str]) -> dict[str, float]:
        """{int8 group: how much of the error goes away when it alone is reverted to float}."""


# ------------------------------------------------------------------------------------------------ the records
@dataclass
class Candidate:
    name: str
    int8: list[str]
    kind: str  # "plain" | "search" | "float"
    latency_ms: list[float]
    float_ms: list[float]  # the float graph, timed interleaved with this candidate
    accuracy: dict
    step: str = ""  # why the search made it

    @property
    def passed(self) -> bool:
        return bool(self.accuracy["passed"])

    @property
    def p50(self) -> float:
        return float(np.median(self.latency_ms))

    @property
    def ratio_to_float(self) -> float:
        """Median of the per-run ratios to the float graph run next to it: drift cancels."""
        return float(np.median(np.asarray(self.latency_ms) / np.asarray(self.float_ms)))

    def to_dict(self) -> dict:
        return {**asdict(self), "p50_ms": self.p50, "p90_ms": float(np.percentile(self.latency_ms, 90)),
                "ratio_to_float": self.ratio_to_float}


def config_key(int8) -> str:
    return ",".join(sorted(int8)) or "-"


@dataclass
class State:
    """The search as data: the inputs' key, the estimates and every evaluated candidate, saved after each step."""

    path: Path | None
    key: str
    estimates: dict | None = None
    candidates: dict[str, dict] = field(default_factory=dict)  # config_key -> Candidate fields
    shares: dict[str, dict] = field(default_factory=dict)  # config_key -> error shares
    final: dict | None = None  # {"configs": [...], "times": [[...]]}

    @classmethod
    def load(cls, path: Path | None, key: str, log=print) -> "State":
        if path is None or not Path(path).is_file():
            return cls(path, key)
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError):
            log(f"the search state {path} is unreadable: starting over")
            return cls(path, key)
        if data.get("format") != STATE_FORMAT or data.get("version") != STATE_VERSION or data.get("key") != key:
            log(f"the search state {path} belongs to other inputs: starting over")
            return cls(path, key)
        log(f"resuming the search from {path} ({len(data.get('candidates', {}))} candidates measured)")
        return cls(path, key, data.get("estimates"), data.get("candidates", {}), data.get("shares", {}),
                   data.get("final"))

    def save(self) -> None:
        if self.path is not None:
            write_json(self.path, {"format": STATE_FORMAT, "version": STATE_VERSION, "key": self.key,
                                   "estimates": self.estimates, "candidates": self.candidates,
                                   "shares": self.shares, "final": self.final})


def inputs_key(**inputs) -> str:
    """sha256 of everything a measurement depends on (graph, calibration, backend, batch, threads, gate, clips)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class SearchResult:
    int8: list[str]
    float_type: str
    chosen: Candidate
    candidates: list[Candidate]
    reasons: dict[str, str]  # group -> one line
    steps: list[str]
    fastest_plain: str | None
    note: str = ""
    final_p50: dict[str, float] = field(default_factory=dict)  # candidate name -> p50 of the final timing
    decision_ratio: dict[str, float] = field(default_factory=dict)  # candidate name -> pooled ratio to float

    def precision_map(self, all_groups: list[str]) -> dict[str, str]:
        return {g: INT8 if g in self.int8 else self.float_type for g in all_groups}

    @property
    def precision(self) -> str:
        return "mixed" if self.int8 else self.float_type


# ------------------------------------------------------------------------------------------------- the search
def plain_configs(searchable: list[str]) -> dict[str, frozenset[str]]:
    """float, int8 all and every --int8-scope, as sets of int8 groups."""
    s = set(searchable)
    out = {"float": frozenset(), "int8 all": frozenset(s)}
    for scope in PLAIN_SCOPES:
        out[f"int8 {scope}"] = frozenset(s & groups_mod.SCOPE_GROUPS[scope])
    return out


def search(searchable: list[str], latency: Latency, accuracy: Accuracy, state: State, budget: int = 12,
           runs: int = 5, max_drop: float = 1.0, min_agreement: float = 0.95, float_type: str = "fp32",
           progress: bool = True, log=print) -> SearchResult:
    """The search of the module docstring over the ``searchable`` groups (those with a layer int8 can take)."""
    from tqdm import tqdm

    plain = plain_configs(searchable)
    distinct_plain = {config_key(c) for c in plain.values()}
    if budget < len(distinct_plain) + 1:
        raise CfnsrError(f"--budget {budget} is too small: the {len(distinct_plain)} plain choices (float, int8 all, "
                         f"every scope) are measured first, and the search needs at least one more")
    bar = tqdm(total=budget, desc="auto precision", unit="candidate", disable=not progress)
    steps: list[str] = []
    spent = [0]

    def note(msg: str) -> None:
        steps.append(msg)
        log(msg)

    def evaluate(int8, name: str, kind: str, step: str = "") -> Candidate:
        key = config_key(int8)
        if key in state.candidates:
            c = Candidate(**state.candidates[key])
        else:
            if spent[0] >= budget:
                raise _BudgetSpent
            acc = accuracy.evaluate(frozenset(int8))
            cand_ms, float_ms = latency.time([frozenset(int8), frozenset()], runs)
            c = Candidate(name, sorted(int8), kind, cand_ms, float_ms, asdict(acc), step)
            state.candidates[key] = asdict(c)
            state.save()
        spent[0] += 1
        bar.update(1)
        bar.set_postfix_str(f"{c.name}: x{c.ratio_to_float:.2f} of float, {'pass' if c.passed else 'fail'}")
        return c

    def bad(c: Candidate) -> float:
        return AccuracyResult(**c.accuracy).badness(max_drop, min_agreement)

    if state.estimates is None:
        log(f"per-layer profiles of the all-int8 and {float_type} graphs ...")
        state.estimates = latency.estimated_savings()
        state.save()
    est = {g: state.estimates.get(g, {"int8_ms": 0.0, "float_ms": 0.0}) for g in searchable}
    saving = {g: est[g]["float_ms"] - est[g]["int8_ms"] for g in searchable}
    evaluated: dict[str, Candidate] = {}
    reverted: dict[str, Candidate] = {}  # group -> the accepted step that put it in float for accuracy
    kept_float: dict[str, tuple[Candidate, Candidate]] = {}  # group -> (with it int8, with it float): faster float
    try:
        for name, cfg in plain.items():
            if config_key(cfg) not in evaluated:
                evaluated[config_key(cfg)] = evaluate(cfg, name, "float" if not cfg else "plain")
        start = frozenset(g for g in searchable if saving[g] > 0)
        note(f"start: int8 where the profiles say it pays ({len(start)} of {len(searchable)} groups)")
        current = evaluate(start, "auto: profile", "search", "int8 where the per-layer profile is faster")
        evaluated[config_key(start)] = current
        tried: set[str] = set()
        while not current.passed and current.int8:
            key = config_key(current.int8)
            if key not in state.shares:
                state.shares[key] = accuracy.error_shares(frozenset(current.int8))
                state.save()
            shares = {g: s for g, s in state.shares[key].items() if g not in tried and g in current.int8}
            if not shares:
                note("every int8 group was tried: no int8 mix from this start passes the gate")
                break
            g = max(shares, key=lambda k: (shares[k], k))
            total = sum(max(v, 0.0) for v in state.shares[key].values()) or 1.0
            cand = evaluate(set(current.int8) - {g}, f"auto: revert {g}", "search",
                            f"revert {g} ({100 * max(shares[g], 0) / total:.0f}% of the int8 error)")
            evaluated[config_key(cand.int8)] = cand
            if bad(cand) > bad(current):
                note(f"reverting {g} made it worse ({bad(current):.2f} -> {bad(cand):.2f} of the gate): undone, "
                     "re-ranking the others")
                tried.add(g)
                continue
            note(f"reverted {g}: accuracy drop {_fmt(current.accuracy['accuracy_drop'])} -> "
                 f"{_fmt(cand.accuracy['accuracy_drop'])} points, agreement {_agreement(cand.accuracy)}; "
                 f"{_gate(cand.accuracy)}")
            reverted[g] = cand
            current = cand
        if current.passed:
            for g in sorted(current.int8, key=lambda k: (saving[k], k)):  # the least sure saving first
                cand = evaluate(set(current.int8) - {g}, f"auto: {g} in {float_type}", "search",
                                f"try {g} in {float_type} (estimated saving {saving[g]:.3f} ms)")
                evaluated[config_key(cand.int8)] = cand
                if cand.passed and cand.ratio_to_float < current.ratio_to_float:
                    note(f"{g} in {float_type}: whole graph x{cand.ratio_to_float:.3f} of float vs "
                         f"x{current.ratio_to_float:.3f}: kept")
                    kept_float[g] = (current, cand)
                    current = cand
                else:
                    note(f"{g} stays int8: whole graph x{cand.ratio_to_float:.3f} vs x{current.ratio_to_float:.3f}")
    except _BudgetSpent:
        note(f"--budget {budget} spent")
    finally:
        bar.close()

    # The decision: every candidate that passes (the float graph always stays in), timed together, interleaved.
    passing = [c for c in evaluated.values() if c.passed or not c.int8]
    configs = [config_key(c.int8) for c in passing]
    if state.final is None or state.final.get("configs") != configs:
        log(f"timing the {len(passing)} candidates that pass, interleaved ({runs} runs each) ...")
        times = latency.time([frozenset(c.int8) for c in passing], runs)
        state.final = {"configs": configs, "times": times}
        state.save()
    final_p50 = {c.name: float(np.median(t)) for c, t in zip(passing, state.final["times"])}
    rounds = pooled_rounds(passing, state.final["times"])
    ratio = {name: float(np.median(r)) for name, r in rounds.items()}
    float_cand = next(c for c in passing if not c.int8)
    # int8 has to earn its place: faster than the float graph by MIN_GAIN, in enough rounds to rule out chance
    measured = {c.name: beats_float(rounds[c.name]) for c in passing if c.int8}
    unsure = [c for c in passing if c.int8 and ratio[c.name] < 1.0 - MIN_GAIN and not measured[c.name][0]]
    for c in unsure:
        note(f"{c.name} (x{ratio[c.name]:.3f} of float) is not faster in enough rounds to rule out noise "
             f"(sign test p={measured[c.name][1]:.2f} > {SIGN_P})")
    contenders = [float_cand] + [c for c in passing if c.int8 and measured[c.name][0]]
    best = min(contenders, key=lambda c: (ratio[c.name], len(c.int8)))
    log("decision (median of per-round ratios to the float graph, evaluation and final timing pooled): "
        + ", ".join(f"{c.name} x{ratio[c.name]:.3f}" for c in sorted(passing, key=lambda c: ratio[c.name])))
    plain_pass = [c for c in contenders if c.name in set(plain)]
    top_plain = min(plain_pass, key=lambda c: ratio[c.name]) if plain_pass else None
    fastest_plain = top_plain.name if top_plain else None
    # a mix of the search's own has to beat the fastest plain choice by more than point 5's tolerance: within it the
    # two are as fast as the timing can tell, and the plain choice is the one a user knows (and can reproduce)
    if (best.kind == "search" and top_plain is not None
            and ratio[best.name] > (1.0 - PLAIN_MARGIN) * ratio[fastest_plain]):
        note(f"{best.name} (x{ratio[best.name]:.3f} of float) is within {100 * PLAIN_MARGIN:.0f}% of {fastest_plain} "
             f"(x{ratio[fastest_plain]:.3f}): {fastest_plain} is kept")
        best = top_plain
    chosen = best
    result_note = ""
    if not chosen.int8:
        failing = [c for c in evaluated.values() if c.int8 and not c.passed]
        faster = [c for c in passing if c.int8]
        if faster:
            top = min(faster, key=lambda c: ratio[c.name])
            result_note = (f"no int8 mix that passes the gate is measurably more than {100 * MIN_GAIN:.0f}% faster "
                           f"than {float_type} on this backend (fastest: {top.name}, x{ratio[top.name]:.3f}, sign test "
                           f"p={measured[top.name][1]:.2f})")
        elif failing:
            result_note = (f"no int8 mix passes the gate on the validation actors (e.g. {failing[0].name}: "
                           f"{'; '.join(failing[0].accuracy['failures'])})")
        else:
            result_note = "int8 is not faster than float in any layer group on this backend"
        log(f"returning the {float_type} graph: {result_note}")
    reasons = group_reasons(searchable, est, chosen, reverted, kept_float, float_type, final_p50)
    return SearchResult(sorted(chosen.int8), float_type, chosen, list(evaluated.values()), reasons, steps,
                        fastest_plain, result_note, final_p50, ratio)


MIN_GAIN = 0.01  # an int8 mix replaces the float graph only when at least this much faster
PLAIN_MARGIN = 0.03  # a mix the search built replaces the fastest plain choice only when this much faster
SIGN_P = 0.05  # the one-sided sign test an int8 mix must pass against the float graph (beats_float)


def pooled_rounds(passing: list[Candidate], final_times: list[list[float]]) -> dict[str, list[float]]:
    """Per candidate, its per-round ratios to the float graph: the rounds of its own evaluation (timed next to the
    float graph) and the rounds of the final interleaved timing. A ratio within one round cancels the drift of the
    machine's load, which a median of absolute times on a shared machine does not."""
    fl = next(i for i, c in enumerate(passing) if not c.int8)
    out = {}
    for c, t in zip(passing, final_times):
        rounds = list(np.asarray(c.latency_ms) / np.asarray(c.float_ms)) if c.int8 else []
        out[c.name] = [float(r) for r in rounds + list(np.asarray(t) / np.asarray(final_times[fl]))]
    return out


def pooled_ratios(passing: list[Candidate], final_times: list[list[float]]) -> dict[str, float]:
    """Per candidate, the median of its per-round ratios to the float graph (``pooled_rounds``)."""
    return {name: float(np.median(r)) for name, r in pooled_rounds(passing, final_times).items()}


def beats_float(rounds: list[float]) -> tuple[bool, float]:
    """(faster, p): the candidate is at least ``MIN_GAIN`` faster than the float graph in enough of its rounds that
    chance is unlikely (one-sided sign test, p <= ``SIGN_P``). On a shared 2-core machine single rounds of the same
    two graphs scatter by 10-20%, so a median alone lets noise pick a mix that is no faster."""
    from math import comb

    n = len(rounds)
    wins = sum(r < 1.0 - MIN_GAIN for r in rounds)
    p = sum(comb(n, k) for k in range(wins, n + 1)) / 2 ** n if n else 1.0
    return bool(n and p <= SIGN_P and float(np.median(rounds)) < 1.0 - MIN_GAIN), p


class _BudgetSpent(Exception):
    pass


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def group_reasons(searchable, est, chosen: Candidate, reverted: dict, kept_float: dict, float_type: str,
                  final_p50: dict) -> dict[str, str]:
    """One line per group: its precision in the chosen graph, and the measurement behind it."""
    out = {}
    where = f"the chosen {chosen.name}, fastest whole graph that passes ({final_p50[chosen.name]:.2f} ms)"
    for g in searchable:
        e = est[g]
        name = groups_mod.describe(g)
        timing = f"int8 {e['int8_ms']:.2f} ms vs {float_type} {e['float_ms']:.2f} ms (per-layer profile)"
        profile_pays = e["float_ms"] - e["int8_ms"] > 0
        if g in chosen.int8:
            out[g] = f"{name}: int8; {timing}" + ("" if profile_pays else f"; int8 in {where}")
        elif g in reverted and chosen.kind == "search":
            acc = reverted[g].accuracy
            out[g] = (f"{name}: {float_type} for accuracy: {reverted[g].step}, then accuracy drop "
                      f"{_fmt(acc['accuracy_drop'])} points, agreement {100 * acc['agreement']:.1f}%; {timing}")
        elif not profile_pays:
            out[g] = f"{name}: {float_type}; {timing}"
        elif g in kept_float and chosen.kind == "search":
            with_int8, without = kept_float[g]
            out[g] = (f"{name}: {float_type}; whole graph x{without.ratio_to_float:.3f} of float with it in "
                      f"{float_type} vs x{with_int8.ratio_to_float:.3f} in int8; {timing}")
        else:
            out[g] = f"{name}: {float_type} in {where}; {timing}"
    return out


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both (latency, accuracy drop), by latency."""
    front = []
    for i, (lat, drop) in enumerate(points):
        if not any((l2 <= lat and d2 <= drop) and (l2 < lat or d2 < drop) for l2, d2 in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


# ------------------------------------------------------------------------------------------------- the reports
def report(result: SearchResult, backend_line: str) -> dict:
    return {"backend": backend_line, "precision": result.precision, "int8_groups": result.int8,
            "chosen": result.chosen.name, "fastest_plain_passing": result.fastest_plain, "note": result.note,
            "final_p50_ms": result.final_p50, "decision_ratio_to_float": result.decision_ratio,
            "reasons": result.reasons, "steps": result.steps,
            "candidates": [c.to_dict() for c in result.candidates]}


def markdown(rep: dict) -> str:
    from ..reports import markdown_table

    lines = ["# --precision auto", "", f"Backend: {rep['backend']}.", "",
             f"Chosen: **{rep['chosen']}** (precision {rep['precision']}); fastest plain choice that passes: "
             f"{rep['fastest_plain_passing'] or 'none'}." + (f" {rep['note']}." if rep["note"] else ""), "",
             "## Candidates", "",
             "`x float`: the candidate's time over the float graph's, timed side by side when it was evaluated. "
             "`decision`: the median of those per-round ratios and the final interleaved timing's, which the choice "
             "uses (a ratio within one round cancels the machine's drift).", "",
             markdown_table(["candidate", "int8 groups", "p50 ms", "p90 ms", "x float", "final p50 ms", "decision",
                             "accuracy drop (points)", "agreement", "gate"],
                            [[c["name"], len(c["int8"]), c["p50_ms"], c["p90_ms"], f"x{c['ratio_to_float']:.3f}",
                              rep["final_p50_ms"].get(c["name"], "-"), _ratio(rep["decision_ratio_to_float"], c),
                              _fmt(c["accuracy"]["accuracy_drop"]), _agreement(c["accuracy"]),
                              _gate(c["accuracy"])] for c in rep["candidates"]]),
             "", "## Why each group has its precision", ""]
    lines += [f"- {line}" for line in rep["reasons"].values()]
    lines += ["", "## Steps", ""] + [f"1. {s}" for s in rep["steps"]]
    return "\n".join(lines) + "\n"


def plot(rep: dict, path: Path) -> Path:
    """Latency (p50) against accuracy drop of every candidate, the Pareto front drawn, the choice marked."""
    from ..reports import _pyplot, save_png

    plt = _pyplot()
    cands = rep["candidates"]
    pts = [(c["p50_ms"], c["accuracy"]["accuracy_drop"] or 0.0) for c in cands]
    fig, ax = plt.subplots(figsize=(7, 4.6), dpi=110)
    for c, (x, y) in zip(cands, pts):
        color = "tab:green" if c["accuracy"]["passed"] else "tab:red"
        ax.scatter(x, y, c=color, marker="s" if c["kind"] != "search" else "o", zorder=3)
        ax.annotate(c["name"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = pareto(pts)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", color="gray", label="Pareto front")
    chosen = next(i for i, c in enumerate(cands) if c["name"] == rep["chosen"])
    ax.scatter(*pts[chosen], s=220, facecolors="none", edgecolors="black", linewidths=2, label="chosen", zorder=4)
    ax.set_xlabel("latency p50 (ms, whole graph)")
    ax.set_ylabel("accuracy drop (points, validation actors)")
    ax.set_title("--precision auto: candidates (green passes the gate)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def _ratio(ratios: dict, c: dict) -> str:
    return f"x{ratios[c['name']]:.3f}" if c["name"] in ratios else "-"


def _agreement(acc: dict) -> str:
    """A candidate's top-1 agreement, or "-" when it was refused before it was scored (not TensorRT-ready)."""
    return "-" if acc.get("accuracy_drop") is None and acc.get("failures") else f"{100 * acc['agreement']:.1f}%"


def _gate(acc: dict) -> str:
    """pass, or fail with the first reason's kind (e.g. "fail (not TensorRT-ready)")."""
    if acc.get("passed"):
        return "pass"
    first = (acc.get("failures") or [""])[0].split(":")[0]
    return f"fail ({first})" if first else "fail"


def write_reports(rep: dict, stem: Path) -> dict[str, str]:
    from ..fileio import write_text

    paths = {"json": stem.with_name(stem.name + ".json"), "markdown": stem.with_name(stem.name + ".md"),
             "png": stem.with_name(stem.name + ".png")}
    write_json(paths["json"], rep)
    write_text(paths["markdown"], markdown(rep))
    plot(rep, paths["png"])
    return {k: str(v) for k, v in paths.items()}


# ------------------------------------------------------------------------------------------ the real sides
class GraphBuilder:
    """Graphs of one fp32 export for any set of int8 groups: the plain float graph for none, else Q/DQ on the
    layers of those groups (``int8.quantize`` with the groups as the scope), written once into ``folder``."""

    def __init__(self, fp32_graph, ranges: dict, folder: Path, float_type: str = "fp32",
                 metadata: Callable[[frozenset], dict] | None = None, reuse: bool = False):
        """``reuse``: take a candidate file already in ``folder`` (a benchmark's own folder, resumed); the export
        always writes into a fresh folder."""
        import onnx

        from . import fp16 as fp16_mod

        self.graph = onnx.shape_inference.infer_shapes(fp32_graph)
        self.ranges, self.folder, self.float_type = ranges, Path(folder), float_type
        self.metadata, self.reuse = metadata, reuse
        self.grouping = groups_mod.grouping(self.graph)
        self._float = fp16_mod.to_fp16(self.graph) if float_type == "fp16" else self.graph
        self.paths: dict[str, Path] = {}
        self._problems: dict[str, list[str]] = {}
        self.folder.mkdir(parents=True, exist_ok=True)

    def searchable(self) -> list[str]:
        """The groups with at least one layer int8 can take (the others always stay float)."""
        from .int8 import plan

        quantizable = set(plan(self.graph, "all").quantize)
        return [g for g in self.grouping.present() if self.grouping.nodes([g]) & quantizable]

    def model(self, int8: frozenset):
        from . import int8 as int8_mod

        if not int8:
            return self._float, None
        q, placement = int8_mod.quantize(self.graph, self.ranges, sorted(int8), high_precision=self.float_type)
        return q, placement

    def problems(self, int8: frozenset) -> list[str]:
        """The TensorRT readiness problems of the graph (the export refuses a graph that has any)."""
        from . import readiness

        key = config_key(int8)
        if key not in self._problems:
            self._problems[key] = readiness.check(self.model(frozenset(int8))[0]).problems if int8 else []
        return self._problems[key]

    def path(self, int8: frozenset) -> Path:
        import onnx

        from .onnx_graph import set_metadata

        key = config_key(int8)
        path = self.folder / f"cand-{hashlib.sha256(key.encode()).hexdigest()[:12]}.onnx"
        if key not in self.paths and self.reuse and path.is_file():
            self.paths[key] = path
        if key not in self.paths:
            model, _ = self.model(frozenset(int8))
            if self.metadata is not None:
                set_metadata(model, **self.metadata(frozenset(int8)))
            onnx.save(model, str(path))
            self.paths[key] = path
        return self.paths[key]


class ProbeLatency:
    """The ``Latency`` side on a real backend: a ``latency.LatencyProbe`` on the builder's graphs."""

    def __init__(self, probe, builder: GraphBuilder, profile_runs: int = 3):
        self.probe, self.builder, self.profile_runs = probe, builder, profile_runs

    def estimated_savings(self) -> dict[str, dict[str, float]]:
        import onnx

        from .latency import attribute_to_layers

        searchable = self.builder.searchable()
        out = {g: {"int8_ms": 0.0, "float_ms": 0.0} for g in searchable}
        layers = set(self.builder.grouping.of_node)
        for kind, cfg in (("int8_ms", frozenset(searchable)), ("float_ms", frozenset())):
            path = self.builder.path(cfg)
            per_layer = attribute_to_layers(onnx.load(str(path)), self.probe.layer_times(path, self.profile_runs),
                                            layers)
            for node, ms in per_layer.items():
                g = self.builder.grouping.of_node[node]
                if g in out:
                    out[g][kind] += ms
        return out

    def time(self, configs: list[frozenset[str]], runs: int) -> list[list[float]]:
        paths = [self.builder.path(c) for c in configs]
        unique = list(dict.fromkeys(str(p) for p in paths))
        times = self.probe.time([Path(p) for p in unique], runs=runs)
        return [times[str(p)] for p in paths]


class ValidationAccuracy:
    """The ``Accuracy`` side: the builder's graphs on ``runner_for(path)`` against the checkpoint's logits on the
    validation clips (never the test actors); error shares by revert-and-score on the ``rank_clips`` clips where
    the candidate's logits depart most from the reference (normalised MSE, NNCF's logits-based ranking)."""

    def __init__(self, builder: GraphBuilder, runner_for: Callable, video, audio, labels, reference_logits,
                 thresholds, rank_clips: int = 16):
        self.builder, self.runner_for = builder, runner_for
        self.video, self.audio, self.labels, self.ref = video, audio, labels, reference_logits
        self.thresholds, self.rank_clips = thresholds, rank_clips
        self._logits: dict[str, np.ndarray] = {}

    def _run(self, int8: frozenset, idx=None) -> np.ndarray:
        from ..engines.accuracy import batched

        key = config_key(int8)
        if idx is None and key in self._logits:
            return self._logits[key]
        v, a = (self.video, self.audio) if idx is None else (self.video[idx], self.audio[idx])
        with self.runner_for(self.builder.path(int8)) as runner:
            out = batched(runner, v, a)
        if idx is None:
            self._logits[key] = out
        return out

    def evaluate(self, int8: frozenset) -> AccuracyResult:
        from ..engines.accuracy import compare

        problems = self.builder.problems(frozenset(int8))
        if problems:  # e.g. a float layer reading a Q/DQ pair shared with an int8 neighbour: export would refuse it
            return AccuracyResult(False, None, 0.0, [f"not TensorRT-ready: {problems[0]}"])
        res = compare(self.ref, self._run(int8), self.labels, "int8", self.thresholds)
        return AccuracyResult(res.passed, res.accuracy_drop_points, res.agreement, res.failures)

    def error_shares(self, int8: frozenset) -> dict[str, float]:
        def nmse(logits, idx):
            ref = self.ref[idx]
            return float(np.mean(np.sum((logits - ref) ** 2, 1) / np.maximum(np.sum(ref ** 2, 1), 1e-12)))

        cur = self._run(int8)
        err = np.sum((cur - self.ref) ** 2, 1)
        idx = np.sort(np.argsort(-err)[: self.rank_clips])
        base = nmse(cur[idx], idx)
        return {g: base - nmse(self._run(frozenset(int8 - {g}), idx), idx) for g in sorted(int8)}


# ------------------------------------------------------------------------------------------ the export step
@dataclass(frozen=True)
class AutoOptions:
    backend: str | None = None  # None: latency.default_backend()
    device: str = "cpu"
    batch: int = 1
    threads: int | None = None
    budget: int = 12
    runs: int = 5
    float_type: str | None = None  # None: fp16 on TensorRT, fp32 on the CPU backends
    val_clips: int | None = None  # validation clips for the accuracy side [default: all of the validation actors]


def resolve(opts: AutoOptions):
    """(backend, why it was chosen, its latency probe), checked before any work: an impossible backend, device,
    batch, thread count or budget is refused here."""
    from .latency import default_backend, probe_for

    if opts.budget < len(PLAIN_SCOPES) + 3:
        raise CfnsrError(f"--budget {opts.budget} is too small: the {len(PLAIN_SCOPES) + 2} plain choices (float, "
                         "int8 all, every scope) are measured first, and the search needs at least one more")
    backend, why = (opts.backend, "--backend") if opts.backend else default_backend()
    return backend, why, probe_for(backend, opts.batch, opts.threads, opts.device)


def validation_arrays(cache, split, limit: int | None, log):
    """Inputs and labels of the checkpoint's validation actors' clips (never its test actors)."""
    from ..data.features import to_model_inputs

    if split is None:
        raise CfnsrError("the checkpoint records no split: --precision auto needs its validation actors "
                         "(re-train with `cfnsr train`)")
    val = set(split.val) - set(split.test)
    if not val:
        raise CfnsrError(f"the checkpoint's validation actors {list(split.val)} are its test actors (protocol "
                         f"{split.protocol}): --precision auto must not choose on the test actors; train with "
                         "--protocol honest")
    clips = cache.select(sorted(val))
    if not clips:
        raise CfnsrError(f"the cache {cache.root} has no clips of the validation actors {sorted(val)}")
    if limit is not None and limit < len(clips):
        clips = [clips[i] for i in np.linspace(0, len(clips) - 1, limit).round().astype(int)]
    pairs = [to_model_inputs(np.asarray(cache.frames(c.stem)), cache.mfcc(c.stem), cache.spec) for c in clips]
    log(f"--precision auto: accuracy on {len(clips)} clips of the validation actors {sorted(val)}")
    return (np.stack([v for v, _ in pairs]), np.stack([a for _, a in pairs]),
            np.array([int(c.label) for c in clips]), clips)


def accuracy_runner(backend: str, threads: int | None):
    """How the accuracy side runs a candidate: on the target backend where it runs here (ONNX Runtime, OpenVINO);
    for TensorRT on ONNX Runtime's CPU provider (the Q/DQ arithmetic is the graph's, not the backend's)."""
    from ..engines.runners import OnnxRuntimeRunner, OpenVinoRunner

    if backend == "openvino":
        return lambda p: OpenVinoRunner(p, threads=threads)
    return lambda p: OnnxRuntimeRunner(p, providers=["CPUExecutionProvider"], threads=threads)


def choose(fp32_graph, ranges: dict, model, cache, split, thresholds, opts: AutoOptions, work: Path,
           state_path: Path | None, key_parts: dict, progress: bool = True, log=print):
    """Run the search for one export; returns (chosen graph, its int8 placement or None, SearchResult, report)."""
    import torch

    from ..engines.accuracy import batched
    from ..fileio import sha256_bytes

    backend, why, probe = resolve(opts)
    float_type = opts.float_type or ("fp16" if backend == "tensorrt" else "fp32")
    backend_line = f"{probe.describe()} ({why}); float type {float_type}"
    log(f"--precision auto on {backend_line}")
    th = thresholds.over("int8")
    video, audio, labels, clips = validation_arrays(cache, split, opts.val_clips, log)
    with torch.no_grad():
        ref = batched(lambda v, a: model(torch.from_numpy(v), torch.from_numpy(a)).numpy(), video, audio)
    from .onnx_graph import input_spec

    inputs = input_spec(fp32_graph)

    def metadata(int8):  # what the runners read: the tensors, and fp16 Q/DQ scales (see OnnxRuntimeRunner)
        return {"inputs": inputs, "precision": "mixed" if int8 else float_type,
                "calibration": {"high_precision": float_type}}

    builder = GraphBuilder(fp32_graph, ranges, work, float_type, metadata)
    searchable = builder.searchable()
    key = inputs_key(**key_parts, backend=backend, device=probe.device, batch=opts.batch, threads=opts.threads,
                     runs=opts.runs, float_type=float_type, thresholds=th.to_dict(),
                     clips=sha256_bytes(json.dumps([c.stem for c in clips]).encode()))
    state = State.load(state_path, key, log)
    acc = ValidationAccuracy(builder, accuracy_runner(backend, opts.threads), video, audio, labels, ref, thresholds)
    result = search(searchable, ProbeLatency(probe, builder), acc, state, opts.budget, opts.runs,
                    th.max_accuracy_drop_points if th.max_accuracy_drop_points is not None else 1.0,
                    th.min_agreement if th.min_agreement is not None else 0.95, float_type, progress, log)
    graph, placement = builder.model(frozenset(result.int8))
    rep = report(result, backend_line)
    rep.update(backend_name=backend, device=probe.device, batch=opts.batch, threads=opts.threads,
               precision_map=result.precision_map(builder.grouping.present()), validation_clips=len(clips),
               validation_actors=sorted(set(split.val) - set(split.test)), searchable_groups=searchable,
               accuracy_runs_on="openvino" if backend == "openvino" else "onnxruntime (CPU)")
    return graph, placement, result, rep
