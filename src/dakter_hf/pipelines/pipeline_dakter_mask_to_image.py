"""`DAKTerMaskToImagePipeline`: segmentation masks -> SAR images drawn for them, with a joint DAKTer model."""

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..labels import logits_to_soft_labels, soft_labels_to_scaled_label
from ..models.joint_unet_2d import JointUNet2DModel
from .conditional_sampling import ConditionalSamplingMixin
from .inputs import prepare_masks
from .pipeline_mixin import DAKTerPipelineMixin


@dataclass
class DAKTerMaskToImagePipelineOutput(BaseOutput):
    """
    Output of [`DAKTerMaskToImagePipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            Images in [0, 1] drawn for the masks: PIL images (`"pil"`), `(B, H, W, C)` floats (`"np"`) or
            `(B, C, H, W)` floats (`"pt"`); `B` = number of masks x `num_images_per_mask`, the images of one mask
            next to each other.
        soft_labels (`np.ndarray` or `torch.Tensor`):
            The model's own per-pixel class probabilities at the last step, `(B, H, W, K)` (`"np"`, `"pil"`) or
            `(B, K, H, W)` (`"pt"`): how the model reads the mask it was given.
        labels (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The argmax of the soft labels, `(B, H, W)` integers, or PIL masks of class indices (`"pil"`).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    soft_labels: np.ndarray | torch.Tensor
    labels: list[PIL.Image.Image] | np.ndarray | torch.Tensor


class DAKTerMaskToImagePipeline(ConditionalSamplingMixin, DAKTerPipelineMixin, DiffusionPipeline):
    r"""
    Pipeline drawing SAR images for given segmentation masks, p(image | label), from a joint DAKTer model.

    The masks are the known modality: with every checkpoint they are imposed by replacement (optionally with
    RePaint resampling); a model trained with per-modality timesteps takes them clean at timestep 0 and samples the
    exact conditional (`conditioning`; see `dakter_hf.pipelines.conditional_sampling`). Any discrete diffusers
    scheduler works. It loads any saved DAKTer checkpoint (`from_pretrained`) or shares the components of a loaded
    pipeline (`DAKTerMaskToImagePipeline.from_pipe(pipe)`).

    Parameters:
        unet ([`JointUNet2DModel`]): the joint image + label denoiser.
        scheduler ([`SchedulerMixin`]): a scheduler to step the denoised state.
        id2label (`dict[int, str]`, *optional*): the names of the `unet.config.num_classes` label classes.
        soft_label_temperature (`float`, *optional*): the default softmax temperature of the soft labels, saved in
            `model_index.json` (1.0 when absent).
    """

    def __init__(
        self,
        unet: JointUNet2DModel,
        scheduler: SchedulerMixin,
        id2label: dict[int, str] | dict[str, str] | None = None,
        soft_label_temperature: float | None = None,
    ):
        super().__init__()
        self.register_dakter(unet, scheduler, id2label, soft_label_temperature)

    @torch.no_grad()
    def __call__(
        self,
        masks,
        num_images_per_mask: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 50,
        conditioning: str = "auto",
        jump_length: int = 10,
        jump_n_sample: int = 1,
        soft_label_temperature: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        eta: float = 0.0,
    ) -> DAKTerMaskToImagePipelineOutput | tuple:
        r"""
        Draw images for masks.

        Args:
            masks: PIL masks of class indices, `(H, W)` / `(B, H, W)` integer arrays or tensors of class indices,
                `(K, H, W)` / `(B, K, H, W)` float arrays or tensors of per-class probabilities (summing to 1), a
                list of such items, or paths of mask files. Resized to the model's sample size (nearest for class
                indices, bilinear for probabilities).
            num_images_per_mask (`int`, *optional*, defaults to 1): images drawn per mask.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): random generator(s); with a list of
                one generator per image (masks x `num_images_per_mask`), image i depends only on generator i.
            num_inference_steps (`int`, *optional*, defaults to 50): scheduler steps.
            conditioning (`str`, *optional*, defaults to `"auto"`): `"exact"` (models with per-modality timesteps),
                `"replacement"` (any model) or `"auto"` (exact when the model allows it).
            jump_length (`int`, *optional*, defaults to 10): RePaint resampling: steps between jumps back.
            jump_n_sample (`int`, *optional*, defaults to 1): RePaint resampling: times each stretch of
                `jump_length` steps is run (1 = no resampling; replacement only).
            soft_label_temperature (`float`, *optional*): softmax temperature of the soft labels; defaults to the
                pipeline's stored default (1.0 when none is stored).
            output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`.
            return_dict (`bool`, *optional*, defaults to `True`): return an output dataclass or a tuple.
            eta (`float`, *optional*, defaults to 0.0): DDIM's eta, for schedulers that accept it.

        Example:

        ```py
        >>> import numpy as np
        >>> from dakter_hf import DAKTerMaskToImagePipeline

        >>> pipe = DAKTerMaskToImagePipeline.from_pretrained("path/or/hub-id")
        >>> masks = np.zeros((2, 64, 64), dtype=np.int64)
        >>> masks[:, 20:40, 10:50] = 1  # an oil slick
        >>> out = pipe(masks=masks, num_images_per_mask=2, num_inference_steps=20, output_type="np")
        >>> out.images.shape  # (4, 64, 64, 1)
        ```

        Returns:
            [`DAKTerMaskToImagePipelineOutput`] or `tuple`: `(images, soft_labels, labels)`.
        """
        if isinstance(num_images_per_mask, bool) or not isinstance(num_images_per_mask, int) \
                or num_images_per_mask < 1:
            raise ValueError(f"`num_images_per_mask` must be a positive integer, got {num_images_per_mask!r}.")
        probabilities = prepare_masks(masks, self.unet.config.num_classes, self.sample_shape)
        probabilities = probabilities.repeat_interleave(num_images_per_mask, dim=0)
        soft_label_temperature = self.soft_label_temperature_or_default(soft_label_temperature)
        self.check_common_inputs(probabilities.shape[0], generator, num_inference_steps, soft_label_temperature,
                                 output_type, eta)
        mode = self.resolve_conditioning(conditioning, jump_length, jump_n_sample)

        known = soft_labels_to_scaled_label(probabilities, self.unet.config.label_scale)
        sample = self.sample_conditionally(known, "label", mode, num_inference_steps, generator=generator, eta=eta,
                                           jump_length=jump_length, jump_n_sample=jump_n_sample)
        soft_labels = logits_to_soft_labels(sample.label_logits, soft_label_temperature)
        images, soft_labels, labels = self.format_outputs(output_type, self.state_to_images(sample.image),
                                                          soft_labels, soft_labels.argmax(dim=1))

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, soft_labels, labels)
        return DAKTerMaskToImagePipelineOutput(images=images, soft_labels=soft_labels, labels=labels)
