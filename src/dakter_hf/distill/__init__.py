"""Knowledge transfer to student segmentation models.

`students` (SegFormer students and their image processor), `losses` (cross-entropy on real pairs, KD on generated
soft labels; modes `real` / `hard` / `soft`), `sampler` (the real / generated composition of every batch), `data`
(generated datasets, the training examples and loader), `training` (one step, saving), `evaluation` (split-level
scores and run reports), `labellers` and `relabel` (generated images labelled again by a student, the control arm,
or by the generator's segmentation pipeline, posterior soft labels; or scored), `pair_quality` (the per-pair score,
dropping and weighting pairs) and `trainer` (the Accelerate loop of `dakter_hf.commands.distill`)."""

from .data import DistillationDataset, build_distillation_dataloader, load_generated_dataset
from .evaluation import build_evaluation_dataloader, evaluate_student
from .labellers import GeneratorLabeller, StudentLabeller, load_labeller
from .losses import (
    DISTILLATION_MODES,
    DistillationLossOutput,
    distillation_loss,
    knowledge_distillation_loss,
    upsample_logits,
)
from .pair_quality import select_pairs_by_quality
from .relabel import relabel_to_disk, relabel_with_student
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
    "GeneratorLabeller",
    "MixedBatchSampler",
    "SEGFORMER_PRESETS",
    "StudentLabeller",
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
    "load_labeller",
    "relabel_to_disk",
    "relabel_with_student",
    "save_student",
    "segformer_config",
    "select_pairs_by_quality",
    "upsample_logits",
]
