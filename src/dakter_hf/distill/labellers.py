"""Who labels a generated image when its own soft label is replaced (relabelling) or checked (pair quality).

Two kinds, with one interface (`labeller(images, indices, size)` -> `(B, K, H, W)` float probabilities):

* [`StudentLabeller`]: a segmentation model trained on real pairs (a saved student): its softmax, upsampled. What a
  teacher would give: the control arm of the benchmark.
* [`GeneratorLabeller`]: a DAKTer generator used as a segmenter, [`DAKTerSegmentationPipeline`], p(label | image):
  exact conditioning for checkpoints trained with per-modality timesteps, replacement otherwise (`conditioning=
  "auto"`). The soft label is the average of `num_samples` stochastic draws, a posterior estimate instead of the
  single draw that joint sampling made with the image. Row `i` is segmented with its own `torch.Generator` seeded
  `seed + i`, so a row's label depends only on its image, its index and the settings.

[`load_labeller`] tells them apart on disk ([`labeller_kind`]: `model_index.json` = a pipeline, `config.json` +
`preprocessor_config.json` = a student) and refuses anything else with a message naming the directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch

from ..errors import UsageError
from ..generation.sampling import quiet_pipeline
from ..pipelines import DAKTerSegmentationPipeline, set_scheduler
from ..pipelines.inputs import resize_probabilities
from .losses import upsample_logits


logger = logging.getLogger(__name__)


__all__ = ["LABELLER_KINDS", "GeneratorLabeller", "StudentLabeller", "labeller_kind", "load_labeller"]

#: The kinds of labeller [`load_labeller`] knows.
LABELLER_KINDS = ("student", "generator")


def labeller_kind(path: str | os.PathLike) -> str:
    """`"generator"` for a saved DAKTer pipeline directory (`model_index.json`), `"student"` for a saved student
    (`config.json` and `preprocessor_config.json`).

    Raises:
        [`UsageError`]: `path` is neither (or not a directory).
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise UsageError(f"labeller {path!r} is not a directory: expected a saved DAKTer pipeline (with "
                         "model_index.json) or a saved student (with config.json and preprocessor_config.json).")
    names = set(os.listdir(path))
    if "model_index.json" in names:
        return "generator"
    if {"config.json", "preprocessor_config.json"} <= names:
        return "student"
    raise UsageError(f"labeller {path!r} is neither a DAKTer pipeline directory (no model_index.json) nor a student "
                     "directory (no config.json + preprocessor_config.json): pass the generator's directory (e.g. "
                     "outputs/joint) or a student's best/ or final/ directory.")


def require_student(path: str | os.PathLike) -> None:
    """Check that `path` is a saved student (what [`load_labeller`] loads as a [`StudentLabeller`]).

    Raises:
        [`UsageError`]: `path` is a DAKTer pipeline, or neither kind of directory ([`labeller_kind`]).
    """
    if labeller_kind(path) != "student":
        raise UsageError(f"{os.fspath(path)!r} is a DAKTer pipeline, not a saved student (a directory with config.json "
                         "and preprocessor_config.json, e.g. a student's best/ or final/).")


def _grey(images: Sequence[PIL.Image.Image]) -> list[PIL.Image.Image]:
    return [image if image.mode == "L" else image.convert("L") for image in images]


class StudentLabeller:
    """A segmentation model as labeller: `softmax(logits / temperature)` of `image_processor`-prepared images, the
    logits upsampled bilinearly to the requested size.

    Args:
        model: a `SegformerForSemanticSegmentation` (any model returning `.logits` `(B, K, h, w)`); put in eval mode.
        image_processor: the model's image processor.
        temperature (`float`, *optional*, defaults to 1.0): softmax temperature.
        name (`str`, *optional*): how cards and manifests name the model (e.g. its directory).
    """

    kind = "student"

    def __init__(self, model, image_processor, temperature: float = 1.0, name: str | None = None):
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        self.model, self.image_processor, self.temperature = model.eval(), image_processor, float(temperature)
        self.name = name or getattr(model, "name_or_path", None) or type(model).__name__

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    def settings(self) -> dict[str, Any]:
        """What the labels depend on (for manifests and cards)."""
        return {"kind": self.kind, "labeller": str(self.name), "temperature": self.temperature}

    @torch.no_grad()
    def __call__(self, images: Sequence[PIL.Image.Image], indices: Sequence[int], size: tuple[int, int]):
        pixel_values = self.image_processor(images=_grey(images), return_tensors="pt")["pixel_values"]
        logits = self.model(pixel_values=pixel_values.to(self.model.device, self.model.dtype)).logits.float()
        return torch.softmax(upsample_logits(logits, tuple(size)) / self.temperature, dim=1).cpu()


