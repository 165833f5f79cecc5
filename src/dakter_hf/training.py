"""Training of the joint image + label diffusion (DAKTer's generator): the loss, and what one training step needs."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffusers.utils import BaseOutput

from .labels import masks_to_scaled_onehot


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
