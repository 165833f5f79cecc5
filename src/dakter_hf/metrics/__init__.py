"""Split-level semantic segmentation metrics (confusion matrix -> mIoU, F1, precision, recall, pixel accuracy),
as plain torch code and as a local `evaluate` module that loads offline; calibration of class probabilities (ECE,
argmax ECE, NLL) against hard labels; agreement of two soft labels of the same image (the pair-quality score); the
Fréchet distance between two sets of image features (FID's statistic); layout statistics of masks (class share,
pieces, largest piece, outline) and their distance between a real and a generated set."""

from pathlib import Path

import evaluate

from .agreement import argmax_mean_iou, soft_label_agreement
from .calibration import (
    CalibrationMetrics,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    temper_probabilities,
)
from .feature_distance import frechet_distance
from .layout import LAYOUT_STATISTICS, LayoutComparison, compare_layouts, connected_components, mask_layout_statistics
from .segmentation import (
    SegmentationMetrics,
    compute_segmentation_metrics,
    confusion_matrix,
    metric_key_names,
    reduce_confusion_matrix,
)


#: Directory of the local `evaluate` metric module (`segmentation_metrics/segmentation_metrics.py`).
SEGMENTATION_METRIC_PATH = str(Path(__file__).resolve().parent / "segmentation_metrics")


def load_segmentation_metric(**kwargs):
    """Load the segmentation metric as an `evaluate` module, offline, from the file shipped with this package.

    Args:
        **kwargs: forwarded to `evaluate.load` (e.g. `experiment_id`, `num_process`, `process_id`,
            `keep_in_memory`).

    Returns:
        `evaluate.EvaluationModule`: call `.compute(predictions=..., references=..., num_classes=K,
        ignore_index=255, id2label=...)` or `.add_batch(...)` then `.compute(...)`. Same numbers as
        [`compute_segmentation_metrics`].
    """
    return evaluate.load(SEGMENTATION_METRIC_PATH, **kwargs)


__all__ = [
    "LAYOUT_STATISTICS",
    "SEGMENTATION_METRIC_PATH",
    "CalibrationMetrics",
    "LayoutComparison",
    "SegmentationMetrics",
    "argmax_mean_iou",
    "compare_layouts",
    "compute_segmentation_metrics",
    "connected_components",
    "confusion_matrix",
    "expected_calibration_error",
    "fit_temperature",
    "frechet_distance",
    "load_segmentation_metric",
    "mask_layout_statistics",
    "metric_key_names",
    "negative_log_likelihood",
    "reduce_confusion_matrix",
    "soft_label_agreement",
    "temper_probabilities",
]
