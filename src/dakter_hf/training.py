"""Training of the joint image + label diffusion (DAKTer's generator).

The library side of `examples/train_joint_diffusion.py`: model-size presets, the balancing factor over a training
split, the loss and one training step, checkpoint helpers, the loss log and the assembly of
the trained [`DAKTerPipeline`].
"""

import argparse
import json
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import BaseOutput

from .labels import estimate_balancing_factor, masks_to_scaled_onehot
from .models.joint_unet_2d import JointUNet2DModel
from .pipelines.pipeline_dakter import DAKTerPipeline


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
) -> JointDiffusionLossOutput:
    r"""
    One evaluation of DAKTer's joint diffusion loss on a batch of real pairs.

    The mask becomes a one-hot label in {-b, +b} (b = `model.config.label_scale`); image and label are noised at
    the same timestep with independent noise; the model predicts the image (x0 or the noise, per
    `model.config.prediction_type`) and the label logits. The loss is the image MSE plus `ce_weight` times the
    cross-entropy of the logits against the mask.

    Args:
        model ([`JointUNet2DModel`]): the joint denoiser (possibly wrapped by Accelerate / DDP).
        noise_scheduler ([`SchedulerMixin`]): provides `add_noise` and `config.num_train_timesteps`.
        images (`torch.Tensor`): clean images `(B, C, H, W)` normalised to [-1, 1].
        masks (`torch.Tensor`): class indices `(B, H, W)`.
        ce_weight (`float`, *optional*, defaults to 1.0): weight of the label cross-entropy.
        generator (`torch.Generator`, *optional*): source of timesteps and noise, for reproducible training.
        timesteps (`torch.Tensor`, *optional*): timesteps `(B,)`; drawn uniformly when not given.

    Returns:
        [`JointDiffusionLossOutput`]
    """
    config = model.module.config if hasattr(model, "module") else model.config
    if images.dim() != 4 or masks.dim() != 3 or images.shape[0] != masks.shape[0] \
            or images.shape[2:] != masks.shape[1:]:
        raise ValueError(
            f"`images` (B, C, H, W) and `masks` (B, H, W) must match, got {tuple(images.shape)} and "
            f"{tuple(masks.shape)}."
        )
    batch_size, device = images.shape[0], images.device
    clean_labels = masks_to_scaled_onehot(masks, config.num_classes, config.label_scale).to(images)
    if timesteps is None:
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,),
                                  generator=generator, device=generator.device if generator else device).to(device)
    noise_kwargs = dict(generator=generator, device=generator.device if generator else device)
    image_noise = torch.randn(images.shape, **noise_kwargs).to(images)
    label_noise = torch.randn(clean_labels.shape, **noise_kwargs).to(images)
    noisy_images = noise_scheduler.add_noise(images, image_noise, timesteps)
    noisy_labels = noise_scheduler.add_noise(clean_labels, label_noise, timesteps)

    prediction = model(noisy_images, noisy_labels, timesteps)
    target = images if config.prediction_type == "sample" else image_noise
    image_loss = F.mse_loss(prediction.image.float(), target.float())
    label_loss = F.cross_entropy(prediction.label_logits.float(), masks.long())
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
    from .data.transforms import dataset_to_tensors

    images, _ = dataset_to_tensors(train_dataset, resolution)
    return estimate_balancing_factor(images)


