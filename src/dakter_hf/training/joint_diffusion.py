"""DAKTer's generator: the joint image + label diffusion, from a training split to a saved pipeline.

Model-size presets and the `JointUNet2DModel` config, the balancing factor over a training split, the loss and one
training step (with its augmentation), the training data loader and noise scheduler, and the assembly of the trained
[`DAKTerPipeline`] with its validation grid. The Accelerate loop that uses them is `dakter_hf.training.trainer`.
"""

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.utils import BaseOutput

from ..data import augment_batch, build_transform, collate_fn, dataset_to_tensors
from ..labels import estimate_balancing_factor, masks_to_scaled_onehot
from ..models.joint_unet_2d import JointUNet2DModel
from ..pipelines.pipeline_dakter import DAKTerPipeline
from ..visualization import save_sample_grid
from .modality_timesteps import ModalityTimestepSampling, modality_timestep_losses
from .runs import backward_and_step


@dataclass
class JointDiffusionLossOutput(BaseOutput):
    """
    Output of [`joint_diffusion_loss`].

    Args:
        loss (`torch.Tensor`): the total loss, `image_loss + ce_weight * label_loss`.
        image_loss (`torch.Tensor`): mean squared error of the image prediction (x0 or noise, per the model config).
        label_loss (`torch.Tensor`): cross-entropy of the label logits against the clean mask.
    """

    loss: torch.Tensor
    image_loss: torch.Tensor
    label_loss: torch.Tensor


def joint_diffusion_loss(
    model,
    noise_scheduler,
    images: torch.Tensor,
    masks: torch.Tensor,
    ce_weight: float = 1.0,
    generator: torch.Generator | None = None,
    timesteps: torch.Tensor | None = None,
    timestep_sampling: ModalityTimestepSampling | None = None,
) -> JointDiffusionLossOutput:
    r"""
    One evaluation of DAKTer's joint diffusion loss on a batch of real pairs.

    The mask becomes a one-hot label in {-b, +b} (b = `model.config.label_scale`); image and label are noised at
    the same timestep with independent noise; the model predicts the image (x0 or the noise, per
    `model.config.prediction_type`) and the label logits. The loss is the image MSE plus `ce_weight` times the
    cross-entropy of the logits against the mask. Class fractions `q` instead of indices (a mask area-averaged to
    the training size keeps its boundary uncertainty) give the clean label `b * (2q - 1)` and a soft-target CE.
    `timestep_sampling`: see [`modality_timestep_losses`].

    Args:
        model ([`JointUNet2DModel`]): the joint denoiser (possibly wrapped by Accelerate / DDP).
        noise_scheduler ([`SchedulerMixin`]): provides `add_noise` and `config.num_train_timesteps`.
        images (`torch.Tensor`): clean images `(B, C, H, W)` normalised to [-1, 1].
        masks (`torch.Tensor`): class indices `(B, H, W)`, or class fractions `(B, K, H, W)` summing to 1 per pixel.
        ce_weight (`float`, *optional*, defaults to 1.0): weight of the label cross-entropy.
        generator (`torch.Generator`, *optional*): source of timesteps and noise, for reproducible training.
        timesteps (`torch.Tensor`, *optional*): timesteps `(B,)`; drawn uniformly when not given.
        timestep_sampling ([`ModalityTimestepSampling`], *optional*): per-modality timesteps (`None`: joint training).

    Returns:
        [`JointDiffusionLossOutput`]
    """
    config = model.module.config if hasattr(model, "module") else model.config
    fractions = masks.dim() == 4
    if images.dim() != 4 or masks.dim() != 3 + fractions or images.shape[0] != masks.shape[0] \
            or images.shape[2:] != masks.shape[-2:] or fractions and masks.shape[1] != config.num_classes:
        raise ValueError(
            f"`images` (B, C, H, W) and `masks` (B, H, W) or (B, K={config.num_classes}, H, W) must match, got "
            f"{tuple(images.shape)} and {tuple(masks.shape)}."
        )
    batch_size, device = images.shape[0], images.device
    if fractions:
        clean_labels = (config.label_scale * (2.0 * masks - 1.0)).to(images)
    else:
        clean_labels = masks_to_scaled_onehot(masks, config.num_classes, config.label_scale).to(images)
    if timesteps is None:
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,),
                                  generator=generator, device=generator.device if generator else device).to(device)
    noise_kwargs = dict(generator=generator, device=generator.device if generator else device)
    image_noise = torch.randn(images.shape, **noise_kwargs).to(images)
    label_noise = torch.randn(clean_labels.shape, **noise_kwargs).to(images)
    target = images if config.prediction_type == "sample" else image_noise
    if timestep_sampling is not None:
        image_loss, label_loss = modality_timestep_losses(model, noise_scheduler, timestep_sampling, images,
                                                          clean_labels, masks, image_noise, label_noise, target,
                                                          timesteps, generator)
    else:
        noisy_images = noise_scheduler.add_noise(images, image_noise, timesteps)
        noisy_labels = noise_scheduler.add_noise(clean_labels, label_noise, timesteps)
        prediction = model(noisy_images, noisy_labels, timesteps)
        image_loss = F.mse_loss(prediction.image.float(), target.float())
        label_loss = F.cross_entropy(prediction.label_logits.float(), masks.float() if fractions else masks.long())
    return JointDiffusionLossOutput(loss=image_loss + ce_weight * label_loss, image_loss=image_loss,
                                    label_loss=label_loss)


