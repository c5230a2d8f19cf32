"""The text report, the targets table (PERF.md) and the JSON document."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from results import Results, Row, Sel, median

# -- per-section tables ----------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    header: str
    metric: str
    fmt: Callable[[float], str]


def _ops(x: float) -> str:
    return f"{x:,.0f}"


def _us(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def _count(x: float) -> str:
    return f"{x:,.0f}"


def _mb(x: float) -> str:
    return f"{x:.1f}"


OPS = Column("ops/s", "ops_per_s", _ops)
P50, P99 = Column("p50 us", "p50_us", _us), Column("p99 us", "p99_us", _us)
P999, MAX = Column("p99.9 us", "p999_us", _us), Column("max us", "max_us", _us)
MISS, FAIL = Column("miss", "misses", _count), Column("fail", "failed_writes", _count)
ERR = Column("err", "errors", _count)


@dataclass(frozen=True)
class View:
    title: str
    columns: tuple[Column, ...]
    reference: str | None = None
    """Adds a column: reference ops/s / this row's ops/s, per repetition, then the median."""
    baseline: str | None = None
    """Adds a column: this row's p50 / the same system's ``baseline`` workload p50."""
    latency_reference: str | None = None
    """Adds two columns: reference p50 / this row's p50, and the same for p99, per
    repetition (same workload), then the median; below 1 the reference is faster."""
    order: tuple[str, ...] = ()
    """Workloads in display order (others follow in the order they were measured)."""


VIEWS: dict[str, View] = {
    "core": View(
        "core: 10k keys, ~200-byte values, GET random existing keys / SET (ttl=3600) / MIXED 90-10",
        (OPS, P50, P99, P999, MISS, FAIL, ERR),
        reference="shardcache",
        order=("GET", "SET", "MIXED"),
    ),
    "multiproc": View(
        "multiproc: 4 processes x MIXED c64 on one directory (aggregate ops/s; worst process p99)",
        (
            OPS,
            Column("min proc", "process_min_ops_per_s", _ops),
            Column("max proc", "process_max_ops_per_s", _ops),
            P50,
            P99,
            MISS,
            FAIL,
            Column("lost", "lost_writes", _count),
            Column("checked", "checked_keys", _count),
        ),
        reference="shardcache",
    ),
    "loophealth": View(
        "loophealth: GET c1 (yielding between gets) beside a 1 ms ticker, lag = ticker overshoot; "
        "SET/cpu-bound-loop: one 8-key set_many per op from 4 tasks while 4 tasks spin 2 ms "
        "between yields, load ops/s = their spins/s (500 = the whole loop)",
        (
            P50,
            P99,
            P999,
            MAX,
            Column("lag p99", "lag_p99_us", _us),
            Column("lag p99.9", "lag_p999_us", _us),
            Column("lag max", "lag_max_us", _us),
            Column("load ops/s", "load_ops_per_s", _ops),
            Column("load fail", "load_failed_writes", _count),
            MISS,
            FAIL,
        ),
        latency_reference="shardcache",
        order=("GET/idle", "GET/writer-process", "GET/set-c64-same-loop", "SET/cpu-bound-loop"),
    ),
    "scale": View(
        "scale: GET c1 with the near cache off at each size; RSS@N = VmHWM of a fresh process "
        "(default near cache) running MIXED c64 over N entries",
        (OPS, P50, P99, P999, MISS, Column("peak RSS MB", "rss_mb", _mb)),
        baseline="GET@10k",
    ),
    "durability": View(
        'durability: SET c64, AsyncCache(durability="full") vs diskcache at its defaults',
        (OPS, P50, P99, P999, FAIL, ERR),
        reference="shardcache-full",
    ),
    "memo": View(
        "memo: memoization hits, c1, 1,000 warmed arguments (miss = the body ran)",
        (OPS, P50, P99, P999, MISS),
        reference="acached",
    ),
}


def _cell(xs: list[float], fmt: Callable[[float], str]) -> str:
    m = median(xs)
    return "-" if m is None or math.isnan(m) else fmt(m)


def _ratio(xs: list[float]) -> str:
    m = median(xs)
    return "-" if m is None else f"{m:.2f}x"


def _small_ratio(xs: list[float]) -> str:
    """Like ``_ratio``, with two significant digits below 1 (latency ratios reach 0.0003x)."""
    m = median(xs)
    return "-" if m is None else (f"{m:.2f}x" if m >= 1 else f"{m:.2g}x")


