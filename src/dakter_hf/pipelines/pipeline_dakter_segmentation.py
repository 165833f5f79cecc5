"""`DAKTerSegmentationPipeline`: SAR images -> per-pixel soft labels, with a joint DAKTer model as the segmenter."""

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..labels import logits_to_soft_labels
from ..models.joint_unet_2d import JointUNet2DModel
from .conditional_sampling import ConditionalSamplingMixin
from .inputs import prepare_images, resize_probabilities
from .pipeline_mixin import DAKTerPipelineMixin


@dataclass
class DAKTerSegmentationPipelineOutput(BaseOutput):
    """
    Output of [`DAKTerSegmentationPipeline`], at each input image's own size.

    Args:
        soft_labels (`np.ndarray`, `torch.Tensor` or a list of them):
            Per-pixel class probabilities summing to 1: `(B, H, W, K)` (`"np"`, `"pil"`) or `(B, K, H, W)`
            (`"pt"`); a list of `(H_i, W_i, K)` / `(K, H_i, W_i)` items when the images differ in size.
        labels (`list[PIL.Image.Image]`, `np.ndarray`, `torch.Tensor` or a list of them):
            The argmax of the soft labels, `(B, H, W)` integers (a list of `(H_i, W_i)` items when the images
            differ in size), or PIL masks of class indices (`"pil"`).
    """

    soft_labels: np.ndarray | torch.Tensor | list
    labels: list[PIL.Image.Image] | np.ndarray | torch.Tensor | list


class DAKTerSegmentationPipeline(ConditionalSamplingMixin, DAKTerPipelineMixin, DiffusionPipeline):
    r"""
    Pipeline segmenting SAR images, p(label | image), with a joint DAKTer model.

    The images are the known modality: with every checkpoint they are imposed by replacement (optionally with
    RePaint resampling); a model trained with per-modality timesteps takes them clean at timestep 0 and samples the
    exact conditional (`conditioning`; see `dakter_hf.pipelines.conditional_sampling`). The soft labels are the
    softmax of the last label logits, averaged over `num_samples` stochastic draws. Images of any size are resized to
    the model's sample size and the soft labels resized back. It loads any saved DAKTer checkpoint
    (`from_pretrained`) or shares the components of a loaded pipeline (`DAKTerSegmentationPipeline.from_pipe(pipe)`).

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
        images,
        num_samples: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 50,
        conditioning: str = "auto",
        jump_length: int = 10,
        jump_n_sample: int = 1,
        soft_label_temperature: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        eta: float = 0.0,
    ) -> DAKTerSegmentationPipelineOutput | tuple:
        r"""
        Segment images.

        Args:
            images: PIL images, `(H, W)` / `(H, W, C)` / `(B, H, W, C)` NumPy arrays, `(H, W)` / `(C, H, W)` /
                `(B, C, H, W)` tensors (uint8, or floats in [0, 1]), a list of such items, or paths of image files;
                any size.
            num_samples (`int`, *optional*, defaults to 1): stochastic draws per image whose soft labels are
                averaged.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): random generator(s); with a list of
                one generator per image, image i's result depends only on generator i.
            num_inference_steps (`int`, *optional*, defaults to 50): scheduler steps per draw.
            conditioning (`str`, *optional*, defaults to `"auto"`): `"exact"` (models with per-modality timesteps),
                `"replacement"` (any model) or `"auto"` (exact when the model allows it).
            jump_length (`int`, *optional*, defaults to 10): RePaint resampling: steps between jumps back.
            jump_n_sample (`int`, *optional*, defaults to 1): RePaint resampling: times each stretch of
                `jump_length` steps is run (1 = no resampling; replacement only).
            soft_label_temperature (`float`, *optional*): softmax temperature of the soft labels (> 1 softens
                them); defaults to the pipeline's stored default (1.0 when none is stored).
            output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`.
            return_dict (`bool`, *optional*, defaults to `True`): return an output dataclass or a tuple.
            eta (`float`, *optional*, defaults to 0.0): DDIM's eta, for schedulers that accept it.

        Example:

        ```py
        >>> from dakter_hf import DAKTerSegmentationPipeline

        >>> pipe = DAKTerSegmentationPipeline.from_pretrained("path/or/hub-id")
        >>> out = pipe(images=["scene_sat.jpg"], num_samples=4, num_inference_steps=20, output_type="np")
        >>> out.soft_labels.shape, out.labels.shape  # (1, H, W, K), (1, H, W) at the image's own size
        ```

        Returns:
            [`DAKTerSegmentationPipelineOutput`] or `tuple`: `(soft_labels, labels)`.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"`num_samples` must be a positive integer, got {num_samples!r}.")
        pixels, sizes = prepare_images(images, self.unet.config.image_channels, self.sample_shape)
        soft_label_temperature = self.soft_label_temperature_or_default(soft_label_temperature)
        self.check_common_inputs(pixels.shape[0], generator, num_inference_steps, soft_label_temperature,
                                 output_type, eta)
        mode = self.resolve_conditioning(conditioning, jump_length, jump_n_sample)

        soft_labels = 0
        for _ in range(num_samples):
            sample = self.sample_conditionally(pixels, "image", mode, num_inference_steps, generator=generator,
                                               eta=eta, jump_length=jump_length, jump_n_sample=jump_n_sample)
            soft_labels = soft_labels + logits_to_soft_labels(sample.label_logits, soft_label_temperature)
        soft_labels = soft_labels / num_samples

        if len(set(sizes)) == 1:
            soft_labels = resize_probabilities(soft_labels, sizes[0])
            soft_labels, labels = self._format(output_type, soft_labels)
        else:  # one item per image, each at its own size
            items = [self._format(output_type, resize_probabilities(soft_labels[i : i + 1], size))
                     for i, size in enumerate(sizes)]
            soft_labels, labels = [soft[0] for soft, _ in items], [label[0] for _, label in items]

        self.maybe_free_model_hooks()
        if not return_dict:
            return (soft_labels, labels)
        return DAKTerSegmentationPipelineOutput(soft_labels=soft_labels, labels=labels)

    def _format(self, output_type: str, soft_labels: torch.Tensor) -> tuple:
        _, soft_labels, labels = self.format_outputs(output_type, None, soft_labels, soft_labels.argmax(dim=1))
        return soft_labels, labels
