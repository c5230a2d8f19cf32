"""Measured rows, skipped systems, and the same-run arithmetic on them.

Every number that leaves this harness is either a median over repetitions of one row's metric,
or a median over repetitions of a ratio taken *inside* one repetition (the machine is noisy:
only ratios from one run mean anything).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, TypeGuard


@dataclass
class Row:
    section: str
    system: str
    workload: str
    concurrency: int
    loop: str
    rep: int
    metrics: dict[str, float]
    note: str = ""


@dataclass(frozen=True)
class Skip:
    section: str
    system: str
    reason: str


@dataclass(frozen=True)
class Sel:
    """One row of a section, across repetitions: which system ran which workload."""

    system: str
    workload: str
    concurrency: int


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def skip(self, section: str, system: str, reason: str) -> None:
        entry = Skip(section, system, reason)
        if entry not in self.skips:
            self.skips.append(entry)

    def reps(self) -> list[int]:
        return sorted({r.rep for r in self.rows})

    def find(self, section: str, sel: Sel, loop: str, rep: int) -> Row | None:
        for r in self.rows:
            if (
                r.section == section
                and r.loop == loop
                and r.rep == rep
                and r.system == sel.system
                and r.workload == sel.workload
                and r.concurrency == sel.concurrency
            ):
                return r
        return None

    def values(self, section: str, sel: Sel, loop: str, metric: str) -> list[float]:
        """``metric`` of ``sel`` in each repetition that measured it."""
        out = []
        for rep in self.reps():
            row = self.find(section, sel, loop, rep)
            if row is not None and _finite(row.metrics.get(metric)):
                out.append(row.metrics[metric])
        return out

    def ratios(
        self, section: str, num: Sel, den: Sel | None, loop: str, metric: str
    ) -> list[float]:
        """``num / den`` of ``metric`` within each repetition (just ``num`` if ``den`` is None)."""
        if den is None:
            return self.values(section, num, loop, metric)
        out = []
        for rep in self.reps():
            a, b = self.find(section, num, loop, rep), self.find(section, den, loop, rep)
            if a is None or b is None:
                continue
            x, y = a.metrics.get(metric), b.metrics.get(metric)
            if _finite(x) and _finite(y) and y:
                out.append(x / y)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "skips": [asdict(s) for s in self.skips]}


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _finite(x: float | None) -> TypeGuard[float]:
    return x is not None and math.isfinite(x)
