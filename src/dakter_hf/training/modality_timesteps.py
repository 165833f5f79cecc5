"""Per-modality timesteps in training (UniDiffuser-style): how `(t_image, t_label)` pairs are drawn, and their loss.

For a [`JointUNet2DModel`] built with `per_modality_timesteps=True`. Each training sample falls in one of four
cases: a clean image (the model learns p(label | image)), a clean label (p(image | label)), independent timesteps,
or one shared timestep as in joint training. A clean modality is fed unnoised at timestep 0, which is exactly what the
conditional pipelines feed at sampling time, and it has no loss term (there is nothing to denoise).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ModalityTimestepSampling:
    """
    The case probabilities of per-modality timesteps; the remaining probability, [`joint`], is a shared timestep.

    Args:
        clean_image (`float`, *optional*, defaults to 0.25): probability of a clean image (teaches segmentation).
        clean_label (`float`, *optional*, defaults to 0.25): probability of a clean label (teaches mask -> image).
        independent (`float`, *optional*, defaults to 0.0): probability of two independent timesteps.
    """

    clean_image: float = 0.25
    clean_label: float = 0.25
    independent: float = 0.0

    def __post_init__(self):
        for name in ("clean_image", "clean_label", "independent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"`{name}` must be a probability in [0, 1], got {value!r}.")
        if self.clean_image + self.clean_label + self.independent > 1 + 1e-9:
            raise ValueError(
                f"`clean_image` + `clean_label` + `independent` must not exceed 1 (the rest is joint), got "
                f"{self.clean_image} + {self.clean_label} + {self.independent}."
            )

    @property
    def joint(self) -> float:
        """The probability of one shared timestep."""
        return max(0.0, 1.0 - self.clean_image - self.clean_label - self.independent)


@dataclass
class ModalityTimesteps:
    """
    A batch's per-modality timesteps, drawn by [`draw_modality_timesteps`].

    Args:
        image (`torch.Tensor`): `(B,)` image timesteps (0 where the image is clean).
        label (`torch.Tensor`): `(B,)` label timesteps (0 where the label is clean).
        image_clean (`torch.Tensor`): `(B,)` booleans, the image is fed clean.
        label_clean (`torch.Tensor`): `(B,)` booleans, the label is fed clean.
    """

    image: torch.Tensor
    label: torch.Tensor
    image_clean: torch.Tensor
    label_clean: torch.Tensor


def draw_modality_timesteps(
    sampling: ModalityTimestepSampling,
    timesteps: torch.Tensor,
    num_train_timesteps: int,
    generator: torch.Generator | None = None,
) -> ModalityTimesteps:
    """
    Turn shared timesteps `(B,)` into per-modality ones following `sampling` (one case per sample).

    Args:
        sampling ([`ModalityTimestepSampling`]): the case probabilities.
        timesteps (`torch.Tensor`): `(B,)` timesteps drawn uniformly; kept where a modality is noised (the image's
            timestep in the independent case).
        num_train_timesteps (`int`): the range of the independent label timesteps.
        generator (`torch.Generator`, *optional*): source of the cases and of the independent timesteps.
    """
    batch_size, device = timesteps.shape[0], timesteps.device
    draw_device = generator.device if generator is not None else device
    u = torch.rand(batch_size, generator=generator, device=draw_device).to(device)
    other = torch.randint(0, num_train_timesteps, (batch_size,), generator=generator, device=draw_device).to(device)
    image_clean = u < sampling.clean_image
    label_clean = (u >= sampling.clean_image) & (u < sampling.clean_image + sampling.clean_label)
    upper = sampling.clean_image + sampling.clean_label + sampling.independent
    independent = (u >= sampling.clean_image + sampling.clean_label) & (u < upper)
    zero = torch.zeros_like(timesteps)
    label_t = torch.where(independent, other.to(timesteps.dtype), timesteps)
    return ModalityTimesteps(image=torch.where(image_clean, zero, timesteps),
                             label=torch.where(label_clean, zero, label_t),
                             image_clean=image_clean, label_clean=label_clean)


def modality_timestep_losses(model, noise_scheduler, sampling: ModalityTimestepSampling, images, clean_labels, masks,
                             image_noise, label_noise, image_target, timesteps, generator=None):
    """
    The image and label loss terms of one batch with per-modality timesteps (used by `joint_diffusion_loss`).

    The cases are drawn after the shared `timesteps` and the noise, from the same `generator`. Each term is averaged
    over the samples whose modality is noised (a term with no such sample is 0, still part of the graph).

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the image MSE (against `image_target`) and the label cross-entropy.
    """
    drawn = draw_modality_timesteps(sampling, timesteps, noise_scheduler.config.num_train_timesteps, generator)
    noisy_images = torch.where(drawn.image_clean[:, None, None, None], images,
                               noise_scheduler.add_noise(images, image_noise, drawn.image))
    noisy_labels = torch.where(drawn.label_clean[:, None, None, None], clean_labels,
                               noise_scheduler.add_noise(clean_labels, label_noise, drawn.label))
    prediction = model(noisy_images, noisy_labels, drawn.image, label_timestep=drawn.label)
    per_image = F.mse_loss(prediction.image.float(), image_target.float(), reduction="none").mean(dim=(1, 2, 3))
    label_target = masks.float() if masks.dim() == 4 else masks.long()  # class fractions: a soft-target CE
    per_label = F.cross_entropy(prediction.label_logits.float(), label_target, reduction="none").mean(dim=(1, 2))
    return _masked_mean(per_image, ~drawn.image_clean), _masked_mean(per_label, ~drawn.label_clean)


def _masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    weights = keep.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)
