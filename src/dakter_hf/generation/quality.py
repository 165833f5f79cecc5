"""What a joint generator is worth beyond its samples' looks, measured on a labelled real split (issue #23's measures):

* **alignment**: the generator used as a segmenter ([`DAKTerSegmentationPipeline`]) on the split's real images, scored
  against their masks with [`SegmentationMetrics`] (mIoU, per-class IoU, ...): do its image and label channels agree?
* **calibration**: the same soft labels scored with [`CalibrationMetrics`]: expected calibration error (equal-width
  bins), NLL, and the ECE of their argmax beside them (what a hard label would claim). Soft labels carry information
  a hard label does not only if their ECE is below the argmax's.
* **mask fidelity**: a student trained on real data segments images that [`DAKTerMaskToImagePipeline`] drew for the
  split's masks; its mIoU against those masks, next to its mIoU on the split's real images (and their ratio): do the
  images show what the masks say?
* **sample realism** ([`measure_sample_realism`], no generator needed): the Fréchet distance between a generated
  dataset's images and a real split's, in the encoder features of that student, beside the distance between two
  halves of the real split (the floor at that size): do the generated images look like the real ones?

[`measure_generator_quality`] computes the first three; [`save_generator_quality`] writes them next to the generator
(`quality.json`) and into its card. Every draw has its own seeded `torch.Generator`, so a measure is reproducible.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from ..labels import resolve_id2label
from ..metrics import CalibrationMetrics, SegmentationMetrics, frechet_distance
from ..model_cards import CARD_NAME, add_quality_to_card
from ..pipelines import DAKTerMaskToImagePipeline, DAKTerSegmentationPipeline
from ..visualization import MASK_TO_IMAGE_COLUMNS, SEGMENTATION_COLUMNS, save_sample_grid
from .sampling import quiet_pipeline


__all__ = ["QUALITY_NAME", "measure_generator_quality", "measure_sample_realism", "save_generator_quality",
           "student_image_features"]

#: The report [`save_generator_quality`] writes next to the generator.
QUALITY_NAME = "quality.json"


def _split_rows(dataset, start: int, stop: int) -> tuple[list[PIL.Image.Image], np.ndarray]:
    """The real images (PIL) and masks `(B, H, W)` of rows `start..stop-1` of a labelled split."""
    rows = dataset[start:stop]
    masks = np.stack([np.asarray(mask, dtype=np.int64) for mask in rows["mask"]])
    return list(rows["image"]), masks


def _check_split(dataset) -> None:
    missing = [c for c in ("image", "mask") if c not in getattr(dataset, "column_names", [])]
    if missing:
        raise ValueError(f"`dataset` must be a labelled split with 'image' and 'mask' columns (a `dakter_hf.data` "
                         f"dataset); missing {missing}.")
    if len(dataset) == 0:
        raise ValueError("`dataset` is empty: nothing to measure.")


def _to_pil(images: torch.Tensor) -> list[PIL.Image.Image]:
    """`(B, 1, H, W)` images in [0, 1] as the 8-bit greyscale PIL images a generated dataset stores."""
    pixels = (images.float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
    return [PIL.Image.fromarray(p) for p in pixels]


def _student_logits(student, image_processor, images: list[PIL.Image.Image]) -> torch.Tensor:
    pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"]
    device = next(student.parameters()).device
    return student(pixel_values=pixel_values.to(device)).logits.float().cpu()


@torch.no_grad()
def measure_generator_quality(
    pipe,
    dataset,
    student=None,
    image_processor=None,
    num_inference_steps: int = 20,
    num_samples: int = 1,
    num_images_per_mask: int = 1,
    conditioning: str = "auto",
    jump_length: int = 10,
    jump_n_sample: int = 1,
    soft_label_temperature: float | None = None,
    batch_size: int = 8,
    seed: int = 0,
    num_bins: int = 15,
    id2label: Mapping[int, str] | None = None,
    figures_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    r"""
    Measure alignment, calibration and (with a student) mask fidelity of a joint generator on a labelled split.

    Args:
        pipe: a loaded DAKTer pipeline ([`DAKTerPipeline`] or one of the conditional ones; the two conditional
            pipelines are made from it with `from_pipe`, sharing its weights and scheduler), on the device to use.
        dataset (`datasets.Dataset`): a labelled real split with `image` and `mask` columns (e.g.
            `dakter_hf.data.load_sos(..., split="test", resolution=64)`); masks are scored at their own size.
        student (`transformers.PreTrainedModel`, *optional*): a segmentation model trained on real data (its
            `logits` are upsampled to the mask size); without it, mask fidelity is not measured.
        image_processor (*optional*): the student's image processor (`AutoImageProcessor.from_pretrained` of the
            student's directory); needed with `student`.
        num_inference_steps (`int`, *optional*, defaults to 20): scheduler steps of every draw.
        num_samples (`int`, *optional*, defaults to 1): segmentation draws averaged per image.
        num_images_per_mask (`int`, *optional*, defaults to 1): images drawn per mask for mask fidelity.
        conditioning, jump_length, jump_n_sample: how the conditional pipelines condition (see
            `dakter_hf.pipelines.conditional_sampling`); `"auto"`: exact for models with per-modality timesteps.
        soft_label_temperature (`float`, *optional*): softmax temperature of the soft labels; by default the
            pipeline's stored one (1.0 when it stores none).
        batch_size (`int`, *optional*, defaults to 8): real images per pipeline call.
        seed (`int`, *optional*, defaults to 0): image `i` of the split is segmented with seed `seed + i`, image `j`
            of mask `i` is drawn with seed `seed + i * num_images_per_mask + j`.
        num_bins (`int`, *optional*, defaults to 15): equal-width bins of the ECE.
        id2label (`Mapping`, *optional*): class names of the per-class keys (default: the pipeline's).
        figures_dir (`str`, *optional*): write `segmentation.png` (image | soft label | ground truth) and
            `mask_to_image.png` (mask | generated image | soft label) of the first batch there.

    Returns:
        `dict`: `alignment` ([`compute_segmentation_metrics`] keys), `calibration` ([`CalibrationMetrics.compute`]
        keys), `mask_fidelity` (`generated` and `real` student metrics, `mean_iou_ratio` = generated / real; `None`
        without a student), `num_images` and `settings`.
    """
    _check_split(dataset)
    if (student is None) != (image_processor is None):
        raise ValueError("Pass `student` and `image_processor` together (mask fidelity needs both), or neither.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    segmenter = pipe if isinstance(pipe, DAKTerSegmentationPipeline) else DAKTerSegmentationPipeline.from_pipe(pipe)
    drawer = pipe if isinstance(pipe, DAKTerMaskToImagePipeline) else DAKTerMaskToImagePipeline.from_pipe(pipe)
    soft_label_temperature = segmenter.soft_label_temperature_or_default(soft_label_temperature)
    num_classes = segmenter.unet.config.num_classes
    id2label = resolve_id2label(pipe, id2label)
    alignment = SegmentationMetrics(num_classes, id2label=id2label)
    calibration = CalibrationMetrics(num_classes, num_bins=num_bins)
    fidelity = SegmentationMetrics(num_classes, id2label=id2label) if student is not None else None
    student_real = SegmentationMetrics(num_classes, id2label=id2label) if student is not None else None
    options = dict(num_inference_steps=num_inference_steps, conditioning=conditioning, jump_length=jump_length,
                   jump_n_sample=jump_n_sample, soft_label_temperature=soft_label_temperature, output_type="pt")
    k = num_images_per_mask
    with quiet_pipeline(segmenter), quiet_pipeline(drawer):
        for start in tqdm(range(0, len(dataset), batch_size), desc="Measuring the generator", unit="batch"):
            stop = min(start + batch_size, len(dataset))
            images, masks = _split_rows(dataset, start, stop)
            generators = [torch.Generator().manual_seed(seed + i) for i in range(start, stop)]
            segmented = segmenter(images=images, num_samples=num_samples, generator=generators, **options)
            if isinstance(segmented.soft_labels, list):
                raise ValueError(f"`dataset` rows {start}..{stop - 1} hold images of different sizes; load the split "
                                 f"at one resolution.")
            soft_labels = segmented.soft_labels.float().cpu()
            alignment.update(soft_labels, masks)
            calibration.update(soft_labels, masks)
            if figures_dir is not None and start == 0:
                real = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])
                save_sample_grid(real, soft_labels, masks, os.path.join(figures_dir, "segmentation.png"),
                                 id2label=id2label, columns=SEGMENTATION_COLUMNS,
                                 title="The generator as a segmenter (real images)")
            if student is None and figures_dir is None:
                continue
            generators = [torch.Generator().manual_seed(seed + i * k + j) for i in range(start, stop) for j in range(k)]
            drawn = drawer(masks=torch.from_numpy(masks), num_images_per_mask=k, generator=generators, **options)
            # the masks the images were drawn for, at the model's size (nearest), one per image
            drawn_for = np.repeat(masks, k, axis=0)
            size = tuple(drawn.images.shape[-2:])
            if drawn_for.shape[-2:] != size:
                resized = torch.nn.functional.interpolate(torch.from_numpy(drawn_for)[:, None].float(), size=size,
                                                          mode="nearest-exact")
                drawn_for = resized[:, 0].long().numpy()
            if student is not None:
                fidelity.update(_student_logits(student, image_processor, _to_pil(drawn.images)), drawn_for)
                student_real.update(_student_logits(student, image_processor, images), masks)
            if figures_dir is not None and start == 0:
                save_sample_grid(drawn.images.float().cpu(), drawn.soft_labels.float().cpu(), drawn_for,
                                 os.path.join(figures_dir, "mask_to_image.png"), id2label=id2label,
                                 columns=MASK_TO_IMAGE_COLUMNS, title="Images drawn for real masks")

    mask_fidelity = None
    if student is not None:
        generated, real = fidelity.compute(), student_real.compute()
        ratio = generated["mean_iou"] / real["mean_iou"] if real["mean_iou"] else float("nan")
        mask_fidelity = {"generated": generated, "real": real, "mean_iou_ratio": ratio}
    settings = {"num_inference_steps": num_inference_steps, "num_samples": num_samples,
                "num_images_per_mask": num_images_per_mask, "conditioning": segmenter.resolve_conditioning(
                    conditioning, jump_length, jump_n_sample), "jump_length": jump_length,
                "jump_n_sample": jump_n_sample, "soft_label_temperature": soft_label_temperature, "seed": seed,
                "num_bins": num_bins, "scheduler": type(segmenter.scheduler).__name__,
                "per_modality_timesteps": bool(segmenter.unet.config.get("per_modality_timesteps", False))}
    return {"alignment": alignment.compute(), "calibration": calibration.compute(), "mask_fidelity": mask_fidelity,
            "num_images": len(dataset), "settings": settings}


@torch.no_grad()
def student_image_features(student, image_processor, images, batch_size: int = 64) -> np.ndarray:
    """
    One feature vector per image from a segmentation model's encoder: every hidden state it returns
    (`output_hidden_states=True`; SegFormer: its four stages) averaged over space and concatenated.

    Args:
        student (`transformers.PreTrainedModel`): a semantic segmentation model (e.g. a saved DAKTer student).
        image_processor: its image processor.
        images (sequence of `PIL.Image.Image`): the images; converted to greyscale, as the students read them (as
            [`dakter_hf.distill.StudentLabeller`] does).
        batch_size (`int`, *optional*, defaults to 64): images per forward pass.

    Returns:
        `np.ndarray` of shape `(len(images), D)`.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    device = next(student.parameters()).device
    features = []
    for start in range(0, len(images), batch_size):
        batch = [image if image.mode == "L" else image.convert("L") for image in images[start:start + batch_size]]
        pixel_values = image_processor(images=batch, return_tensors="pt")
        outputs = student(pixel_values=pixel_values["pixel_values"].to(device), output_hidden_states=True)
        pooled = [h.float().mean(dim=tuple(range(2, h.ndim))) if h.ndim == 4 else h.float().mean(dim=1)
                  for h in outputs.hidden_states]
        features.append(torch.cat(pooled, dim=1).cpu().numpy())
    if not features:
        raise ValueError("`images` is empty: no features to compute.")
    return np.concatenate(features).astype(np.float64)


def measure_sample_realism(student, image_processor, real_images, generated_images, num_splits: int = 5,
                           seed: int = 0, batch_size: int = 64) -> dict[str, Any]:
    """
    How far generated images are from real ones, in the encoder features of a student trained on real pairs.

    For each of `num_splits` seeded splits, the real images are halved at random into A and B; the split's
    `frechet_distance` is the distance between `len(B)` generated images (a seeded subset) and B, its `real_to_real`
    the distance between A and B: one extractor, equal set sizes, so a ratio of 1 means generated images as real as
    real ones. The features are computed once; the splits average out which real images fall in B. Datasets measured
    with the same student, real images and seed share their halves B (a paired comparison). A distance depends on its
    extractor: compare generators with one student only.

    Args:
        student, image_processor: a segmentation model trained on real data and its image processor.
        real_images (sequence of `PIL.Image.Image`): a real split's images (at least 4; not the pairs the generator
            or the student trained on, for an honest floor).
        generated_images (sequence of `PIL.Image.Image`): the generated images, at least half as many.
        num_splits (`int`, *optional*, defaults to 5): random halvings averaged.
        seed (`int`, *optional*, defaults to 0): split `s` draws its halves and subset from seed `seed + s`.
        batch_size (`int`, *optional*, defaults to 64): images per forward pass.

    Returns:
        `dict`: `frechet_distance` and `real_to_real` (means over the splits) with their `_std`, `ratio` (mean over
        mean), `per_split` (both distances of every split), `num_images` (per set), `num_splits`, `seed`.
    """
    if len(real_images) < 4:
        raise ValueError(f"`real_images` needs at least 4 images (two halves of 2), got {len(real_images)}.")
    half = len(real_images) // 2
    if len(generated_images) < half:
        raise ValueError(f"`generated_images` needs at least {half} images (half of the {len(real_images)} real "
                         f"ones), got {len(generated_images)}.")
    if isinstance(num_splits, bool) or not isinstance(num_splits, int) or num_splits < 1:
        raise ValueError(f"`num_splits` must be a positive integer, got {num_splits!r}.")
    real = student_image_features(student, image_processor, real_images, batch_size)
    generated = student_image_features(student, image_processor, generated_images, batch_size)
    per_split = []
    for split in range(num_splits):
        rng = np.random.default_rng(seed + split)
        order, subset = rng.permutation(len(real)), rng.permutation(len(generated))[:half]
        real_a, real_b = real[order[:half]], real[order[half:2 * half]]
        per_split.append({"frechet_distance": frechet_distance(generated[subset], real_b),
                          "real_to_real": frechet_distance(real_a, real_b)})
    report = {}
    for key in ("frechet_distance", "real_to_real"):
        values = np.array([split[key] for split in per_split])
        report[key], report[f"{key}_std"] = float(values.mean()), float(values.std(ddof=1)) if num_splits > 1 else 0.0
    report["ratio"] = report["frechet_distance"] / report["real_to_real"] if report["real_to_real"] > 0 \
        else float("inf")
    return {**report, "per_split": per_split, "num_images": half, "num_splits": num_splits, "seed": seed}


def save_generator_quality(report: Mapping[str, Any], pipeline_dir: str | os.PathLike,
                           split: str | None = None) -> str:
    """Write a [`measure_generator_quality`] report next to a saved generator: `quality.json` (atomically) and, when
    the generator has a card (`README.md`), its "Measured on real data" section (replaced on a new measure).

    Args:
        report (`Mapping`): the measures.
        pipeline_dir (`str` or `os.PathLike`): the saved pipeline's directory.
        split (`str`, *optional*): how the card names the split measured on (e.g. `"SOS sentinel test"`).

    Returns:
        `str`: the path of `quality.json`.
    """
    pipeline_dir = os.fspath(pipeline_dir)
    if not os.path.isdir(pipeline_dir):
        raise ValueError(f"`pipeline_dir` {pipeline_dir!r} is not a directory.")
    report = {**report, "split": split} if split else dict(report)
    path = os.path.join(pipeline_dir, QUALITY_NAME)
    tmp_path = f"{path}.{os.getpid()}.tmp"
    with open(tmp_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    os.replace(tmp_path, path)
    card_path = os.path.join(pipeline_dir, CARD_NAME)
    if os.path.isfile(card_path):
        add_quality_to_card(card_path, report)
    return path
