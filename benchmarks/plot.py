"""PNG plots of a ``run.py --json`` file: ``python benchmarks/plot.py out.json outdir/``.

Per section and loop: ``ops_<section>_<loop>.png`` (median ops/s, one bar per system, grouped
by workload) and ``latency_<section>_<loop>.png`` (p50 / p99 / p99.9 per system, one panel per
workload). Log scales: the systems differ by orders of magnitude.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

import matplotlib

from results import Results, Row, Sel, median

matplotlib.use("Agg")  # files only, no display

PERCENTILES = (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9"))


def _load(path: str) -> tuple[dict[str, Any], Results]:
    with open(path) as f:
        doc = json.load(f)
    return doc, Results(rows=[Row(**r) for r in doc["rows"]])


def _groups(res: Results, section: str, loop: str) -> dict[tuple[str, int], list[Sel]]:
    """``(workload, concurrency) -> systems`` in the order they were measured."""
    out: dict[tuple[str, int], list[Sel]] = {}
    for r in res.rows:
        if r.section == section and r.loop == loop:
            sel = Sel(r.system, r.workload, r.concurrency)
            group = out.setdefault((r.workload, r.concurrency), [])
            if sel not in group:
                group.append(sel)
    return out


def _median(res: Results, section: str, sel: Sel, loop: str, metric: str) -> float:
    m = median(res.values(section, sel, loop, metric))
    return math.nan if m is None else m


def plot_ops(res: Results, section: str, loop: str, path: str, title: str) -> bool:
    import matplotlib.pyplot as plt

    groups = {g: s for g, s in _groups(res, section, loop).items() if not g[0].startswith("RSS")}
    systems = list(dict.fromkeys(sel.system for sels in groups.values() for sel in sels))
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups) + 2), 4.5))
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        xs, ys = [], []
        for x, (workload, c) in enumerate(groups):
            xs.append(x + (i - (len(systems) - 1) / 2) * width)
            ys.append(_median(res, section, Sel(system, workload, c), loop, "ops_per_s"))
        ax.bar(xs, ys, width, label=system)
    ax.set_xticks(range(len(groups)), [f"{w} c{c}" for w, c in groups])
    ax.set_yscale("log")
    ax.set_ylabel("ops/s (median, log scale)")
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_latency(res: Results, section: str, loop: str, path: str, title: str) -> bool:
    import matplotlib.pyplot as plt

    groups = {g: s for g, s in _groups(res, section, loop).items() if not g[0].startswith("RSS")}
    if not groups:
        return False
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.8 * rows), squeeze=False)
    for ax, ((workload, c), sels) in zip(axes.flat, groups.items(), strict=False):
        width = 0.8 / len(PERCENTILES)
        for j, (metric, name) in enumerate(PERCENTILES):
            xs = [x + (j - 1) * width for x in range(len(sels))]
            ax.bar(xs, [_median(res, section, s, loop, metric) for s in sels], width, label=name)
        ax.set_xticks(range(len(sels)), [s.system for s in sels], rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("latency, us (log scale)")
        ax.set_title(f"{workload} c{c}")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("json_file")
    p.add_argument("outdir")
    args = p.parse_args(argv)
    doc, res = _load(args.json_file)
    os.makedirs(args.outdir, exist_ok=True)
    stamp = f"{doc['meta']['date']}, {doc['meta']['cpus']} cpus"
    written = []
    for section in dict.fromkeys(r.section for r in res.rows):
        for loop in dict.fromkeys(r.loop for r in res.rows if r.section == section):
            title = f"{section} ({loop}), {stamp}"
            for kind, plot in (("ops", plot_ops), ("latency", plot_latency)):
                path = os.path.join(args.outdir, f"{kind}_{section}_{loop}.png")
                if plot(res, section, loop, path, title):
                    written.append(path)
    print("\n".join(written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