def _rank(order: Sequence[str], workload: str) -> int:
    return order.index(workload) if workload in order else len(order)


def _num(x: float) -> str:
    """Three significant digits, without scientific notation for the large ones."""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return [line(header), *(line(r) for r in body)]


def section_text(res: Results, section: str, loops: Sequence[str]) -> list[str]:
    view = VIEWS[section]
    rows = [r for r in res.rows if r.section == section]
    out = [f"== {view.title}"]
    out += [f"   skipped {s.system}: {s.reason}" for s in res.skips if s.section == section]
    measured = list(dict.fromkeys((r.workload, r.concurrency) for r in rows))
    groups = sorted(measured, key=lambda g: (_rank(view.order, g[0]), g[1], measured.index(g)))
    names = list(dict.fromkeys(r.system for r in rows))
    for loop in loops:
        here = [r for r in rows if r.loop == loop]
        if not here:
            continue
        keys = list(dict.fromkeys(Sel(r.system, r.workload, r.concurrency) for r in here))
        header = ["workload", "c", "system", *(c.header for c in view.columns)]
        if view.reference:
            header.append(f"{view.reference}/x")
        if view.baseline:
            header.append(f"p50/{view.baseline.partition('@')[2]}")
        if view.latency_reference:
            header += [f"{p} {view.latency_reference}/x" for p in ("p50", "p99")]
        body = []
        for sel in sorted(
            keys, key=lambda s: (groups.index((s.workload, s.concurrency)), names.index(s.system))
        ):
            line = [sel.workload, str(sel.concurrency), sel.system]
            line += [_cell(res.values(section, sel, loop, c.metric), c.fmt) for c in view.columns]
            if view.reference:
                ref = Sel(view.reference, sel.workload, sel.concurrency)
                line.append(_ratio(res.ratios(section, ref, sel, loop, "ops_per_s")))
            if view.baseline:
                base = Sel(sel.system, view.baseline, sel.concurrency)
                same_kind = sel.workload.partition("@")[0] == view.baseline.partition("@")[0]
                ratios = res.ratios(section, sel, base, loop, "p50_us") if same_kind else []
                line.append(_ratio(ratios))
            if view.latency_reference:
                ref = Sel(view.latency_reference, sel.workload, sel.concurrency)
                for metric in ("p50_us", "p99_us"):
                    line.append(_small_ratio(res.ratios(section, ref, sel, loop, metric)))
            body.append(line)
        out.append(f"-- loop {loop} (medians of {len(res.reps())} repetition(s))")
        out += ["   " + x for x in _table(header, body)]
    return out


# -- targets ---------------------------------------------------------------------------------

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
}


@dataclass(frozen=True)
class Target:
    label: str
    section: str
    metric: str
    num: Sel
    den: Sel | None
    op: str
    goal: float
    unit: str = "x"


def targets(scale_label: str) -> list[Target]:
    """PERF.md's targets; ``scale_label`` is the largest scale size measured ("1M" or "100k")."""
    sc, dc, rd, raw = "shardcache", "diskcache-to_thread", "redis", "sqlite3-raw"
    out = []
    for w, c, peer, goal in [
        ("GET", 1, dc, 30),
        ("GET", 1, raw, 2),
        ("GET", 64, dc, 15),
        ("GET", 64, rd, 15),
        ("SET", 1, dc, 3),
        ("SET", 64, dc, 10),
        ("SET", 64, rd, 4),
        ("MIXED", 64, dc, 8),
        ("MIXED", 64, rd, 5),
    ]:
        out.append(
            Target(
                f"{w} c{c} ops/s: {sc} / {peer}",
                "core",
                "ops_per_s",
                Sel(sc, w, c),
                Sel(peer, w, c),
                ">=",
                goal,
            )
        )
    nonear = "shardcache-nonear"
    out += [
        Target(f"GET c1 ops/s: {nonear} / {raw}", "core", "ops_per_s", Sel(nonear, "GET", 1), Sel(raw, "GET", 1), ">=", 0.8),
        Target(f"GET c64 p99: {sc} / {dc}", "core", "p99_us", Sel(sc, "GET", 64), Sel(dc, "GET", 64), "<=", 0.02),
        Target("@acached hit ops/s: acached / aiocache", "memo", "ops_per_s", Sel("acached", "HIT", 1), Sel("aiocache", "HIT", 1), ">=", 5),
        Target("@acached hit ops/s: acached / cashews-disk", "memo", "ops_per_s", Sel("acached", "HIT", 1), Sel("cashews-disk", "HIT", 1), ">=", 50),
        Target(f"multiproc 4x MIXED c64 ops/s: {sc} / {dc}", "multiproc", "ops_per_s", Sel(sc, "MIXED", 64), Sel(dc, "MIXED", 64), ">=", 5),
        Target(f"multiproc lost writes: {sc}", "multiproc", "lost_writes", Sel(sc, "MIXED", 64), None, "<=", 0, ""),
        Target(f"loophealth GET p99.9 beside a writer process: {sc}", "loophealth", "p999_us", Sel(sc, "GET/writer-process", 1), None, "<=", 1000, " us"),
        Target(f"loophealth GET p99.9 beside SET c64 in-loop: {sc}", "loophealth", "p999_us", Sel(sc, "GET/set-c64-same-loop", 1), None, "<=", 1000, " us"),
        Target(f"durability full SET c64 ops/s: shardcache-full / {dc}", "durability", "ops_per_s", Sel("shardcache-full", "SET", 64), Sel(dc, "SET", 64), ">=", 4),
        Target(f"scale GET p50: {scale_label} / 10k ({nonear})", "scale", "p50_us", Sel(nonear, f"GET@{scale_label}", 1), Sel(nonear, "GET@10k", 1), "<=", 1.5),
        Target(f"scale peak RSS at {scale_label}: {sc}", "scale", "rss_mb", Sel(sc, f"RSS@{scale_label}", 64), None, "<", 80, " MB"),
    ]  # fmt: skip
    return out


