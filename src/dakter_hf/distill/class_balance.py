"""Class balance: weight generated pairs so that their class frequencies match the real pairs'.

A generator can draw the classes in other proportions than the data it learnt from (on SOS PALSAR, 150 pairs, its
soft labels hold 13.5-15.0% oil where the real masks hold 18.4%; BENCHMARKS.md). A student that takes half of every
batch from such pairs sees less of the rare class than the real data would show it.

`examples/distill.py --balance_generated_classes` corrects this without dropping a pair: every generated pair `i`
gets a loss weight `w_i` such that the weighted mean of the pairs' class fractions equals the real pairs' class
frequencies `t`. Among all such weightings it takes the one closest to the weights the pairs already have (1 each,
or their pair-quality weights `b_i`) in Kullback-Leibler divergence, which is an exponential tilt

    w_i = b_i * exp(lambda . f_i) / Z,

with `f_i` the pair's class fractions (the mean of its soft label per class) and `lambda` found by Newton's method on
the convex dual `log sum_i b_i exp(lambda . f_i) - lambda . t`. Weights are scaled to mean 1, so the generated term
keeps its share of the loss on average. The targets must lie inside the range the pairs span (for two classes:
between the smallest and the largest oil fraction of any pair); otherwise no weighting can reach them, which is an
error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.errors import DataError
from ..labels import decode_soft_labels


__all__ = ["ClassBalance", "balance_generated_classes", "class_balance_weights", "generated_class_fractions",
           "real_class_fractions"]


def real_class_fractions(real, num_classes: int, ignore_index: int = 255, batch_size: int = 256) -> np.ndarray:
    """Pixel frequency of each class `0 .. num_classes - 1` over the `mask` column of `real` (pixels labelled
    `ignore_index` are not counted), a `(num_classes,)` array that sums to 1.

    Raises:
        `DataError`: a mask holds a label that is neither a class nor `ignore_index`, or no pixel is labelled.
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    masks = real.select_columns(["mask"])
    for start in range(0, len(masks), batch_size):
        for mask in masks[start:start + batch_size]["mask"]:
            values = np.asarray(mask).ravel()
            values = values[values != ignore_index]
            if values.size and (values.min() < 0 or values.max() >= num_classes):
                raise DataError(f"A real mask holds label {int(values.max())}, outside the {num_classes} classes "
                                f"(0 .. {num_classes - 1}) and not the ignore index {ignore_index}.")
            counts += np.bincount(values, minlength=num_classes)[:num_classes]
    if counts.sum() == 0:
        raise DataError("The real masks label no pixel (every pixel is the ignore index): no class frequency to "
                        "balance the generated pairs toward.")
    return counts / counts.sum()


def generated_class_fractions(generated, batch_size: int = 128) -> np.ndarray:
    """Per generated pair, the mean of its soft label over pixels for each class: an `(n, K)` array whose rows sum
    to 1 (the expected class fractions of the pair)."""
    rows = generated.select_columns(["soft_label"]).with_format("numpy")
    fractions = []
    for start in range(0, len(rows), batch_size):
        q = decode_soft_labels(np.asarray(rows[start:start + batch_size]["soft_label"]), dtype=generated.features)
        fractions.append(q.reshape(q.shape[0], q.shape[1], -1).mean(axis=-1, dtype=np.float64))
    return np.concatenate(fractions) if fractions else np.zeros((0, 0))


