"""dakter_hf: DAKTer for the Hugging Face ecosystem.

One diffusion model jointly generates SAR images and per-pixel soft labels; any student segmentation model then
learns from real pairs (cross-entropy) and generated pairs (knowledge distillation on the soft labels). The same
model also draws images for given masks and segments given images.

Where each concept lives: `labels` (label codec, balancing factor), `models` (`JointUNet2DModel`), `pipelines`
(`DAKTerPipeline`, `DAKTerMaskToImagePipeline`, `DAKTerSegmentationPipeline`), `training` (generator loss and
training step), `data` (datasets and transforms), `generation` (generated datasets), `distill` (students and
distillation), `metrics`, `visualization`, `hub`.
"""

import importlib


__version__ = "0.1.0.dev0"

from .labels import (
    decode_soft_labels,
    encode_soft_labels,
    estimate_balancing_factor,
    logits_to_clean_label,
    logits_to_soft_labels,
    masks_to_scaled_onehot,
)
from .models import JointUNet2DModel, JointUNet2DOutput
from .pipelines import (
    DAKTerMaskToImagePipeline,
    DAKTerMaskToImagePipelineOutput,
    DAKTerPipeline,
    DAKTerPipelineOutput,
    DAKTerSegmentationPipeline,
    DAKTerSegmentationPipelineOutput,
)


# Public names of the modules that import `datasets`, `transformers` or `matplotlib`: loaded on first use, so that
# `import dakter_hf` stays as light as diffusers itself.
_LAZY_EXPORTS = {
    "data": ["get_id2label", "load_dataset_by_name", "load_mask_folder", "load_osd", "load_sos",
             "simulate_sar_scenes"],
    "generation": ["GenerationOutput", "SoftLabelCalibration", "fit_soft_label_temperature", "generate_dataset",
                   "generate_mask_conditioned_to_disk", "generate_to_disk", "measure_generator_quality",
                   "save_soft_label_temperature"],
    "distill": ["create_image_processor", "create_student", "distillation_loss"],
    "metrics": ["CalibrationMetrics", "SegmentationMetrics", "compute_segmentation_metrics"],
    "training": ["JOINT_UNET_PRESETS", "JointDiffusionLossOutput", "joint_diffusion_loss", "joint_unet_config"],
}
_LAZY_NAME_TO_MODULE = {name: module for module, names in _LAZY_EXPORTS.items() for name in names}


def __getattr__(name):
    module_name = _LAZY_NAME_TO_MODULE.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_NAME_TO_MODULE))


def _register_with_diffusers() -> None:
    """Make `DiffusionPipeline.from_pretrained(dir)` resolve a saved DAKTer pipeline to the installed class.

    diffusers looks the `_class_name` of `model_index.json` up in its own namespace; exposing the classes there
    (once `dakter_hf` is imported) lets the generic loader return a real `dakter_hf.DAKTerPipeline` (or one of the
    conditional pipelines, when one was saved).
    """
    import diffusers

    for pipeline_class in (DAKTerPipeline, DAKTerMaskToImagePipeline, DAKTerSegmentationPipeline):
        if getattr(diffusers, pipeline_class.__name__, None) is None:
            setattr(diffusers, pipeline_class.__name__, pipeline_class)


_register_with_diffusers()

__all__ = [
    "DAKTerMaskToImagePipeline",
    "DAKTerMaskToImagePipelineOutput",
    "DAKTerPipeline",
    "DAKTerPipelineOutput",
    "DAKTerSegmentationPipeline",
    "DAKTerSegmentationPipelineOutput",
    "JOINT_UNET_PRESETS",
    "JointDiffusionLossOutput",
    "JointUNet2DModel",
    "JointUNet2DOutput",
    "decode_soft_labels",
    "encode_soft_labels",
    "estimate_balancing_factor",
    "joint_diffusion_loss",
    "joint_unet_config",
    "logits_to_clean_label",
    "logits_to_soft_labels",
    "masks_to_scaled_onehot",
    *_LAZY_NAME_TO_MODULE,
]