# ----------------------------------------------------------------------------------------------------------------------
# Reproducible randomness
# ----------------------------------------------------------------------------------------------------------------------


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: torch.Generator | None = None,
    crop_size: int | None = None,
    dihedral: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Per-sample random crop and/or random symmetry of a training batch, drawn from `generator`.

    Augmenting in the training step (instead of in the data loader) keeps every random draw on the step's own
    generator ([`~dakter_hf.seeding.step_generator`]), so resuming is exact.

    Args:
        images (`torch.Tensor`): `(B, C, H, W)` images.
        masks (`torch.Tensor`): `(B, H, W)` masks.
        generator (`torch.Generator`, *optional*): source of randomness.
        crop_size (`int`, *optional*): side of a random square crop per sample (patch-wise training).
        dihedral (`bool`, *optional*, defaults to `False`): apply one of the 8 symmetries of the square per sample
            ([`~dakter_hf.data.transforms.random_dihedral`]).

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the augmented images and masks.
    """
    from .data.transforms import random_dihedral

    if crop_size is None and not dihedral:
        return images, masks
    height, width = images.shape[-2:]
    if crop_size is not None and (crop_size > height or crop_size > width):
        raise ValueError(f"`crop_size`={crop_size} is larger than the training images ({height}x{width}).")
    out_images, out_masks = [], []
    for image, mask in zip(images, masks):
        if crop_size is not None:
            top = int(torch.randint(0, height - crop_size + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop_size + 1, (1,), generator=generator))
            image = image[:, top : top + crop_size, left : left + crop_size]
            mask = mask[top : top + crop_size, left : left + crop_size]
        if dihedral:
            image, mask = random_dihedral(image, mask, generator, allow_rot90=image.shape[-1] == image.shape[-2])
        out_images.append(image)
        out_masks.append(mask)
    return torch.stack(out_images), torch.stack(out_masks)


# ----------------------------------------------------------------------------------------------------------------------
# Data, scheduler, step
# ----------------------------------------------------------------------------------------------------------------------


def build_train_dataloader(
    train_dataset, resolution: int, batch_size: int, num_workers: int = 0
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
    """
    from .data.transforms import build_transform, collate_fn

    dataset = train_dataset.with_transform(build_transform(resolution, augment=False))
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
) -> dict[str, float]:
    """
    One (micro-)batch of joint diffusion training under `accelerator.accumulate`.

    Augments the batch ([`augment_batch`]), evaluates [`joint_diffusion_loss`], back-propagates, clips gradients when
    they are synchronised, and steps the optimizer and learning-rate scheduler.

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

    Returns:
        `dict[str, float]`: `loss`, `image_loss` and `label_loss`, averaged over processes.
    """
    images, masks = augment_batch(batch["pixel_values"], batch["labels"], generator, crop_size, augment)
    with accelerator.accumulate(model):
        output = joint_diffusion_loss(model, noise_scheduler, images, masks, ce_weight=ce_weight, generator=generator)
        accelerator.backward(output.loss)
        if accelerator.sync_gradients and max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    losses = torch.stack([output.loss.detach(), output.image_loss.detach(), output.label_loss.detach()])
    losses = accelerator.reduce(losses, reduction="mean")
    return dict(zip(("loss", "image_loss", "label_loss"), (float(v) for v in losses)))


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------

CHECKPOINT_PREFIX = "checkpoint-"


def list_checkpoints(output_dir: str | os.PathLike) -> list[str]:
    """The `checkpoint-<step>` directories of `output_dir`, oldest (lowest step) first."""
    if not os.path.isdir(output_dir):
        return []
    names = [n for n in os.listdir(output_dir) if re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", n)
             and os.path.isdir(os.path.join(output_dir, n))]
    return [os.path.join(output_dir, n) for n in sorted(names, key=checkpoint_step)]