# ----------------------------------------------------------------------------------------------------------------------
# Model-size presets
# ----------------------------------------------------------------------------------------------------------------------

JOINT_UNET_PRESETS: dict[str, dict] = {
    # For tests: two levels, one ResNet per level, no attention in the encoder/decoder levels.
    "tiny": dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, attention_levels=0,
                 attention_head_dim=8),
    # CPU-friendly at 64x64: about 2.3M parameters ("dual") / 1.1M ("concat"), attention at the lowest level.
    "small": dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16, attention_levels=1,
                  attention_head_dim=8),
    # The default `JointUNet2DModel` layout: about 38M parameters ("dual") / 19M ("concat").
    "base": dict(block_out_channels=(64, 128, 128, 256), layers_per_block=2, norm_num_groups=32, attention_levels=2,
                 attention_head_dim=8),
}
"""Model-size presets of [`JointUNet2DModel`]; `attention_levels` counts the lowest-resolution levels with attention."""


def joint_unet_config(
    model_size: str = "small",
    *,
    resolution: int,
    num_classes: int,
    label_scale: float,
    architecture: str = "dual",
    prediction_type: str = "sample",
    image_channels: int = 1,
    block_out_channels: Sequence[int] | None = None,
    per_modality_timesteps: bool = False,
) -> dict[str, Any]:
    """
    The `JointUNet2DModel` config of a model-size preset.

    Args:
        model_size (`str`, *optional*, defaults to `"small"`): a key of [`JOINT_UNET_PRESETS`].
        resolution (`int`): `sample_size` of the model (the size generated by the pipeline).
        num_classes (`int`): number of label classes K.
        label_scale (`float`): the balancing factor b.
        architecture (`str`, *optional*, defaults to `"dual"`): `"dual"` or `"concat"`.
        prediction_type (`str`, *optional*, defaults to `"sample"`): `"sample"` or `"epsilon"`.
        image_channels (`int`, *optional*, defaults to 1): image channels.
        block_out_channels (`Sequence[int]`, *optional*): overrides the preset's channels (and number of levels);
            the preset's number of attention levels is kept (capped at the number of levels).
        per_modality_timesteps (`bool`, *optional*, defaults to `False`): separate image and label timesteps.

    Returns:
        `dict`: keyword arguments of [`JointUNet2DModel`].
    """
    if model_size not in JOINT_UNET_PRESETS:
        raise ValueError(f"`model_size` must be one of {list(JOINT_UNET_PRESETS)}, got {model_size!r}.")
    preset = dict(JOINT_UNET_PRESETS[model_size])
    channels = tuple(int(c) for c in (block_out_channels or preset["block_out_channels"]))
    if not channels or any(c < 1 for c in channels):
        raise ValueError(f"`block_out_channels` must be positive integers, got {block_out_channels}.")
    num_levels = len(channels)
    attention_levels = min(preset["attention_levels"], num_levels)
    with_attention = [level >= num_levels - attention_levels for level in range(num_levels)]
    return dict(
        sample_size=int(resolution),
        image_channels=image_channels,
        num_classes=int(num_classes),
        label_scale=float(label_scale),
        architecture=architecture,
        prediction_type=prediction_type,
        block_out_channels=channels,
        layers_per_block=preset["layers_per_block"],
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in with_attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(with_attention)),
        attention_head_dim=preset["attention_head_dim"],
        norm_num_groups=preset["norm_num_groups"],
        per_modality_timesteps=bool(per_modality_timesteps),
    )