@dataclass
class Verdict:
    target: Target
    loop: str
    values: list[float]
    median: float | None
    result: str


def evaluate(
    res: Results, ts: Sequence[Target], loops: Sequence[str], sections: Sequence[str]
) -> list[Verdict]:
    out = []
    for loop in loops:
        for t in ts:
            if t.section not in sections:
                continue
            values = res.ratios(t.section, t.num, t.den, loop, t.metric)
            m = median(values)
            result = "n/a" if m is None else ("PASS" if _OPS[t.op](m, t.goal) else "MISS")
            out.append(Verdict(t, loop, values, m, result))
    return out


def targets_text(verdicts: Sequence[Verdict], loops: Sequence[str]) -> list[str]:
    out = ["== targets (PERF.md): median of per-repetition values; n/a = not measured (see skips)"]
    for loop in loops:
        body = []
        for v in (v for v in verdicts if v.loop == loop):
            t = v.target
            unit = t.unit
            shown = "-" if v.median is None else f"{_num(v.median)}{unit}"
            reps = ", ".join(_num(x) for x in v.values)
            body.append([t.label, f"{t.op} {t.goal:g}{unit}", shown, v.result, f"[{reps}]"])
        if body:
            out.append(f"-- loop {loop}")
            out += [
                "   " + x for x in _table(["target", "goal", "measured", "result", "per rep"], body)
            ]
    passed = sum(v.result == "PASS" for v in verdicts)
    missed = sum(v.result == "MISS" for v in verdicts)
    out.append(f"   {passed} PASS, {missed} MISS, {len(verdicts) - passed - missed} n/a")
    return out


# Every one must be 0; load_failed_writes: a background load's (loophealth) failed writes.
_BAD = ("misses", "failed_writes", "errors", "lost_writes", "load_failed_writes")


def sanity_text(res: Results) -> list[str]:
    """Rows that missed on existing keys, failed writes or raised: every one is a finding."""
    bad: list[Row] = [r for r in res.rows if any(r.metrics.get(k) for k in _BAD)]
    if not bad:
        return [
            "== sanity: 0 misses on existing keys, 0 failed writes (background loads too), "
            "0 errors, 0 lost writes"
        ]
    out = ["== sanity: WARNING, these rows should all be 0"]
    for r in bad:
        counts = {k: int(r.metrics[k]) for k in _BAD if r.metrics.get(k)}
        out.append(
            f"   {r.section} {r.loop} rep {r.rep + 1} {r.system} {r.workload} c{r.concurrency}: {counts} {r.note}"
        )
    return out


def verdicts_json(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    return [
        {
            "target": v.target.label,
            "section": v.target.section,
            "metric": v.target.metric,
            "loop": v.loop,
            "op": v.target.op,
            "goal": v.target.goal,
            "values": v.values,
            "median": v.median,
            "result": v.result,
        }
        for v in verdicts
    ]
