"""Summaries of the students of a DAKTer loop: mean ± std over seeds per arm, as a dict and as a Markdown table."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from ..distill.losses import DISTILLATION_MODES


__all__ = ["LABELS", "METRICS", "MODES", "format_summary", "seed_count_note", "summarize"]

#: The student modes of a loop, in table order.
MODES = DISTILLATION_MODES
#: The student metrics the loops report, and their column labels in the tables.
METRICS = ("mean_iou", "iou_oil_spill", "f1_oil_spill", "mean_f1")
LABELS = {"mean_iou": "mIoU", "iou_oil_spill": "oil IoU", "f1_oil_spill": "oil F1", "mean_f1": "mean F1"}


def summarize(reports: Mapping[str, Sequence[Mapping]], metrics: Sequence[str], which: str = "final") -> dict:
    """Mean and standard deviation over seeds of each metric of each arm, from the `which` evaluation."""
    summary = {}
    for arm, arm_reports in reports.items():
        summary[arm] = {}
        for metric in metrics:
            values = [r[which][metric] for r in arm_reports if r.get(which) and metric in r[which]]
            values = [v for v in values if v is not None and math.isfinite(v)]
            if values:
                summary[arm][metric] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "n": len(values),
                    "values": values,
                }
    return summary


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
