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


__all__ = [
    "DISTILLATION_MODES",
    "DistillationLossOutput",
    "SEGFORMER_PRESETS",
    "adapt_input_channels",
    "create_image_processor",
    "create_student",
    "distillation_loss",
    "knowledge_distillation_loss",
    "segformer_config",
    "upsample_logits",
]
