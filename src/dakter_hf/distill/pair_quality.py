"""Pair quality: a score per generated pair, stored in the dataset, to drop the worst pairs or weight their loss.

A generated pair's image and soft label were sampled together; nothing guarantees that the label describes the image.
The score compares the pair's own soft label `q` with the soft label `p` a labeller gives the same image (the
generator's segmentation pipeline, p(label | image), or a student trained on real pairs; see
`dakter_hf.distill.labellers`), with the definitions of `dakter_hf.metrics.agreement`:

* `pair_quality` = `1 - mean over pixels of TV(q, p)` (total-variation distance), in [0, 1], 1 when they agree
  exactly: the score [`select_pairs_by_quality`] ranks and weights pairs by;
* `pair_quality_miou` = the mIoU of the two argmax masks over the classes present in either (reported beside it).

`dakter relabel --score_only` writes a copy of a generated dataset with these two columns added (labels unchanged).
`examples/distill.py --drop_worst_pairs F` drops the `floor(F * n)` pairs of lowest `pair_quality` (equal
scores: the earlier row first), `--pair_quality_weighting` weights each generated pair's loss by
`pair_quality / mean(pair_quality)` over the pairs kept (mean weight 1, so the share of the generated term is kept on
average; a pair scored 0 contributes nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.errors import DataError
from ..metrics.agreement import argmax_mean_iou, soft_label_agreement


__all__ = ["PAIR_QUALITY_COLUMN", "PAIR_QUALITY_COLUMNS", "PairSelection", "pair_quality_scores",
           "select_pairs_by_quality"]

#: The score a generated dataset stores per pair (ranked and weighted by distillation).
PAIR_QUALITY_COLUMN = "pair_quality"
#: The argmax-mIoU companion of the score (reported only).
PAIR_QUALITY_MIOU_COLUMN = "pair_quality_miou"
PAIR_QUALITY_COLUMNS = (PAIR_QUALITY_COLUMN, PAIR_QUALITY_MIOU_COLUMN)


def pair_quality_scores(own: torch.Tensor, labeller: torch.Tensor) -> dict[str, list[float]]:
    """The two score columns of a batch of pairs: `own` (the pairs' soft labels) vs `labeller` (the labeller's soft
    labels of the same images), both `(B, K, H, W)` probabilities."""
    return {PAIR_QUALITY_COLUMN: soft_label_agreement(own, labeller).tolist(),
            PAIR_QUALITY_MIOU_COLUMN: argmax_mean_iou(own, labeller).tolist()}


@dataclass
class PairSelection:
    """Output of [`select_pairs_by_quality`].

    Args:
        dataset (`datasets.Dataset`): the pairs kept, in their original order.
        weights (`np.ndarray`, *optional*): per kept pair, the weight of its loss (`None` without weighting).
        report (`dict`): what was dropped and weighted, for `metrics.json`.
    """

    dataset: Any
    weights: np.ndarray | None = None
    report: dict[str, Any] = field(default_factory=dict)


def select_pairs_by_quality(generated, drop_worst_pairs: float = 0.0, weighting: bool = False,
                            name: str | None = None) -> PairSelection:
    """Drop the lowest-scoring pairs of a scored generated dataset and / or weight the others by their score.

    Args:
        generated (`datasets.Dataset`): a generated dataset with a `pair_quality` column (`dakter relabel
            --score_only`).
        drop_worst_pairs (`float`, *optional*, defaults to 0): fraction F in [0, 1) of pairs to drop: the
            `floor(F * n)` of lowest `pair_quality`.
        weighting (`bool`, *optional*, defaults to `False`): weights `pair_quality / mean(pair_quality)` over the
            kept pairs.
        name (`str`, *optional*): how errors and the report name the dataset (e.g. its path).

    Raises:
        `DataError` (a `ValueError`): the column is missing, a score is not finite or outside [0, 1], `F` is outside
        [0, 1), or every kept pair scores 0 (nothing to weight by).
    """
    name = name or "the generated dataset"
    if not 0 <= drop_worst_pairs < 1:
        raise DataError(f"--drop_worst_pairs must lie in [0, 1) (a fraction of the generated pairs), got "
                        f"{drop_worst_pairs}.")
    if PAIR_QUALITY_COLUMN not in generated.column_names:
        raise DataError(f"--generated_dataset {name} has no {PAIR_QUALITY_COLUMN!r} column (it has "
                        f"{generated.column_names}), which --drop_worst_pairs / --pair_quality_weighting need: score "
                        f"its pairs first with `dakter relabel --score_only --generated_dataset {name} --labeller "
                        "<generator or student directory> --output_dir <scored copy>` and distil from the copy.")
    scores = np.asarray(generated[PAIR_QUALITY_COLUMN], dtype=np.float64)
    if not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
        raise DataError(f"--generated_dataset {name}: {PAIR_QUALITY_COLUMN!r} must hold finite scores in [0, 1]; got "
                        f"values in [{np.nanmin(scores)}, {np.nanmax(scores)}] (NaN: {int(np.isnan(scores).sum())}).")
    n = len(scores)
    num_dropped = math.floor(drop_worst_pairs * n)
    order = np.argsort(scores, kind="stable")[:num_dropped]  # lowest first; equal scores: the earlier row first
    kept = np.setdiff1d(np.arange(n), order)
    report: dict[str, Any] = {
        "column": PAIR_QUALITY_COLUMN, "generated_dataset": name, "num_pairs": n,
        "drop_worst_pairs": drop_worst_pairs, "num_dropped": int(num_dropped), "num_kept": int(len(kept)),
        "mean_quality": float(scores.mean()), "mean_quality_kept": float(scores[kept].mean()),
        "weighting": bool(weighting)}
    if num_dropped:
        report["max_quality_dropped"] = float(scores[order].max())
        report["dropped_rows"] = sorted(int(i) for i in order)
        if "seed" in generated.column_names:
            seeds = generated.select(report["dropped_rows"])["seed"]
            report["dropped_seeds"] = [int(s) for s in seeds]
    dataset = generated.select(kept) if num_dropped else generated
    weights = None
    if weighting:
        mean = scores[kept].mean()
        if not mean > 0:
            raise DataError(f"--pair_quality_weighting: every pair kept from {name} scores 0, so no pair would count.")
        weights = (scores[kept] / mean).astype(np.float32)
        report.update(weight_min=float(weights.min()), weight_max=float(weights.max()),
                      weight_definition=f"{PAIR_QUALITY_COLUMN} / mean {PAIR_QUALITY_COLUMN} of the kept pairs")
    return PairSelection(dataset=dataset, weights=weights, report=report)