def checkpoint_step(path: str | os.PathLike) -> int:
    """The global step of a `checkpoint-<step>` directory."""
    match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", os.path.basename(os.path.normpath(path)))
    if match is None:
        raise ValueError(f"{path!r} is not named '{CHECKPOINT_PREFIX}<step>'.")
    return int(match.group(1))


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int | None, room_for: int = 1) -> list[str]:
    """
    Delete the oldest checkpoints so that at most `total_limit - room_for` remain (room for the next save).

    Args:
        output_dir (`str`): the directory holding `checkpoint-<step>` folders.
        total_limit (`int`, *optional*): maximum number of checkpoints to keep; `None` keeps all.
        room_for (`int`, *optional*, defaults to 1): checkpoints about to be written.

    Returns:
        `list[str]`: the removed directories.
    """
    if total_limit is None:
        return []
    if total_limit < 1:
        raise ValueError(f"`checkpoints_total_limit` must be >= 1, got {total_limit}.")
    checkpoints = list_checkpoints(output_dir)
    excess = len(checkpoints) - (total_limit - room_for)
    removed = checkpoints[: max(excess, 0)]
    for path in removed:
        shutil.rmtree(path)
    return removed


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | None) -> str | None:
    """
    The checkpoint directory to resume from, or `None` to start afresh.

    Args:
        output_dir (`str`): the run's output directory.
        resume_from_checkpoint (`str`, *optional*): `"latest"` (the newest `checkpoint-<step>` of `output_dir`, or
            `None` when there is none), a path, or the name of a checkpoint inside `output_dir`.

    Raises:
        `FileNotFoundError`: when an explicit checkpoint does not exist.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    for candidate in (resume_from_checkpoint, os.path.join(output_dir, resume_from_checkpoint)):
        if os.path.isdir(candidate):
            checkpoint_step(candidate)  # validates the name
            return candidate
    raise FileNotFoundError(
        f"--resume_from_checkpoint {resume_from_checkpoint!r} does not exist (neither as a path nor inside "
        f"{str(output_dir)!r}); use 'latest' or an existing '{CHECKPOINT_PREFIX}<step>' directory."
    )


# ----------------------------------------------------------------------------------------------------------------------
# Loss log
# ----------------------------------------------------------------------------------------------------------------------


class JsonlLossLog:
    """
    A JSON-lines log of training losses, one record per optimisation step (`{"step": ..., "loss": ..., ...}`).

    `JsonlLossLog(path)` only reads and appends: it never changes the records already there, so a finished run's log
    can be read (`history`, `final_means`) safely. A training run starts its log with [`JsonlLossLog.start`].

    Args:
        path (`str`): the log file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)

    @classmethod
    def start(cls, path: str | os.PathLike, resume_step: int | None = None) -> "JsonlLossLog":
        """
        The log of a training run: emptied for a new run (`resume_step=None`); when resuming from the checkpoint of
        step `resume_step`, its records up to that step are kept and later ones (from an interrupted run that went
        further than the checkpoint) are dropped, so that the log matches the resumed run. Rewritten atomically.
        """
        log = cls(path)
        kept = [r for r in log.read() if r["step"] <= resume_step] if resume_step is not None else []
        os.makedirs(os.path.dirname(log.path) or ".", exist_ok=True)
        tmp = log.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(record) + "\n" for record in kept)
        os.replace(tmp, log.path)
        return log

    def read(self) -> list[dict[str, Any]]:
        """All records in the log."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def append(self, step: int, **values: float) -> None:
        """Append one record."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), **values}) + "\n")

    def history(
        self, names: Sequence[str] = ("image_loss", "label_loss", "loss")
    ) -> dict[str, list[tuple[int, float]]]:
        """The logged curves, `{name: [(step, value), ...]}` (the format of `save_learning_curves`)."""
        records = self.read()
        return {name: [(r["step"], r[name]) for r in records if name in r] for name in names}

    def final_means(self, last: int = 50, names: Sequence[str] = ("loss", "image_loss", "label_loss")) -> dict:
        """Means of each loss over the last `last` logged steps (and how many steps were averaged)."""
        records = self.read()[-last:]
        if not records:
            return {}
        means = {name: sum(r[name] for r in records) / len(records) for name in names}
        return {**means, "num_steps_averaged": len(records)}


# ----------------------------------------------------------------------------------------------------------------------
# Pipeline assembly
# ----------------------------------------------------------------------------------------------------------------------


@contextmanager
def ema_weights(model: torch.nn.Module, ema_model: EMAModel | None):
    """Temporarily load the EMA weights into `model` (no-op without `ema_model`)."""
    if ema_model is None:
        yield model
        return
    ema_model.store(model.parameters())
    ema_model.copy_to(model.parameters())
    try:
        yield model
    finally:
        ema_model.restore(model.parameters())


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
    from .visualization import save_sample_grid

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
