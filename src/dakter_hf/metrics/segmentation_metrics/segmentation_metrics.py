"""`evaluate` metric: split-level semantic segmentation metrics (mIoU, F1, precision, recall, pixel accuracy).

Loaded offline from this file with `evaluate.load(<path>)` or `dakter_hf.metrics.load_segmentation_metric()`.
`evaluate` copies this file into its module cache before importing it, so it must not use relative imports: it
imports the installed `dakter_hf` library absolutely. `evaluate` needs an `evaluate.Metric` subclass here;
[`SegmentationMetricsModule`] is only that interface: it accumulates the maps in `dakter_hf.metrics.SegmentationMetrics`
(the one implementation), so the numbers are those of `dakter_hf.metrics.compute_segmentation_metrics`.
"""

import datasets
import evaluate
import numpy as np

from dakter_hf.metrics.segmentation import SegmentationMetrics


_DESCRIPTION = """
Semantic segmentation metrics from a confusion matrix accumulated over all pixels of all the images passed in
(dataset-level, not per-image averages): mean / per-class IoU, F1 (Dice), precision, recall, and pixel accuracy.
Pixels whose reference is `ignore_index` are not counted. A class absent from both the predictions and the
references gets NaN per-class values and is excluded from the means.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2D integer arrays): predicted class index maps.
    references (`list` of 2D integer arrays): ground-truth class index maps (same shapes as `predictions`).
    num_classes (`int`): number of classes K.
    ignore_index (`int`, *optional*, defaults to 255): reference value that is not counted.
    id2label (`dict`, *optional*): class index -> name, used in per-class keys (`iou_<name>`, ...).
Returns:
    `dict[str, float]`: `mean_iou`, `mean_f1`, `mean_precision`, `mean_recall`, `pixel_accuracy` and per class
    `iou_<name>`, `f1_<name>`, `precision_<name>`, `recall_<name>`.
Examples:
    >>> metric = dakter_hf.metrics.load_segmentation_metric()
    >>> metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 255]]], num_classes=2)["mean_iou"]
    0.5
"""

_CITATION = """
@article{moon2024dakter,
  title={Diffusion-based Data Augmentation and Knowledge Distillation with Generated Soft Labels Solving Data
         Scarcity Problems of SAR Oil Spill Segmentation},
  author={Moon, Jaeho and Yun, Jeonghwan and Kim, Jaehyun and Lee, Jaehyup and Kim, Munchurl},
  journal={arXiv preprint arXiv:2412.08116},
  year={2024}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SegmentationMetricsModule(evaluate.Metric):
    """The `evaluate` interface of `dakter_hf.metrics.SegmentationMetrics`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                }
            ),
        )

    def _compute(self, predictions, references, num_classes, ignore_index=255, id2label=None):
        if len(predictions) != len(references):
            raise ValueError(
                f"`predictions` and `references` must hold as many maps, got {len(predictions)} and "
                f"{len(references)}."
            )
        metrics = SegmentationMetrics(num_classes, ignore_index=ignore_index, id2label=id2label)
        for prediction, reference in zip(predictions, references):
            metrics.update(np.asarray(prediction, dtype=np.int64), np.asarray(reference, dtype=np.int64))
        return metrics.compute()
