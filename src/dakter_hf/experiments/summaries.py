"""Summaries of the students of a DAKTer loop: mean ± std over seeds per arm, as a dict and as a Markdown table."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from ..distill.losses import DISTILLATION_MODES


__all__ = ["LABELS", "METRICS", "MODES", "format_summary", "merge_summaries", "seed_count_note", "summarize"]

#: The student modes of a loop, in table order.
MODES = DISTILLATION_MODES
#: The student metrics the loops report, and their column labels in the tables.
METRICS = ("mean_iou", "iou_oil_spill", "f1_oil_spill", "mean_f1")
LABELS = {"mean_iou": "mIoU", "iou_oil_spill": "oil IoU", "f1_oil_spill": "oil F1", "mean_f1": "mean F1"}


def summarize(reports: Mapping[str, Sequence[Mapping]], metrics: Sequence[str], which: str = "final") -> dict:
    """Mean and standard deviation over seeds of each metric of each arm, from the `which` evaluation. When every
    report of an arm names its student `seed`, each cell also lists the `seeds` of its `values` (in their order), so
    that summaries of runs over other seeds can be merged ([`merge_summaries`])."""
    summary = {}
    for arm, arm_reports in reports.items():
        summary[arm] = {}
        named = all("seed" in r for r in arm_reports)
        for metric in metrics:
            pairs = [(r.get("seed"), r[which][metric]) for r in arm_reports if r.get(which) and metric in r[which]]
            pairs = [(seed, v) for seed, v in pairs if v is not None and math.isfinite(v)]
            if pairs:
                summary[arm][metric] = _cell([v for _, v in pairs], [seed for seed, _ in pairs] if named else None)
    return summary


def _cell(values: Sequence[float], seeds: Sequence[int] | None) -> dict:
    cell = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": list(values)}
    if seeds is not None:
        cell["seeds"] = list(seeds)
    return cell


def merge_summaries(previous: Mapping[str, Mapping], new: Mapping[str, Mapping]) -> dict:
    """A summary of two runs: an arm of both whose cells name their seeds (`summarize` of reports with a `seed`) keeps
    the seeds of either, the new run's value where both have one, with mean, std and n recomputed (a run that adds
    student seeds 3 and 4 to an arm of seeds 0-2 gives five seeds, not two). Other arms and cells come from the new
    run where it has them, else from the previous one."""
    merged = {**previous, **new}
    for arm in set(previous) & set(new):
        cells = {**previous[arm], **new[arm]}
        for metric in set(previous[arm]) & set(new[arm]):
            old, now = previous[arm][metric], new[arm][metric]
            if "seeds" in old and "seeds" in now:
                by_seed = {**dict(zip(old["seeds"], old["values"])), **dict(zip(now["seeds"], now["values"]))}
                seeds = sorted(by_seed)
                cells[metric] = _cell([by_seed[seed] for seed in seeds], seeds)
        merged[arm] = cells
    return merged


def format_summary(summary: Mapping[str, Mapping], metrics: Sequence[str], labels: Mapping[str, str]) -> str:
    """A Markdown table of `summarize` output, in percent: mean ± std over seeds.

    A single seed has no spread: when every cell holds one seed the numbers stand alone (say `n = 1` in the
    caption); in a table that also has several-seed cells, a single-seed cell reads `75.15 (n = 1)`.
    """
    header = "| arm | " + " | ".join(labels.get(m, m) for m in metrics) + " |"
    lines = [header, "|" + "---|" * (len(metrics) + 1)]
    only_single_seeds = _seed_counts(summary) <= {1}
    for arm, values in summary.items():
        cells = []
        for metric in metrics:
            v = values.get(metric)
            if v is None:
                cells.append("n/a")
            elif v["n"] > 1:
                cells.append(f"{100 * v['mean']:.2f} ± {100 * v['std']:.2f}")
            else:
                cells.append(f"{100 * v['mean']:.2f}" + ("" if only_single_seeds else " (n = 1)"))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_count_note(summary: Mapping[str, Mapping]) -> str:
    """How a table of `summary` reads: 'one seed (n = 1)' or 'mean ± std over seeds'."""
    return "one seed (n = 1)" if _seed_counts(summary) <= {1} else "mean ± std over seeds"


def _seed_counts(summary: Mapping[str, Mapping]) -> set[int]:
    return {v["n"] for values in summary.values() for v in values.values()}
