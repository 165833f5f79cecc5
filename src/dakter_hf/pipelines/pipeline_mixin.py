"""`DAKTerPipelineMixin`: what every DAKTer pipeline shares (loading, class names, scheduler plumbing, outputs).

[`DAKTerPipeline`], [`DAKTerMaskToImagePipeline`] and [`DAKTerSegmentationPipeline`] hold the same two components
(a [`JointUNet2DModel`] and a diffusers scheduler) and the same `id2label`, so each can be loaded from any saved
DAKTer checkpoint or made from another with `from_pipe`. The mixin converts the model's predictions (clean image or
noise, label logits) into what any discrete diffusers scheduler expects, and formats the outputs.
"""

import inspect
import logging
import math
import os

import numpy as np
import PIL.Image
import torch

from ..labels import default_id2label, logits_to_clean_label, normalize_id2label
from ..models.joint_unet_2d import JointUNet2DModel
from .loading import download_pipeline


OUTPUT_TYPES = ("pil", "np", "pt")
SCHEDULER_PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class DAKTerPipelineMixin:
    r"""
    Shared machinery of the DAKTer pipelines; a pipeline class inherits it before [`DiffusionPipeline`].

    The pipeline's `__init__(unet, scheduler, id2label=None)` calls [`~DAKTerPipelineMixin.register_dakter`].
    """

    model_cpu_offload_seq = "unet"

    def register_dakter(self, unet: JointUNet2DModel, scheduler, id2label=None, soft_label_temperature=None) -> None:
        """Register the two components, the checked class names and, when given, the default soft-label temperature
        (both saved in `model_index.json`; a pipeline without a temperature saves the same file as before it
        existed)."""
        self.register_modules(unet=unet, scheduler=scheduler)
        if id2label is not None:
            num_classes = getattr(getattr(unet, "config", None), "num_classes", None)
            id2label = normalize_id2label(id2label, num_classes, source="`id2label`")
        self.register_to_config(id2label=id2label)
        if soft_label_temperature is not None:
            self.set_default_soft_label_temperature(soft_label_temperature)

    @property
    def default_soft_label_temperature(self) -> float:
        """The softmax temperature of the soft labels when a call passes none: the one stored in the pipeline's
        config (`soft_label_temperature` in `model_index.json`, e.g. fitted by `dakter-calibrate --save`), 1.0
        when none is stored."""
        stored = self.config.get("soft_label_temperature")
        return 1.0 if stored is None else float(stored)

    def set_default_soft_label_temperature(self, temperature: float | None) -> None:
        """Store `temperature` (a finite number > 0; `None` removes it) as the pipeline's default soft-label
        temperature, saved with the pipeline by `save_pretrained`."""
        if temperature is not None:
            if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                    or not math.isfinite(temperature) or not temperature > 0:
                raise ValueError(f"`soft_label_temperature` must be a finite number > 0, got {temperature!r}.")
            temperature = float(temperature)
        self.register_to_config(soft_label_temperature=temperature)

    def soft_label_temperature_or_default(self, temperature: float | None) -> float:
        """`temperature`, or the [`default_soft_label_temperature`] when it is `None`."""
        return self.default_soft_label_temperature if temperature is None else temperature

    @property
    def id2label(self) -> dict[int, str]:
        """The class names of the labels, `{index: name}`; `class_<i>` placeholders when none were given."""
        stored = self.config.get("id2label")
        if stored is None:
            return default_id2label(self.unet.config.num_classes)
        return {int(k): v for k, v in stored.items()}

    @property
    def sample_shape(self) -> tuple[int, int]:
        """`(height, width)` of the model's samples."""
        size = self.unet.config.sample_size
        return (size, size) if isinstance(size, int) else tuple(size)

    # ------------------------------------------------------------------------------------------------------------------
    # Loading
    # ------------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        r"""
        Load a pipeline from a local directory or a Hub repository id (any saved DAKTer checkpoint).

        For a repository id, the weights and configs are fetched with `huggingface_hub.snapshot_download`
        (safetensors only, no remote code) and loaded as a local directory. Hub options (`revision`, `token`,
        `cache_dir`, `force_download`, `local_files_only`, `proxies`) are honoured; every other keyword goes to
        [`DiffusionPipeline.from_pretrained`].

        The installed [`JointUNet2DModel`] is always used, also when the directory carries the remote-code copy of
        the model (`unet/dakter_hf.models.joint_unet_2d.py`, written by `dakter_hf.remote_code.add_remote_code` or
        left in a Hub snapshot by a `trust_remote_code` download), which diffusers would otherwise load (or refuse to
        load without `trust_remote_code`). `dtype` (or `torch_dtype`), also in its `{"unet": ..., "default": ...}`
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

    # ------------------------------------------------------------------------------------------------------------------
    # Checks
    # ------------------------------------------------------------------------------------------------------------------

    def check_common_inputs(self, batch_size, generator, num_inference_steps, soft_label_temperature, output_type,
                            eta) -> None:
        """Check the arguments every DAKTer pipeline takes, and the scheduler; raise a `ValueError` naming the bad one.

        `batch_size` is the number of samples drawn at once (a list of generators needs one per sample).
        """
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"A list of generators must have one generator per sample: got {len(generator)} generators for "
                f"{batch_size} samples."
            )
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) \
                or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive integer, got {num_inference_steps!r}.")
        if not soft_label_temperature > 0:
            raise ValueError(f"`soft_label_temperature` must be > 0, got {soft_label_temperature}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise ValueError(f"`eta` must be a number in [0, 1], got {eta!r}.")
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if prediction_type not in SCHEDULER_PREDICTION_TYPES:
            raise ValueError(
                f"The scheduler's prediction_type {prediction_type!r} is not supported; use 'epsilon', 'sample' or "
                f"'v_prediction'."
            )
        if self.scheduler.config.get("timestep_type", "discrete") != "discrete":
            raise ValueError("Schedulers with continuous timesteps are not supported; use timestep_type='discrete'.")

    # ------------------------------------------------------------------------------------------------------------------
    # Model output -> scheduler
    # ------------------------------------------------------------------------------------------------------------------

    def step_kwargs(self, generator, eta) -> dict:
        """The `generator` and `eta` keywords the scheduler's `step` accepts."""
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "generator" in accepted:
            kwargs["generator"] = generator
        if "eta" in accepted:
            kwargs["eta"] = eta
        return kwargs

    def alpha_bar(self, t) -> torch.Tensor:
        """The cumulative signal level of the (scaled) model input at timestep `t` of the current schedule."""
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

    def clean_image(self, image_input: torch.Tensor, image_pred: torch.Tensor, t) -> torch.Tensor:
        """The clean-image estimate x0 of the model's image output (x0 itself, or the noise at timestep `t`)."""
        if self.unet.config.prediction_type == "sample":
            return image_pred
        alpha_bar = self.alpha_bar(t)
        alpha, sigma = alpha_bar.sqrt().to(image_input), (1 - alpha_bar).sqrt().to(image_input)
        return (image_input - sigma * image_pred) / alpha

    def clean_label(self, label_logits: torch.Tensor) -> torch.Tensor:
        """The clean scaled-label estimate of the label logits."""
        return logits_to_clean_label(label_logits, self.unet.config.label_scale)

    def to_scheduler_prediction(self, model_input: torch.Tensor, clean: torch.Tensor, t) -> torch.Tensor:
        """Convert a clean estimate of the (scaled) `model_input` at timestep `t` into the scheduler's
        `prediction_type` (`"sample"`, `"epsilon"` or `"v_prediction"`); works on any subset of the channels."""
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if prediction_type == "sample":
            return clean
        alpha_bar = self.alpha_bar(t)
        alpha, sigma = alpha_bar.sqrt().to(model_input), (1 - alpha_bar).sqrt().to(model_input)
        noise = (model_input - alpha * clean) / sigma
        if prediction_type == "epsilon":
            return noise
        return alpha * noise - sigma * clean  # v_prediction

    # ------------------------------------------------------------------------------------------------------------------
    # Outputs
    # ------------------------------------------------------------------------------------------------------------------

    @staticmethod
    def state_to_images(image_state: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] `(B, C, H, W)` from the model's [-1, 1] image channels."""
        return (image_state / 2 + 0.5).clamp(0, 1).float()

    def format_outputs(self, output_type: str, images=None, soft_labels=None, labels=None) -> tuple:
        """Convert `(B, C, H, W)` images, `(B, K, H, W)` soft labels and `(B, H, W)` labels (any may be `None`) to
        `output_type`: unchanged tensors (`"pt"`); channels-last arrays (`"np"`); PIL images and masks with
        channels-last soft-label arrays (`"pil"`)."""
        if output_type == "pt":
            return images, soft_labels, labels
        if images is not None:
            images = images.cpu().permute(0, 2, 3, 1).numpy()
        if soft_labels is not None:
            soft_labels = soft_labels.cpu().permute(0, 2, 3, 1).numpy()
        if labels is not None:
            labels = labels.cpu().numpy()
        if output_type == "pil":
            if images is not None:
                images = self.numpy_to_pil(images)
            if labels is not None:
                labels = [PIL.Image.fromarray(label.astype(np.uint8), mode="L") for label in labels]
        return images, soft_labels, labels
