"""dakter_hf: DAKTer for the Hugging Face ecosystem.

One diffusion model jointly generates SAR images and per-pixel soft labels; any student segmentation model then
learns from real pairs (cross-entropy) and generated pairs (knowledge distillation on the soft labels).
"""

__version__ = "0.1.0.dev0"

from .labels import (
    estimate_balancing_factor,
    logits_to_clean_label,
    logits_to_soft_labels,
    masks_to_scaled_onehot,
)
from .models import JointUNet2DModel, JointUNet2DOutput
from .pipelines import DAKTerPipeline, DAKTerPipelineOutput
from .training import JointDiffusionLossOutput, joint_diffusion_loss


def _register_with_diffusers() -> None:
    """Make `DiffusionPipeline.from_pretrained(dir)` resolve a saved `DAKTerPipeline` to the installed class.

    diffusers looks the `_class_name` of `model_index.json` up in its own namespace; exposing the class there
    (once `dakter_hf` is imported) lets the generic loader return a real `dakter_hf.DAKTerPipeline`.
    """
    import diffusers

    if getattr(diffusers, "DAKTerPipeline", None) is None:
        setattr(diffusers, "DAKTerPipeline", DAKTerPipeline)


_register_with_diffusers()

__all__ = [
    "DAKTerPipeline",
    "DAKTerPipelineOutput",
    "JointUNet2DModel",
    "JointUNet2DOutput",
    "JointDiffusionLossOutput",
    "joint_diffusion_loss",
    "estimate_balancing_factor",
    "logits_to_clean_label",
    "logits_to_soft_labels",
    "masks_to_scaled_onehot",
]
