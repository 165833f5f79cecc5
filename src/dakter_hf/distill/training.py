"""One optimisation step of a student and saving it.

[`distillation_training_step`] is the step of every mode (`real`, `hard`, `soft`): optional augmentation, forward,
[`~dakter_hf.distill.distillation_loss`], backward, clipping, optimizer and scheduler step, with the losses averaged
over processes. [`save_student`] writes a student that loads without `dakter_hf`. The loop around them is
`dakter_hf.distill.trainer`.

The data (`dakter_hf.distill.data`, `dakter_hf.distill.sampler`) and the evaluation (`dakter_hf.distill.evaluation`)
of a run lived in this module before; their names are re-exported here for the code that imports them from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import torch

from ..filesystem import commit_directory, mark_owned, owner_of, start_staging
from ..training.runs import backward_and_step, is_run_checkpoint, list_checkpoints
from .data import (  # noqa: F401  (re-exported, see the module doc)
    GENERATED_COLUMNS,
    DistillationDataset,
    augment_distillation_batch,
    build_distillation_dataloader,
    check_generated_dataset,
    distillation_collate_fn,
    load_generated_dataset,
)
from .evaluation import (  # noqa: F401  (re-exported, see the module doc)
    EvaluationTransform,
    best_evaluation,
    build_evaluation_dataloader,
    evaluate_student,
    evaluation_dataset_from_args,
    format_metrics_table,
    learning_curve_history,
    write_metrics_report,
)
from .losses import distillation_loss
from .sampler import (  # noqa: F401  (re-exported, see the module doc)
    DEFAULT_GENERATED_RATIO,
    MixedBatchSampler,
    batch_composition,
    parse_generated_ratio,
    resolve_generated_ratio,
)


__all__ = [
    "adopt_unmarked_students",
    "distillation_training_step",
    "save_student",
]


def distillation_training_step(
    accelerator,
    model,
    optimizer,
    lr_scheduler,
    batch: Mapping[str, torch.Tensor],
    mode: str = "soft",
    kd_temperature: float = 1.0,
    real_weight: float = 1.0,
    generated_weight: float = 1.0,
    max_grad_norm: float | None = 1.0,
    ignore_index: int = 255,
    augment: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One optimisation step of the student on a (mixed) batch: forward, [`distillation_loss`], backward, clip, step.

    Args:
        accelerator (`accelerate.Accelerator`): the accelerator that prepared `model`, `optimizer`, `lr_scheduler`.
        model: the (prepared) SegFormer student.
        optimizer, lr_scheduler: prepared optimizer and scheduler.
        batch (`Mapping`): a [`distillation_collate_fn`] batch.
        mode (`str`, *optional*, defaults to `"soft"`): `"real"`, `"hard"` or `"soft"` (see [`distillation_loss`]).
        kd_temperature (`float`, *optional*, defaults to 1.0): KD temperature tau (`"soft"` mode).
        real_weight (`float`, *optional*, defaults to 1.0), generated_weight (`float`, *optional*, defaults to 1.0):
            per-pixel weights of the real and generated terms.
        max_grad_norm (`float`, *optional*, defaults to 1.0): gradient clipping; `None` disables it.
        ignore_index (`int`, *optional*, defaults to 255): unlabelled pixels.
        augment (`bool`, *optional*, defaults to `False`): random symmetries ([`augment_distillation_batch`]).
        generator (`torch.Generator`, *optional*): source of the augmentation.

    Returns:
        `dict[str, float]`: `loss`, `loss_real`, `loss_generated` (averaged over processes) and the batch's
        `num_real` / `num_generated` (summed over processes).
    """
    if augment:
        batch = augment_distillation_batch(batch, generator)
    with accelerator.accumulate(model):
        logits = model(pixel_values=batch["pixel_values"]).logits
        output = distillation_loss(logits, batch, mode=mode, kd_temperature=kd_temperature, real_weight=real_weight,
                                   generated_weight=generated_weight, ignore_index=ignore_index)
        backward_and_step(accelerator, output.loss, model, optimizer, lr_scheduler, max_grad_norm)
    device = output.loss.device
    losses = torch.stack([output.loss.detach(), output.loss_real.detach(), output.loss_generated.detach()]).float()
    losses = accelerator.reduce(losses, reduction="mean")
    counts = accelerator.reduce(torch.tensor([output.num_real, output.num_generated], device=device), reduction="sum")
    return {
        "loss": float(losses[0]),
        "loss_real": float(losses[1]),
        "loss_generated": float(losses[2]),
        "num_real": int(counts[0]),
        "num_generated": int(counts[1]),
    }


#: Owner marker of the student directories [`save_student`] writes (and may replace).
STUDENT_OWNER = "dakter_hf student"


def save_student(model, image_processor, save_directory: str | os.PathLike, accelerator=None) -> str:
    """Save a student with `save_pretrained` (config with `id2label`, safetensors weights) and its image processor
    (`preprocessor_config.json`) in one directory, loadable with `AutoModelForSemanticSegmentation` and
    `AutoImageProcessor` without `dakter_hf`. Call it on the main process only. The student is written to
    `<save_directory>.incomplete` and renamed when complete, replacing an earlier student saved there.

    Returns:
        `str`: the directory.
    """
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    save_directory = os.fspath(save_directory).rstrip(os.sep)
    staging = start_staging(save_directory, STUDENT_OWNER)  # renamed when complete: never a half-written student
    model.save_pretrained(staging)
    image_processor.save_pretrained(staging)
    commit_directory(staging, save_directory, STUDENT_OWNER)
    return save_directory


#: Everything `save_student` writes into a student directory (the card since the cards exist).
_STUDENT_FILES = {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"}


def _is_unmarked_student(path: str) -> bool:
    """A directory holding nothing but a saved SegFormer student, without an owner marker."""
    if not os.path.isdir(path) or os.path.islink(path) or owner_of(path) is not None:
        return False
    names = set(os.listdir(path))
    if not {"config.json", "model.safetensors"} <= names or not names <= _STUDENT_FILES:
        return False
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            return json.load(f).get("model_type") == "segformer"
    except (OSError, ValueError, AttributeError):
        return False


def adopt_unmarked_students(output_dir: str | os.PathLike, names: tuple[str, ...] = ("best", "final")) -> list[str]:
    """Let a resumed run replace the students an older dakter_hf version saved in its output directory.

    Versions before the ownership markers wrote `best/` and `final/` without `.dakter_hf_owner.json`, and
    [`save_student`] refuses to replace an unmarked directory (it may be the user's). A student directory is adopted
    (marked as [`save_student`]'s) only when `output_dir` holds this run's own training state -- a `checkpoint-<step>`
    written by dakter_hf ([`is_run_checkpoint`]: marked, or holding nothing but a saved training state) and the
    run's `logs/train_log.jsonl` -- and the directory holds nothing but a saved SegFormer student (`config.json` of
    model type `segformer`, `model.safetensors`, optionally `preprocessor_config.json` and `README.md`). Anything
    else is left alone, and saving over it still fails with a message naming it.

    Returns:
        `list[str]`: the directories adopted.
    """
    output_dir = os.fspath(output_dir)
    has_run_state = (os.path.isfile(os.path.join(output_dir, "logs", "train_log.jsonl"))
                     and any(is_run_checkpoint(path) for path in list_checkpoints(output_dir)))
    adopted = []
    for name in names if has_run_state else ():
        path = os.path.join(output_dir, name)
        if _is_unmarked_student(path):
            mark_owned(path, STUDENT_OWNER)
            adopted.append(path)
    return adopted
