"""Knowledge transfer to student segmentation models.

`students` (SegFormer students and their image processor), `losses` (cross-entropy on real pairs, KD on generated
soft labels; modes `real` / `hard` / `soft`), `sampler` (the real / generated composition of every batch), `data`
(generated datasets, the training examples and loader), `training` (one step, saving), `evaluation` (split-level
scores and run reports), `relabel` (generated images labelled by a student: the control arm) and `trainer` (the
Accelerate loop of `dakter_hf.commands.distill`)."""

from .data import DistillationDataset, build_distillation_dataloader, load_generated_dataset
from .evaluation import build_evaluation_dataloader, evaluate_student
from .losses import (
    DISTILLATION_MODES,
    DistillationLossOutput,
    distillation_loss,
    knowledge_distillation_loss,
    upsample_logits,
)
from .relabel import relabel_with_student
from .sampler import MixedBatchSampler
from .students import (
    SEGFORMER_PRESETS,
    adapt_input_channels,
    create_image_processor,
    create_student,
    segformer_config,
)
from .training import distillation_training_step, save_student


__all__ = [
    "DISTILLATION_MODES",
    "DistillationDataset",
    "DistillationLossOutput",
    "MixedBatchSampler",
    "SEGFORMER_PRESETS",
    "adapt_input_channels",
    "build_distillation_dataloader",
    "build_evaluation_dataloader",
    "create_image_processor",
    "create_student",
    "distillation_loss",
    "distillation_training_step",
    "evaluate_student",
    "knowledge_distillation_loss",
    "load_generated_dataset",
    "relabel_with_student",
    "save_student",
    "segformer_config",
    "upsample_logits",
]
