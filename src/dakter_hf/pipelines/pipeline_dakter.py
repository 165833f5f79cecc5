"""`DAKTerPipeline`: noise -> (SAR images, soft labels) with any diffusers scheduler."""

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..labels import logits_to_soft_labels
from ..models.joint_unet_2d import JointUNet2DModel
from .pipeline_mixin import DAKTerPipelineMixin


@dataclass
class DAKTerPipelineOutput(BaseOutput):
    """
    Output of [`DAKTerPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            Generated images in [0, 1]: PIL images (`"pil"`), `(B, H, W, C)` floats (`"np"`) or `(B, C, H, W)`
            floats (`"pt"`).
        soft_labels (`np.ndarray` or `torch.Tensor`):
            Per-pixel class probabilities summing to 1: `(B, H, W, K)` (`"np"`, `"pil"`) or `(B, K, H, W)` (`"pt"`).
        labels (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The argmax of the soft labels, `(B, H, W)` integers, or PIL masks of class indices (`"pil"`).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    soft_labels: np.ndarray | torch.Tensor
    labels: list[PIL.Image.Image] | np.ndarray | torch.Tensor


class DAKTerPipeline(DAKTerPipelineMixin, DiffusionPipeline):
    r"""
    Pipeline generating SAR images jointly with per-pixel soft labels (DAKTer).

    Image and scaled label are denoised as one state by any diffusers scheduler (DDPM, DDIM, DPM-Solver++,
    Euler, UniPC, ...). Whatever the model predicts (clean image or noise, plus label logits), the pipeline converts
    it into what the scheduler's `prediction_type` expects (`"sample"`, `"epsilon"` or `"v_prediction"`). The soft
    labels are the softmax of the label logits of the last denoising step.

    This model inherits from [`DiffusionPipeline`]: loading, saving, pushing to the Hub and moving between devices
    work as for every diffusers pipeline. `DAKTerPipeline.from_pretrained` also loads a Hub repository (diffusers'
    generic loader cannot, because the model class lives outside diffusers).

    Parameters:
        unet ([`JointUNet2DModel`]): the joint image + label denoiser.
        scheduler ([`SchedulerMixin`]): a scheduler to step the joint state.
        id2label (`dict[int, str]`, *optional*): the names of the `unet.config.num_classes` label classes. Saved in
            `model_index.json` and passed back by `from_pretrained`; read them with [`~DAKTerPipeline.id2label`].
        soft_label_temperature (`float`, *optional*): the default softmax temperature of the soft labels (e.g. fitted
            on real labelled pairs by `dakter-calibrate`); saved in `model_index.json` like `id2label`. Without it
            (every checkpoint saved before it existed) the default is 1.0.
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
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 50,
        soft_label_temperature: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        eta: float = 0.0,
    ) -> DAKTerPipelineOutput | tuple:
        r"""
        Generate image / soft-label pairs.

        Args:
            batch_size (`int`, *optional*, defaults to 1): number of pairs to generate.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): random generator(s); with a list
                of `batch_size` generators, sample i depends only on generator i (it equals the same seed
                generated alone).
            num_inference_steps (`int`, *optional*, defaults to 50): number of denoising steps.
            soft_label_temperature (`float`, *optional*): temperature of the softmax turning label logits into
                soft labels (> 1 softens them); defaults to the pipeline's stored
                [`~DAKTerPipelineMixin.default_soft_label_temperature`] (1.0 when none is stored).
            output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`.
            return_dict (`bool`, *optional*, defaults to `True`): return a [`DAKTerPipelineOutput`] or a tuple.
            eta (`float`, *optional*, defaults to 0.0): DDIM's eta (0 = deterministic, 1 = DDPM-like), passed only
                to schedulers that accept it.

        Example:

        ```py
        >>> from dakter_hf import DAKTerPipeline

        >>> pipe = DAKTerPipeline.from_pretrained("path/or/hub-id")
        >>> out = pipe(batch_size=4, num_inference_steps=20, output_type="np")
        >>> out.images.shape, out.soft_labels.shape, out.labels.shape  # (4, H, W, 1), (4, H, W, K), (4, H, W)
        ```

        Returns:
            [`DAKTerPipelineOutput`] or `tuple`: `(images, soft_labels, labels)`.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        soft_label_temperature = self.soft_label_temperature_or_default(soft_label_temperature)
        self.check_common_inputs(batch_size, generator, num_inference_steps, soft_label_temperature, output_type, eta)
        config = self.unet.config
        channels = config.image_channels

        device = self._execution_device
        state = randn_tensor((batch_size, channels + config.num_classes, *self.sample_shape), generator=generator,
                             device=device, dtype=self.unet.dtype)
        state = state * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = self.step_kwargs(generator, eta)

        label_logits = None
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(state, t)
            image_pred, label_logits = self.unet(model_input[:, :channels], model_input[:, channels:], t,
                                                 return_dict=False)
            clean = torch.cat([self.clean_image(model_input[:, :channels], image_pred, t),
                               self.clean_label(label_logits)], dim=1)
            model_output = self.to_scheduler_prediction(model_input, clean, t)
            state = self.scheduler.step(model_output, t, state, **step_kwargs).prev_sample

        soft_labels = logits_to_soft_labels(label_logits, soft_label_temperature)
        images, soft_labels, labels = self.format_outputs(
            output_type, self.state_to_images(state[:, :channels]), soft_labels, soft_labels.argmax(dim=1))

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, soft_labels, labels)
        return DAKTerPipelineOutput(images=images, soft_labels=soft_labels, labels=labels)