class GeneratorLabeller:
    """A DAKTer generator's segmentation pipeline as labeller: the average of `num_samples` draws of p(label | image).

    Args:
        pipe: a DAKTer pipeline (any of the three; a [`DAKTerSegmentationPipeline`] is made with `from_pipe`, sharing
            the weights and the scheduler).
        num_samples (`int`, *optional*, defaults to 1): draws averaged per image.
        num_inference_steps (`int`, *optional*, defaults to 20): scheduler steps per draw.
        conditioning (`str`, *optional*, defaults to `"auto"`): exact for per-modality models, else replacement.
        jump_length, jump_n_sample (`int`, *optional*): RePaint resampling of replacement conditioning.
        soft_label_temperature (`float`, *optional*): softmax temperature; `None` = the pipeline's stored default
            (`dakter-calibrate --save`; 1.0 when none is stored), which `settings()` records.
        seed (`int`, *optional*, defaults to 0): row `i` is segmented with a `torch.Generator` seeded `seed + i`.
        name (`str`, *optional*): how cards and manifests name the generator (e.g. its directory).
    """

    kind = "generator"

    def __init__(self, pipe, num_samples: int = 1, num_inference_steps: int = 20, conditioning: str = "auto",
                 jump_length: int = 10, jump_n_sample: int = 1, soft_label_temperature: float | None = None,
                 seed: int = 0, name: str | None = None):
        self.pipe = pipe if isinstance(pipe, DAKTerSegmentationPipeline) else DAKTerSegmentationPipeline.from_pipe(pipe)
        for label, value in (("num_samples", num_samples), ("num_inference_steps", num_inference_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{label}` must be a positive integer, got {value!r}.")
        if soft_label_temperature is not None and not soft_label_temperature > 0:
            raise ValueError(f"`soft_label_temperature` must be > 0, got {soft_label_temperature}.")
        self.conditioning = self.pipe.resolve_conditioning(conditioning, jump_length, jump_n_sample)
        if self.conditioning == "replacement":
            logger.warning(
                "%s labels by replacement conditioning (a checkpoint trained without per-modality timesteps): on SOS "
                "Sentinel it segmented real test images at 40 mIoU against 74 for a per-modality checkpoint's exact "
                "conditioning, and students on its posterior labels lost 15 mIoU (BENCHMARKS.md). Prefer a generator "
                "trained with --per_modality_timesteps as labeller.", name or type(self.pipe.unet).__name__)
        self.num_samples, self.num_inference_steps, self.seed = num_samples, num_inference_steps, int(seed)
        self.jump_length, self.jump_n_sample = jump_length, jump_n_sample
        self.soft_label_temperature = soft_label_temperature
        self.name = name or getattr(self.pipe, "name_or_path", None) or type(self.pipe).__name__

    @property
    def num_classes(self) -> int:
        return int(self.pipe.unet.config.num_classes)

    def settings(self) -> dict[str, Any]:
        """What the labels depend on (for manifests and cards)."""
        return {"kind": self.kind, "labeller": str(self.name), "num_samples": self.num_samples,
                "num_inference_steps": self.num_inference_steps, "conditioning": self.conditioning,
                "jump_length": self.jump_length, "jump_n_sample": self.jump_n_sample,
                "soft_label_temperature": self.pipe.soft_label_temperature_or_default(self.soft_label_temperature),
                "seed": self.seed,
                "scheduler": type(self.pipe.scheduler).__name__,
                "seeds": f"row i is segmented with seed {self.seed} + i"}

    @torch.no_grad()
    def __call__(self, images: Sequence[PIL.Image.Image], indices: Sequence[int], size: tuple[int, int]):
        options = {} if self.soft_label_temperature is None else {
            "soft_label_temperature": self.soft_label_temperature}
        generators = [torch.Generator().manual_seed(self.seed + int(i)) for i in indices]
        with quiet_pipeline(self.pipe):
            out = self.pipe(images=_grey(images), num_samples=self.num_samples, generator=generators,
                            num_inference_steps=self.num_inference_steps, conditioning=self.conditioning,
                            jump_length=self.jump_length, jump_n_sample=self.jump_n_sample, output_type="pt",
                            **options)
        if isinstance(out.soft_labels, list):  # images of different sizes: each resized to `size`
            return torch.cat([resize_probabilities(s[None].float(), tuple(size)) for s in out.soft_labels]).cpu()
        soft = out.soft_labels.float()
        if tuple(soft.shape[-2:]) != tuple(size):
            soft = resize_probabilities(soft, tuple(size))
        return soft.cpu()


def load_labeller(path: str | os.PathLike, temperature: float | None = None, scheduler: str | None = None,
                  **generator_options):
    """The labeller saved in directory `path`: a [`GeneratorLabeller`] for a DAKTer pipeline, a [`StudentLabeller`]
    for a student (see [`labeller_kind`]).

    Args:
        path (`str`): the directory.
        temperature (`float`, *optional*): softmax temperature (`None`: 1 for a student, the pipeline's default for a
            generator).
        scheduler (`str`, *optional*): a generator's sampler by name (`dakter_hf.pipelines.SCHEDULERS`); default its
            saved one.
        **generator_options: [`GeneratorLabeller`] options (`num_samples`, `num_inference_steps`, `conditioning`,
            `jump_length`, `jump_n_sample`, `seed`); refused for a student.
    """
    path = os.fspath(path)
    kind = labeller_kind(path)
    if kind == "student":
        given = sorted(k for k, v in {**generator_options, "scheduler": scheduler}.items() if v is not None)
        if given:
            raise UsageError(f"labeller {path} is a student: the generator options {given} do not apply to it.")
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        try:
            model = AutoModelForSemanticSegmentation.from_pretrained(path)
            processor = AutoImageProcessor.from_pretrained(path, backend="pil")
        except (OSError, ValueError) as error:
            raise UsageError(f"labeller {path} could not be loaded as a student: {error}") from error
        return StudentLabeller(model, processor, 1.0 if temperature is None else temperature, name=path)
    try:
        pipe = DAKTerSegmentationPipeline.from_pretrained(path)
    except Exception as error:  # diffusers raises OSError / ValueError / EnvironmentError variants
        raise UsageError(f"labeller {path} could not be loaded as a DAKTer pipeline: {error}") from error
    if scheduler is not None:
        set_scheduler(pipe, scheduler)
    options = {k: v for k, v in generator_options.items() if v is not None}
    return GeneratorLabeller(pipe, soft_label_temperature=temperature, name=path, **options)
