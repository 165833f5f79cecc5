"""Split-level evaluation of a student and the reports of a distillation run.

[`evaluate_student`] scores a model on a whole split: this process's shard ([`build_evaluation_dataloader`], no
padding) is accumulated into one confusion matrix, summed across processes, so the numbers do not depend on the
number of processes. `dakter_hf.commands.distill` runs it during training (best-student selection) and
`dakter_hf.commands.evaluate` on any checkpoint. The rest turns evaluation records into the run's outputs: the metrics
JSON ([`write_metrics_report`]), the best evaluation, the learning curves and a printable table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import dataset_from_args
from ..data.transforms import mask_to_tensor
from ..filesystem import write_text_atomic
from ..metrics import SegmentationMetrics, compute_segmentation_metrics, metric_key_names


__all__ = [
    "EvaluationTransform",
    "best_evaluation",
    "build_evaluation_dataloader",
    "evaluate_student",
    "evaluation_dataset_from_args",
    "format_metrics_table",
    "learning_curve_history",
    "write_metrics_report",
]


class EvaluationTransform:
    """`dataset.with_transform` for evaluation: images through an image processor, masks at their native size.

    Using the checkpoint's own image processor (resize + normalisation) is what makes the scores those of
    `AutoImageProcessor` + `AutoModelForSemanticSegmentation` on the raw images; the logits are upsampled to the
    native mask size by the metric ([`SegmentationMetrics.update`]).

    Args:
        image_processor: e.g. [`~dakter_hf.distill.create_image_processor`] or `AutoImageProcessor.from_pretrained`.
    """

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, batch: Mapping[str, list]) -> dict[str, Any]:
        images = [image if image.mode == "L" else image.convert("L") for image in batch["image"]]
        pixel_values = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": list(pixel_values), "labels": [mask_to_tensor(mask) for mask in batch["mask"]]}


def _evaluation_collate_fn(examples: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, Any]:
    labels = [e["labels"] for e in examples]
    same_size = all(label.shape == labels[0].shape for label in labels)
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]).float(),
        "labels": torch.stack(labels) if same_size else labels,  # a list when native mask sizes differ
    }


def build_evaluation_dataloader(
    dataset,
    image_processor,
    batch_size: int = 16,
    process_index: int = 0,
    num_processes: int = 1,
    max_samples: int | None = None,
    num_workers: int = 0,
) -> DataLoader:
    """A `DataLoader` over this process's contiguous shard of an evaluation split, **without padding**.

    Shards partition the split exactly (no repeated samples, unlike a padded distributed sampler), so the confusion
    matrices summed over processes are the split-level one.

    Args:
        dataset (`datasets.Dataset`): rows with `image` and `mask` (native size).
        image_processor: resizes and normalises the images ([`EvaluationTransform`]).
        batch_size (`int`, *optional*, defaults to 16): batch size per process.
        process_index (`int`), num_processes (`int`): this process and the number of processes.
        max_samples (`int`, *optional*): evaluate only the first `max_samples` rows (quick runs).
        num_workers (`int`, *optional*, defaults to 0): loader workers.
    """
    dataset = dataset.select_columns(["image", "mask"])
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    if num_processes > 1:
        dataset = dataset.shard(num_shards=num_processes, index=process_index, contiguous=True)
    return DataLoader(dataset.with_transform(EvaluationTransform(image_processor)), batch_size=batch_size,
                      shuffle=False, collate_fn=_evaluation_collate_fn, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(0))  # keeps torch's global RNG untouched


def evaluation_dataset_from_args(args, split: str, simulated_resolution: int | None = None):
    """An evaluation split selected by the shared data flags (`dakter_hf.data.add_data_args`), at its **native** size.

    Masks are scored at their native size (logits are upsampled to it), so file-based datasets are loaded without
    load-time resizing even when the script has a `--resolution` flag (which `dataset_from_args` would otherwise
    apply). Simulated scenes have no native size: they are drawn at `simulated_resolution`.

    Args:
        args (`argparse.Namespace`): parsed arguments of a script using `add_data_args`.
        split (`str`): the split to load.
        simulated_resolution (`int`, *optional*): scene size of `--dataset simulated`.

    Returns:
        `datasets.Dataset`.
    """
    if args.dataset == "simulated":
        return dataset_from_args(args, split=split, resolution=simulated_resolution)
    native = argparse.Namespace(**{**vars(args), "resolution": None})  # `resolution=None` would fall back to it
    return dataset_from_args(native, split=split, resolution=None)


@torch.no_grad()
def evaluate_student(
    model,
    dataloader: DataLoader,
    id2label: Mapping[int, str],
    accelerator=None,
    ignore_index: int = 255,
    show_progress: bool = True,
) -> dict[str, float]:
    """Split-level metrics of a SegFormer: confusion matrix over the whole split, summed across processes.

    Logits are upsampled (bilinear) to each mask's size and arg-maxed ([`SegmentationMetrics.update`]). Every process
    must call this function (the reduction is collective). The model is run un-wrapped and in eval mode, and put
    back in its previous mode.

    Args:
        model: a `SegformerForSemanticSegmentation` (or any model returning `.logits`), possibly wrapped.
        dataloader (`DataLoader`): this process's shard ([`build_evaluation_dataloader`]).
        id2label (`Mapping`): class names (keys of the per-class metrics).
        accelerator (`accelerate.Accelerator`, *optional*): reduces the confusion matrix across processes.
        ignore_index (`int`, *optional*, defaults to 255): unlabelled pixels.
        show_progress (`bool`, *optional*, defaults to `True`): tqdm bar on the main process.

    Returns:
        `dict[str, float]`: `mean_iou`, `mean_f1`, `mean_precision`, `mean_recall`, `pixel_accuracy`, per-class
        `iou_<name>`, `f1_<name>`, `precision_<name>`, `recall_<name>`, and `num_pixels` (counted pixels).
    """
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    metrics = SegmentationMetrics(len(id2label), ignore_index=ignore_index, id2label=id2label, device=device)
    is_main = accelerator is None or accelerator.is_local_main_process
    for batch in tqdm(dataloader, desc="Evaluating", leave=False, disable=not (show_progress and is_main)):
        logits = model(pixel_values=batch["pixel_values"].to(device)).logits.float()
        labels = batch["labels"]
        if isinstance(labels, torch.Tensor):
            metrics.update(logits, labels.to(device))
        else:
            for sample_logits, sample_labels in zip(logits, labels):
                metrics.update(sample_logits[None], sample_labels[None].to(device))
    matrix = metrics.reduce(accelerator)
    model.train(was_training)
    results = compute_segmentation_metrics(matrix, id2label)
    results["num_pixels"] = int(matrix.sum())
    return results


def write_metrics_report(path: str | os.PathLike, evaluations: Sequence[Mapping[str, Any]], best_step: int | None,
                         final_step: int | None, **extra: Any) -> dict[str, Any]:
    """Write the run's metrics JSON: every evaluation point, the best (by `mean_iou`) and the final one.

    Args:
        path (`str`): the JSON file.
        evaluations (`Sequence[Mapping]`): `{"step": ..., "mean_iou": ..., ...}` records.
        best_step (`int`, *optional*), final_step (`int`, *optional*): steps of the best / final evaluation.
        **extra: other top-level fields (mode, num_processes, losses, arguments, ...).

    Returns:
        `dict`: what was written. NaN metrics (classes absent from the split) are written as `NaN`.
    """
    by_step = {int(e["step"]): dict(e) for e in evaluations}
    report = {
        **extra,
        "evaluations": [by_step[s] for s in sorted(by_step)],
        "best": by_step.get(best_step) if best_step is not None else None,
        "final": by_step.get(final_step) if final_step is not None else None,
    }
    write_text_atomic(path, json.dumps(report, indent=2, default=str) + "\n")  # never a truncated report
    return report


def best_evaluation(evaluations: Sequence[Mapping[str, Any]], metric: str = "mean_iou") -> Mapping[str, Any] | None:
    """The evaluation record with the highest `metric` (NaN counts as lowest; the earliest wins ties)."""
    best = None
    for record in evaluations:
        value = record.get(metric)
        value = -math.inf if value is None or not math.isfinite(value) else value
        if best is None or value > best[0]:
            best = (value, record)
    return None if best is None else best[1]


def learning_curve_history(train_records: Sequence[Mapping[str, Any]], evaluations: Sequence[Mapping[str, Any]],
                           train_names: Sequence[str] = ("loss", "loss_real", "loss_generated"),
                           eval_names: Sequence[str] = ("mean_iou",)) -> dict[str, list[tuple[int, float]]]:
    """The `{"train/<loss>": [(step, value)], "eval/<metric>": [...]}` curves of a run, in the format of
    `dakter_hf.visualization.save_learning_curves` (one panel for the losses, one for validation mIoU).

    Generated-loss points of steps without generated samples (`real` mode) are left out.
    """
    history: dict[str, list[tuple[int, float]]] = {}
    for name in train_names:
        points = [(int(r["step"]), float(r[name])) for r in train_records if name in r
                  and not (name == "loss_generated" and r.get("num_generated", 1) == 0)]
        if points:
            history[f"train/{name}"] = points
    for name in eval_names:
        history[f"eval/{name}"] = [(int(r["step"]), float(r[name])) for r in evaluations if name in r]
    return history


def format_metrics_table(metrics: Mapping[str, float], id2label: Mapping[int, str], title: str | None = None) -> str:
    """A plain-text table of [`evaluate_student`] metrics: one row per class (IoU, F1, precision, recall) and the
    means, then pixel accuracy. Values in percent; `nan` marks classes absent from labels and predictions."""
    columns = ("iou", "f1", "precision", "recall")
    names = [str(id2label[i]) for i in range(len(id2label))]
    keys = metric_key_names(len(id2label), id2label)
    width = max([len(n) for n in names] + [len("mean")]) + 2
    lines = [title] if title else []
    lines.append("class".ljust(width) + "".join(f"{c:>11}" for c in ("IoU", "F1", "precision", "recall")))
    lines.append("-" * (width + 11 * len(columns)))
    for name, key in zip(names, keys):
        lines.append(name.ljust(width) + "".join(f"{100 * metrics[f'{c}_{key}']:>11.2f}" for c in columns))
    lines.append("-" * (width + 11 * len(columns)))
    lines.append("mean".ljust(width) + "".join(f"{100 * metrics[f'mean_{c}']:>11.2f}" for c in columns))
    lines.append(f"mIoU {100 * metrics['mean_iou']:.2f} | mean F1 {100 * metrics['mean_f1']:.2f} | pixel accuracy "
                 f"{100 * metrics['pixel_accuracy']:.2f}")
    return "\n".join(lines)
