"""`DAKTerPipeline`: noise -> (SAR images, soft labels) with any diffusers scheduler."""

import inspect
import os
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..labels import default_id2label, logits_to_clean_label, logits_to_soft_labels, normalize_id2label
from ..models.joint_unet_2d import JointUNet2DModel
from .loading import download_pipeline


OUTPUT_TYPES = ("pil", "np", "pt")


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


class DAKTerPipeline(DiffusionPipeline):
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
    """

    model_cpu_offload_seq = "unet"

    def __init__(
        self, unet: JointUNet2DModel, scheduler: SchedulerMixin, id2label: dict[int, str] | dict[str, str] | None = None
    ):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        if id2label is not None:
            num_classes = getattr(getattr(unet, "config", None), "num_classes", None)
            id2label = normalize_id2label(id2label, num_classes, source="`id2label`")
        self.register_to_config(id2label=id2label)

    @property
    def id2label(self) -> dict[int, str]:
        """The class names of the generated labels, `{index: name}`; `class_<i>` placeholders when none were given."""
        stored = self.config.get("id2label")
        if stored is None:
            return default_id2label(self.unet.config.num_classes)
        return {int(k): v for k, v in stored.items()}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        r"""
        Load a pipeline from a local directory or a Hub repository id.

        For a repository id, the weights and configs are fetched with `huggingface_hub.snapshot_download`
        (safetensors only, no remote code) and loaded as a local directory. Hub options (`revision`, `token`,
        `cache_dir`, `force_download`, `local_files_only`, `proxies`) are honoured; every other keyword goes to
        [`DiffusionPipeline.from_pretrained`].

        The installed [`JointUNet2DModel`] is always used, also when the directory carries the remote-code copy of
        the model (`unet/dakter_hf.models.joint_unet_2d.py`, written by `dakter_hf.remote_code.add_remote_code` or left in
        a Hub snapshot by a `trust_remote_code` download), which diffusers would otherwise load (or refuse to load
        without `trust_remote_code`). `dtype` (or `torch_dtype`), also in its `{"unet": ..., "default": ...}`
        form, applies to it as to every component.
        """
        if not os.path.isdir(pretrained_model_name_or_path):
            pretrained_model_name_or_path = download_pipeline(str(pretrained_model_name_or_path), kwargs)
        remote_model_file = os.path.join(pretrained_model_name_or_path, "unet", f"{JointUNet2DModel.__module__}.py")
        if "unet" not in kwargs and os.path.isfile(remote_model_file):
            kwargs["unet"] = cls._load_installed_unet(pretrained_model_name_or_path, kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @staticmethod
    def _load_installed_unet(directory: str | os.PathLike, kwargs: dict) -> JointUNet2DModel:
        """Load `directory/unet` with the installed class, with the `dtype` and `variant` of `from_pretrained`."""
        dtype = kwargs.get("dtype")
        if dtype is None:
            dtype = kwargs.get("torch_dtype")
        if isinstance(dtype, dict):
            dtype = dtype.get("unet", dtype.get("default", torch.float32))
        options = {"dtype": dtype} if dtype is not None else {}
        if kwargs.get("variant") is not None:
            options["variant"] = kwargs["variant"]
        return JointUNet2DModel.from_pretrained(directory, subfolder="unet", **options)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 50,
        soft_label_temperature: float = 1.0,
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
            soft_label_temperature (`float`, *optional*, defaults to 1.0): temperature of the softmax turning
                label logits into soft labels (> 1 softens them).
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
        self._check_inputs(batch_size, generator, num_inference_steps, soft_label_temperature, output_type, eta)
        config = self.unet.config
        height, width = (config.sample_size,) * 2 if isinstance(config.sample_size, int) else config.sample_size
        channels = config.image_channels

        device = self._execution_device
        state = randn_tensor((batch_size, channels + config.num_classes, height, width), generator=generator,
                             device=device, dtype=self.unet.dtype)
        state = state * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = self._step_kwargs(generator, eta)

        label_logits = None
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(state, t)
            image_pred, label_logits = self.unet(model_input[:, :channels], model_input[:, channels:], t,
                                                 return_dict=False)
            model_output = self._to_scheduler_prediction(model_input, image_pred, label_logits, t)
            state = self.scheduler.step(model_output, t, state, **step_kwargs).prev_sample

        images = (state[:, :channels] / 2 + 0.5).clamp(0, 1).float()
        soft_labels = logits_to_soft_labels(label_logits, soft_label_temperature)
        labels = soft_labels.argmax(dim=1)
        if output_type != "pt":
            images = images.cpu().permute(0, 2, 3, 1).numpy()
            soft_labels = soft_labels.cpu().permute(0, 2, 3, 1).numpy()
            labels = labels.cpu().numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
                labels = [PIL.Image.fromarray(label.astype(np.uint8), mode="L") for label in labels]

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, soft_labels, labels)
        return DAKTerPipelineOutput(images=images, soft_labels=soft_labels, labels=labels)

    def _check_inputs(self, batch_size, generator, num_inference_steps, soft_label_temperature, output_type, eta):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"A list of generators must have one generator per sample: got {len(generator)} generators for "
                f"`batch_size`={batch_size}."
            )
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}.")
        if not soft_label_temperature > 0:
            raise ValueError(f"`soft_label_temperature` must be > 0, got {soft_label_temperature}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ValueError(f"`eta` must be a number in [0, 1], got {eta!r}.")
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(
                f"The scheduler's prediction_type {prediction_type!r} is not supported; use 'epsilon', 'sample' or "
                f"'v_prediction'."
            )
        if self.scheduler.config.get("timestep_type", "discrete") != "discrete":
            raise ValueError("Schedulers with continuous timesteps are not supported; use timestep_type='discrete'.")

    def _step_kwargs(self, generator, eta):
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "generator" in accepted:
            kwargs["generator"] = generator
        if "eta" in accepted:
            kwargs["eta"] = eta
        return kwargs

    def _alpha_bar(self, t) -> torch.Tensor:
        """The cumulative signal level of the (scaled) model input at timestep `t`."""
        scheduler = self.scheduler
        sigmas, step_index = getattr(scheduler, "sigmas", None), getattr(scheduler, "step_index", None)
        if sigmas is not None and step_index is not None:
            sigma = sigmas[step_index].double()
        else:
            alphas_cumprod = scheduler.alphas_cumprod.cpu()
            train_sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
            t = float(t)
            sigma = torch.tensor(np.interp(t, np.arange(len(train_sigmas)), train_sigmas.double().numpy()))
        return 1.0 / (1.0 + sigma**2)

    def _to_scheduler_prediction(self, model_input, image_pred, label_logits, t) -> torch.Tensor:
        """Convert the model's prediction of the joint state into the scheduler's `prediction_type`."""
        alpha_bar = self._alpha_bar(t)
        alpha, sigma = alpha_bar.sqrt().to(model_input), (1 - alpha_bar).sqrt().to(model_input)
        channels = self.unet.config.image_channels
        if self.unet.config.prediction_type == "epsilon":
            image_pred = (model_input[:, :channels] - sigma * image_pred) / alpha
        clean = torch.cat([image_pred, logits_to_clean_label(label_logits, self.unet.config.label_scale)], dim=1)
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if prediction_type == "sample":
            return clean
        noise = (model_input - alpha * clean) / sigma
        if prediction_type == "epsilon":
            return noise
        return alpha * noise - sigma * clean  # v_prediction