def downsampling_factor(num_levels: int) -> int:
    """Total down-sampling factor of a UNet with `num_levels` resolution levels: `2 ** (num_levels - 1)`."""
    return 2 ** (num_levels - 1)


def check_training_resolution(resolution: int, num_levels: int, name: str = "--resolution") -> None:
    """Raise a `ValueError` naming `name` unless `resolution` is a positive multiple of the UNet's down-sampling."""
    factor = downsampling_factor(num_levels)
    if resolution < 1 or resolution % factor:
        raise ValueError(
            f"{name}={resolution} must be a positive multiple of {factor}, the total down-sampling factor of a UNet "
            f"with {num_levels} resolution levels."
        )


def parse_label_scale(value: str | float) -> str | float:
    """Parse a `--label_scale` value: `"auto"` or a positive float (usable as an argparse `type`)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"--label_scale must be 'auto' or a positive float, got {value!r}.")
    if not (scale > 0 and math.isfinite(scale)):
        raise argparse.ArgumentTypeError(f"--label_scale must be 'auto' or a positive float, got {value!r}.")
    return scale


def estimate_label_scale(train_dataset, resolution: int) -> float:
    """
    The balancing factor b estimated over an entire training split.

    The images go through the training resize and normalisation to [-1, 1], without random augmentation (see
    [`~dakter_hf.data.transforms.dataset_to_tensors`]), then [`estimate_balancing_factor`] takes their RMS.

    Args:
        train_dataset (`datasets.Dataset`): the training split, with `image` and `mask` columns.
        resolution (`int`): the training resolution.

    Returns:
        `float`: the balancing factor b.
    """
    images, _ = dataset_to_tensors(train_dataset, resolution)
    return estimate_balancing_factor(images)


# ----------------------------------------------------------------------------------------------------------------------
# Data, scheduler, step
# ----------------------------------------------------------------------------------------------------------------------


def build_train_dataloader(
    train_dataset, resolution: int, batch_size: int, num_workers: int = 0, label_fractions_classes: int | None = None
) -> torch.utils.data.DataLoader:
    """
    A shuffling `DataLoader` of `{"pixel_values", "labels"}` batches at the training resolution, without augmentation.

    Random augmentation is applied in the training step ([`augment_batch`]) from a per-step generator. The data
    order is made reproducible by Accelerate's seedable sampler (`DataLoaderConfiguration(use_seedable_sampler=True)`).

    Args:
        train_dataset (`datasets.Dataset`): rows with `image` and `mask` columns.
        resolution (`int`): training resolution.
        batch_size (`int`): batch size per process.
        num_workers (`int`, *optional*, defaults to 0): data loading workers.
        label_fractions_classes (`int`, *optional*): batches also hold `label_fractions` `(B, K, H, W)`, the masks'
            class fractions area-averaged to `resolution` (boundary information needs a native-size `train_dataset`).
    """
    transform = build_transform(resolution, augment=False, num_classes=label_fractions_classes)
    dataset = train_dataset.with_transform(transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_fn,
                                       num_workers=num_workers)


def build_noise_scheduler(num_train_timesteps: int = 1000, prediction_type: str = "sample") -> DDPMScheduler:
    """The DDPM scheduler used for training and saved with the pipeline (its `prediction_type` matches the model's)."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, prediction_type=prediction_type)


def joint_diffusion_training_step(
    accelerator,
    model,
    noise_scheduler,
    optimizer,
    lr_scheduler,
    batch: Mapping[str, torch.Tensor],
    generator: torch.Generator | None = None,
    ce_weight: float = 1.0,
    max_grad_norm: float | None = 1.0,
    crop_size: int | None = None,
    augment: bool = False,
    timestep_sampling: ModalityTimestepSampling | None = None,
) -> dict[str, float]:
    """
    One (micro-)batch of joint diffusion training under `accelerator.accumulate`.

    Augments the batch ([`augment_batch`]), evaluates [`joint_diffusion_loss`], then back-propagates, clips gradients
    when they are synchronised, and steps the optimizer and learning-rate scheduler ([`backward_and_step`]).

    Args:
        accelerator (`accelerate.Accelerator`): the accelerator that prepared `model`, `optimizer`, `lr_scheduler`.
        model ([`JointUNet2DModel`]): the (prepared) joint denoiser.
        noise_scheduler ([`SchedulerMixin`]): the training noise scheduler.
        optimizer (`torch.optim.Optimizer`): the optimizer.
        lr_scheduler: the learning-rate scheduler.
        batch (`Mapping[str, torch.Tensor]`): `pixel_values` `(B, C, H, W)` and `labels` `(B, H, W)`.
        generator (`torch.Generator`, *optional*): source of crops, augmentations, timesteps and noise.
        ce_weight (`float`, *optional*, defaults to 1.0): weight of the label cross-entropy.
        max_grad_norm (`float`, *optional*, defaults to 1.0): gradient clipping norm; `None` disables clipping.
        crop_size (`int`, *optional*): random crop size for patch-wise training.
        augment (`bool`, *optional*, defaults to `False`): random symmetries of the square.
        timestep_sampling ([`ModalityTimestepSampling`], *optional*): per-modality timesteps.

    A batch's `label_fractions` `(B, K, H, W)`, when present, are the label targets instead of its `labels`.

    Returns:
        `dict[str, float]`: `loss`, `image_loss` and `label_loss`, averaged over processes.
    """
    masks = batch["label_fractions"] if "label_fractions" in batch else batch["labels"]
    images, masks = augment_batch(batch["pixel_values"], masks, generator, crop_size, augment)
    with accelerator.accumulate(model):
        output = joint_diffusion_loss(model, noise_scheduler, images, masks, ce_weight=ce_weight, generator=generator,
                                      timestep_sampling=timestep_sampling)
        backward_and_step(accelerator, output.loss, model, optimizer, lr_scheduler, max_grad_norm)
    losses = torch.stack([output.loss.detach(), output.image_loss.detach(), output.label_loss.detach()])
    losses = accelerator.reduce(losses, reduction="mean")
    return dict(zip(("loss", "image_loss", "label_loss"), (float(v) for v in losses)))


# ----------------------------------------------------------------------------------------------------------------------
# Pipeline assembly
# ----------------------------------------------------------------------------------------------------------------------


def assemble_pipeline(
    unet: JointUNet2DModel, noise_scheduler, id2label: Mapping[int, str] | None = None
) -> DAKTerPipeline:
    """
    A [`DAKTerPipeline`] of a trained model, sampling with a DDPM scheduler of the training configuration.

    Args:
        unet ([`JointUNet2DModel`]): the (unwrapped) trained model.
        noise_scheduler ([`SchedulerMixin`]): the training noise scheduler; its `num_train_timesteps` is kept and its
            `prediction_type` is set to the model's.
        id2label (`Mapping[int, str]`, *optional*): the training data's class names, saved with the pipeline (so
            that generated datasets carry them).
    """
    scheduler = DDPMScheduler.from_config(noise_scheduler.config, prediction_type=unet.config.prediction_type)
    pipeline = DAKTerPipeline(unet=unet, scheduler=scheduler, id2label=dict(id2label) if id2label else None)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def save_validation_grid(
    pipeline: DAKTerPipeline,
    path: str | os.PathLike,
    num_samples: int = 8,
    num_inference_steps: int = 50,
    seed: int = 0,
    id2label: dict[int, str] | None = None,
    title: str | None = None,
) -> str:
    """
    Generate `num_samples` pairs with a fixed seed and save a PNG grid (image | soft label | argmax).

    The generator is private to this call, so validation never changes the training's random draws.
    """
    was_training = pipeline.unet.training
    pipeline.unet.eval()
    generator = torch.Generator(device="cpu").manual_seed(seed)
    output = pipeline(batch_size=num_samples, generator=generator, num_inference_steps=num_inference_steps,
                      output_type="pt")
    if was_training:
        pipeline.unet.train()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # The grid draws the argmax of the soft labels itself; generated pairs have no separate hard label.
    save_sample_grid(output.images.cpu(), output.soft_labels.cpu(), None, str(path), id2label=id2label,
                     max_rows=num_samples, title=title)
    return str(path)
