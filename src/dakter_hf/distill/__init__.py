"""Knowledge transfer to student segmentation models: SegFormer students and their image processor, and the
student loss (cross-entropy on real pairs, KD on generated soft labels; modes `real` / `hard` / `soft`)."""

from .losses import (
    DISTILLATION_MODES,
    DistillationLossOutput,
    distillation_loss,
    knowledge_distillation_loss,
    upsample_logits,
)
from .students import (
    SEGFORMER_PRESETS,
    adapt_input_channels,
    create_image_processor,
    create_student,
    segformer_config,
)
from .training import (
    DistillationDataset,
    MixedBatchSampler,
    build_distillation_dataloader,
    build_evaluation_dataloader,
    distillation_training_step,
    evaluate_student,
    load_generated_dataset,
    save_student,
)


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
    "save_student",
    "segformer_config",
    "upsample_logits",
]