def class_balance_weights(fractions: np.ndarray, target: np.ndarray, base_weights: np.ndarray | None = None,
                          max_iter: int = 100, tol: float = 1e-9) -> np.ndarray:
    """The weights `w` (mean 1) closest to `base_weights` in KL divergence whose weighted mean of `fractions` is
    `target`: `w_i ∝ base_i * exp(lambda . fractions_i)`.

    Args:
        fractions (`np.ndarray`): `(n, K)` class fractions per pair (rows sum to 1).
        target (`np.ndarray`): `(K,)` class frequencies to reach (sums to 1).
        base_weights (`np.ndarray`, *optional*): `(n,)` non-negative weights to stay close to (default: all 1).
        max_iter (`int`, *optional*, defaults to 100): Newton iterations at most.
        tol (`float`, *optional*, defaults to 1e-9): largest allowed gap between the weighted mean and `target`.

    Raises:
        `DataError`: `target` lies outside what the pairs can reach (e.g. more oil than the most oil-rich pair holds).
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    n, num_classes = fractions.shape
    base = np.ones(n) if base_weights is None else np.asarray(base_weights, dtype=np.float64)
    if base.shape != (n,) or not np.all(np.isfinite(base)) or base.min() < 0 or not base.sum() > 0:
        raise ValueError(f"`base_weights` must be {n} finite non-negative weights, not all 0.")
    if target.shape != (num_classes,):
        raise ValueError(f"`target` must hold {num_classes} class frequencies, got shape {target.shape}.")
    # Classes sum to 1 in every row and in the target, so the last class follows from the others: solve for K - 1.
    x, t = fractions[:, :-1], target[:-1]
    log_base = np.log(np.where(base > 0, base, 1.0))
    support = base > 0
    lam = np.zeros(num_classes - 1)

    def tilted(lam):
        logits = np.where(support, log_base + x @ lam, -np.inf)
        w = np.exp(logits - logits.max())
        return w / w.sum()

    def dual(lam):  # log sum_i b_i exp(lambda . x_i) - lambda . t (convex; its gradient is E_w[x] - t)
        logits = np.where(support, log_base + x @ lam, -np.inf)
        top = logits.max()
        return top + np.log(np.exp(logits - top).sum()) - lam @ t

    for _ in range(max_iter):
        w = tilted(lam)
        mean = w @ x
        gradient = mean - t
        if np.abs(gradient).max() <= tol:
            break
        centred = x - mean
        hessian = (centred * w[:, None]).T @ centred
        step = np.linalg.lstsq(hessian + 1e-12 * np.eye(num_classes - 1), gradient, rcond=None)[0]
        scale, value = 1.0, dual(lam)
        while scale > 1e-10 and not dual(lam - scale * step) <= value - 1e-4 * scale * gradient @ step:
            scale /= 2  # backtracking: Newton's full step can overshoot far from the optimum
        if scale <= 1e-10:
            break
        lam = lam - scale * step
    w = tilted(lam)
    gap = np.abs(w @ fractions - target).max()
    if gap > max(tol, 1e-6):
        reach = ", ".join(f"class {k}: {fractions[support, k].min():.4f} .. {fractions[support, k].max():.4f}"
                          for k in range(num_classes))
        raise DataError(f"No weighting of the generated pairs reaches the real class frequencies "
                        f"{np.round(target, 4).tolist()} (closest: {np.round(w @ fractions, 4).tolist()}); the pairs' "
                        f"class fractions span {reach}.")
    return w * support.sum() / w.sum()


@dataclass
class ClassBalance:
    """Output of [`balance_generated_classes`].

    Args:
        weights (`np.ndarray`): per generated pair, the weight of its loss (mean 1 over the pairs).
        report (`dict`): the class frequencies before and after and the weights' range, for `metrics.json`.
    """

    weights: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)


def balance_generated_classes(generated, real, id2label: dict[int, str], base_weights=None, ignore_index: int = 255,
                              name: str | None = None) -> ClassBalance:
    """Weights for the pairs of `generated` that give them the class frequencies of the masks of `real`
    ([`class_balance_weights`]; on top of `base_weights`, e.g. pair-quality weights, when given).

    Args:
        generated (`datasets.Dataset`): generated pairs (`soft_label` column).
        real (`datasets.Dataset`): the real training pairs (`mask` column).
        id2label (`dict[int, str]`): the classes (their number is the soft labels' channel count).
        base_weights (`np.ndarray`, *optional*): weights the pairs already have.
        ignore_index (`int`, *optional*, defaults to 255): mask label that is no class.
        name (`str`, *optional*): how errors and the report name the generated dataset.
    """
    name = name or "the generated dataset"
    num_classes = len(id2label)
    fractions = generated_class_fractions(generated)
    if fractions.shape != (len(generated), num_classes):
        raise DataError(f"--generated_dataset {name}: its soft labels have {fractions.shape[-1]} classes, the real "
                        f"pairs {num_classes}.")
    target = real_class_fractions(real, num_classes, ignore_index)
    try:
        weights = class_balance_weights(fractions, target, base_weights)
    except DataError as error:
        raise DataError(f"--balance_generated_classes, --generated_dataset {name}: {error}") from None
    before = fractions.mean(axis=0) if base_weights is None else (
        np.asarray(base_weights, dtype=np.float64) @ fractions / np.sum(base_weights))
    labels = [id2label[k] for k in range(num_classes)]
    ess = float(weights.sum() ** 2 / (weights ** 2).sum())
    report = {"generated_dataset": name, "num_pairs": int(len(weights)),
              "real_class_fractions": dict(zip(labels, target.round(6).tolist())),
              "generated_class_fractions": dict(zip(labels, before.round(6).tolist())),
              "balanced_class_fractions": dict(zip(labels, (weights @ fractions / weights.sum()).round(6).tolist())),
              "weight_min": float(weights.min()), "weight_max": float(weights.max()),
              "effective_num_pairs": round(ess, 2), "on_pair_quality_weights": base_weights is not None}
    return ClassBalance(weights=weights.astype(np.float32), report=report)
