"""Semantic segmentation metrics computed from a confusion matrix accumulated over a whole split.

Metrics are *dataset-level*: the confusion matrix is summed over every pixel of every image of the split (and
across processes) before any ratio is taken, which is how mIoU/F1 are reported for OSD and SOS. Averaging
per-image or per-batch scores would give a different (and batch-size-dependent) number.

Conventions (shared by [`SegmentationMetrics`], [`compute_segmentation_metrics`] and the `evaluate` module
returned by [`load_segmentation_metric`]):

* confusion matrix `cm[t, p]` = number of pixels of true class `t` predicted as class `p` (rows: labels,
  columns: predictions); pixels whose label is `ignore_index` are not counted;
* per class: `IoU = TP / (TP + FP + FN)`, `F1 = 2 TP / (2 TP + FP + FN)` (the Dice score),
  `precision = TP / (TP + FP)`, `recall = TP / (TP + FN)`;
* a class absent from both the labels and the predictions (`TP + FP + FN == 0`) has every per-class metric
  set to NaN and is excluded from the means (`mean_iou`, `mean_f1`, `mean_precision`, `mean_recall`);
* a class present in the labels or the predictions whose precision or recall is `0 / 0` (never predicted, or
  never present in the labels) gets 0 for that metric: the class is in play and was missed;
* `pixel_accuracy = trace(cm) / cm.sum()` over the counted pixels.

NaN is a valid Python float: `json.dumps` writes it as `NaN` (allowed by default), which `json.loads` reads back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F


if TYPE_CHECKING:  # pragma: no cover
    from accelerate import Accelerator


__all__ = [
    "SegmentationMetrics",
    "compute_segmentation_metrics",
    "confusion_matrix",
    "metric_key_names",
    "reduce_confusion_matrix",
]


def _as_tensor(values: Any, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values
    try:
        return torch.as_tensor(np.asarray(values))
    except Exception as error:  # ragged lists, objects, ...
        raise ValueError(f"`{name}` must be a tensor or array-like of equal-size maps: {error}") from error


def confusion_matrix(
    predictions: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int | None = 255,
) -> torch.Tensor:
    """Confusion matrix of integer predictions against integer labels.

    Args:
        predictions (`torch.Tensor` or `np.ndarray`): predicted class indices, any shape (e.g. `(B, H, W)`).
        labels (`torch.Tensor` or `np.ndarray`): true class indices, same shape as `predictions`.
        num_classes (`int`): number of classes K.
        ignore_index (`int`, *optional*, defaults to 255): label value whose pixels are not counted. `None`
            counts every pixel.

    Returns:
        `torch.Tensor`: int64 tensor of shape `(K, K)` on the device of `labels`, `cm[t, p]` counting pixels of
        true class `t` predicted as `p`.

    Raises:
        ValueError: if the shapes differ, the inputs are not integers, or a (non-ignored) value lies outside
            `[0, num_classes)`.
    """
    if num_classes < 1:
        raise ValueError(f"`num_classes` must be >= 1, got {num_classes}.")
    predictions = _as_tensor(predictions, "predictions")
    labels = _as_tensor(labels, "labels")
    if predictions.shape != labels.shape:
        raise ValueError(
            f"`predictions` and `labels` must have the same shape, got {tuple(predictions.shape)} and "
            f"{tuple(labels.shape)}."
        )
    for name, tensor in (("predictions", predictions), ("labels", labels)):
        if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
            raise ValueError(f"`{name}` must hold integer class indices, got dtype {tensor.dtype}.")
    predictions = predictions.reshape(-1).to(device=labels.device, dtype=torch.int64)
    labels = labels.reshape(-1).to(torch.int64)
    if ignore_index is not None:
        keep = labels != ignore_index
        predictions, labels = predictions[keep], labels[keep]
    if labels.numel():
        for name, tensor in (("labels", labels), ("predictions", predictions)):
            low, high = int(tensor.min()), int(tensor.max())
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"`{name}` values must lie in [0, {num_classes}) (or equal ignore_index={ignore_index} for "
                    f"labels), got range [{low}, {high}]."
                )
    counts = torch.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def reduce_confusion_matrix(matrix: torch.Tensor, accelerator: Accelerator | None = None) -> torch.Tensor:
    """Sum a per-process confusion matrix over all processes.

    Uses `accelerator.reduce(matrix, "sum")`; a no-op (returns `matrix` unchanged) when `accelerator` is `None` or
    runs a single process. Every process must call it (it is a collective operation).

    Note: with the default `even_batches=True`, `accelerate` pads the last batch of a sharded evaluation
    dataloader by repeating samples; those repeated pixels are counted twice by a summed confusion matrix.
    For exact split-level numbers, evaluate with a sampler that shards without padding or gather predictions
    with `accelerator.gather_for_metrics` before [`SegmentationMetrics.update`].

    Args:
        matrix (`torch.Tensor`): the `(K, K)` confusion matrix of this process.
        accelerator (`accelerate.Accelerator`, *optional*): the accelerator driving the processes.

    Returns:
        `torch.Tensor`: the summed `(K, K)` int64 matrix, on the device `matrix` was on.
    """
    if accelerator is None or getattr(accelerator, "num_processes", 1) <= 1:
        return matrix
    reduced = accelerator.reduce(matrix.to(device=accelerator.device, dtype=torch.int64), reduction="sum")
    return reduced.to(matrix.device)


def _sanitize(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", str(name)).strip("_").lower()


def metric_key_names(num_classes: int, id2label: Mapping[int | str, str] | None = None) -> list[str]:
    """Per-class suffixes used in metric keys (`iou_<name>`, ...).

    Label names are lower-cased and every run of characters outside `[0-9a-zA-Z]` becomes `_` ("oil spill" ->
    `oil_spill`, "look-alike" -> `look_alike`) so keys are safe as logger / `Trainer` metric names. Without
    `id2label` (or for an empty / duplicate name) the class index is used.

    Args:
        num_classes (`int`): number of classes K.
        id2label (`Mapping`, *optional*): class index (int or str, as after a JSON round trip) to name; must
            cover every index in `[0, num_classes)`.

    Returns:
        `list[str]`: K unique suffixes.
    """
    if id2label is None:
        return [str(i) for i in range(num_classes)]
    normalized = {int(k): v for k, v in id2label.items()}
    missing = [i for i in range(num_classes) if i not in normalized]
    if missing:
        raise ValueError(f"`id2label` has no name for class indices {missing} (num_classes={num_classes}).")
    names: list[str] = []
    for i in range(num_classes):
        name = _sanitize(normalized[i]) or str(i)
        names.append(f"{name}_{i}" if name in names else name)
    return names


def _ratio(numerator: np.ndarray, denominator: np.ndarray, present: np.ndarray) -> np.ndarray:
    """numerator / denominator; 0/0 -> 0 for present classes, NaN for absent ones."""
    out = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
    out[~present] = np.nan
    return out


def _nanmean(values: np.ndarray) -> float:
    return float(np.mean(values[~np.isnan(values)])) if np.any(~np.isnan(values)) else math.nan


def compute_segmentation_metrics(
    confusion_matrix: torch.Tensor | np.ndarray, id2label: Mapping[int | str, str] | None = None
) -> dict[str, float]:
    """Segmentation metrics from a (split-level, process-reduced) confusion matrix.

    See the module docstring for the exact definitions and the NaN convention for absent classes.

    Args:
        confusion_matrix (`torch.Tensor` or `np.ndarray`): `(K, K)` counts, rows = labels, columns = predictions.
        id2label (`Mapping`, *optional*): class names used in the per-class keys (see [`metric_key_names`]).

    Returns:
        `dict[str, float]`: plain Python floats: `mean_iou`, `mean_f1`, `mean_precision`, `mean_recall`,
        `pixel_accuracy`, and per class `iou_<name>`, `f1_<name>`, `precision_<name>`, `recall_<name>`.
    """
    if isinstance(confusion_matrix, torch.Tensor):
        confusion_matrix = confusion_matrix.detach().cpu().numpy()
    cm = np.asarray(confusion_matrix, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 1:
        raise ValueError(f"`confusion_matrix` must be square (K, K), got shape {cm.shape}.")
    if np.any(cm < 0):
        raise ValueError("`confusion_matrix` must hold non-negative counts.")
    names = metric_key_names(cm.shape[0], id2label)

    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    present = (tp + fp + fn) > 0
    per_class = {
        "iou": _ratio(tp, tp + fp + fn, present),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, present),
        "precision": _ratio(tp, tp + fp, present),
        "recall": _ratio(tp, tp + fn, present),
    }
    total = cm.sum()
    results: dict[str, float] = {f"mean_{metric}": _nanmean(values) for metric, values in per_class.items()}
    results["pixel_accuracy"] = float(tp.sum() / total) if total > 0 else math.nan
    for metric, values in per_class.items():
        results.update({f"{metric}_{name}": float(value) for name, value in zip(names, values)})
    return results


class SegmentationMetrics:
    """Accumulates a confusion matrix over a split and turns it into [`compute_segmentation_metrics`] numbers.

    Example:

    ```python
    >>> metrics = SegmentationMetrics(num_classes=2, id2label={0: "sea", 1: "oil"})
    >>> for batch in dataloader:
    ...     logits = model(pixel_values=batch["pixel_values"]).logits  # (B, K, H/4, W/4)
    ...     metrics.update(logits, batch["labels"])  # upsampled to the label size, then argmax
    >>> results = metrics.compute(accelerator)  # summed across processes; no-op single-process
    >>> results["mean_iou"], results["iou_oil"]
    ```

    Args:
        num_classes (`int`): number of classes K.
        ignore_index (`int`, *optional*, defaults to 255): label value whose pixels are not counted.
        id2label (`Mapping`, *optional*): class names for the per-class keys.
        device (`str` or `torch.device`, *optional*, defaults to `"cpu"`): where the matrix lives.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        id2label: Mapping[int | str, str] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"`num_classes` must be >= 1, got {num_classes}.")
        if id2label is not None:
            metric_key_names(num_classes, id2label)  # validate early
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.id2label = id2label
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        """Zero the accumulated confusion matrix."""
        self.matrix.zero_()

    @torch.no_grad()
    def update(self, predictions: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> None:
        """Add a batch to the confusion matrix.

        Args:
            predictions (`torch.Tensor` or `np.ndarray`): either class indices with the shape of `labels`, or
                scores (logits or probabilities) of shape `(B, K, h, w)` for labels `(B, H, W)`; scores are
                upsampled bilinearly (`align_corners=False`) to `(H, W)` when needed, then arg-maxed.
            labels (`torch.Tensor` or `np.ndarray`): true class indices, `ignore_index` for unlabelled pixels.
        """
        predictions = _as_tensor(predictions, "predictions")
        labels = _as_tensor(labels, "labels")
        if predictions.dim() == labels.dim() + 1:
            if predictions.dim() != 4 or predictions.shape[1] != self.num_classes:
                raise ValueError(
                    f"Score `predictions` must have shape (B, {self.num_classes}, h, w) for labels (B, H, W), got "
                    f"{tuple(predictions.shape)} and {tuple(labels.shape)}."
                )
            if predictions.shape[-2:] != labels.shape[-2:]:
                predictions = F.interpolate(
                    predictions.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False
                )
            predictions = predictions.argmax(dim=1)
        batch_matrix = confusion_matrix(predictions, labels, self.num_classes, self.ignore_index)
        self.matrix += batch_matrix.to(self.matrix.device)

    def reduce(self, accelerator: Accelerator | None = None) -> torch.Tensor:
        """The confusion matrix summed over processes (see [`reduce_confusion_matrix`]); the local one if
        `accelerator` is `None` or single-process. Does not modify the local accumulator."""
        return reduce_confusion_matrix(self.matrix, accelerator)

    def compute(self, accelerator: Accelerator | None = None) -> dict[str, float]:
        """Metrics of everything accumulated so far (summed over processes when `accelerator` is given).

        Args:
            accelerator (`accelerate.Accelerator`, *optional*): reduce the matrix across its processes first.
                Every process must call `compute` with it.

        Returns:
            `dict[str, float]`: see [`compute_segmentation_metrics`].
        """
        return compute_segmentation_metrics(self.reduce(accelerator), self.id2label)
