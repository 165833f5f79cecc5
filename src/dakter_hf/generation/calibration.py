"""Calibrated soft labels: a softmax temperature for a generator's soft labels, fitted on real labelled pairs.

A joint generator's soft labels are `softmax(logits / T)` of its label logits. [`fit_soft_label_temperature`] runs
[`DAKTerSegmentationPipeline`] once over a labelled real split (image `i` seeded with `seed + i`, temperature 1), keeps
the soft labels, and fits the T minimising their NLL against the masks ([`dakter_hf.metrics.fit_temperature`]:
`softmax(log p / T)` equals `softmax(logits / T)`, so no second segmentation pass is needed). The generator's soft
labels of a real image are p(label | image), the quantity the jointly generated labels stand for, so the same T
calibrates `DAKTerPipeline`'s soft labels. [`save_soft_label_temperature`] stores T as the pipeline's default
(`soft_label_temperature` in `model_index.json`, replaced atomically) and records it in the generator's card; every
DAKTer pipeline loaded from that directory then uses it when a call passes no temperature.

The fit is exact when the split is loaded at the model's sample size (as `dakter-calibrate` does); at another size the
soft labels are resized bilinearly before the fit.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..filesystem import write_text_atomic
from ..metrics import CalibrationMetrics, fit_temperature, temper_probabilities
from ..metrics.calibration import DEFAULT_TEMPERATURE_BOUNDS
from ..model_cards import CARD_NAME, add_temperature_to_card
from ..pipelines import DAKTerSegmentationPipeline
from .quality import _check_split, _split_rows
from .sampling import quiet_pipeline


__all__ = ["SoftLabelCalibration", "fit_soft_label_temperature", "save_soft_label_temperature"]

logger = logging.getLogger(__name__)

#: The file of a saved pipeline that holds its default soft-label temperature.
MODEL_INDEX_NAME = "model_index.json"
#: The pipeline classes whose `model_index.json` [`save_soft_label_temperature`] edits.
DAKTER_PIPELINE_CLASSES = ("DAKTerPipeline", "DAKTerMaskToImagePipeline", "DAKTerSegmentationPipeline")


@dataclass
class SoftLabelCalibration:
    """
    Output of [`fit_soft_label_temperature`].

    Args:
        temperature (`float`): the fitted soft-label temperature T.
        nll_before, nll_after (`float`): mean NLL per pixel (nats) of the soft labels at T = 1 and at the fitted T.
        ece_before, ece_after (`float`): their expected calibration error (equal-width bins, in [0, 1]).
        argmax_ece (`float`): the ECE of their argmax (one-hot; T changes no argmax), `1 - pixel accuracy`.
        num_pixels (`int`): labelled pixels the fit used.
        num_images (`int`): images segmented.
        at_bound (`bool`): the fitted T is at an end of the search interval (the optimum may lie beyond it).
        settings (`dict`): how the soft labels were drawn (steps, scheduler, conditioning, seed, ...).
    """

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    argmax_ece: float
    num_pixels: int
    num_images: int
    at_bound: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@torch.no_grad()
def fit_soft_label_temperature(
    pipe,
    dataset,
    num_inference_steps: int = 20,
    batch_size: int = 8,
    seed: int = 0,
    conditioning: str = "auto",
    num_bins: int = 15,
    bounds: tuple[float, float] = DEFAULT_TEMPERATURE_BOUNDS,
) -> SoftLabelCalibration:
    r"""
    Fit the soft-label temperature of a joint generator on a labelled real split by NLL.

    One segmentation pass: image `i` of `dataset` is segmented by [`DAKTerSegmentationPipeline`] (made from `pipe`
    with `from_pipe`, sharing its weights and scheduler) with seed `seed + i` and temperature 1, whatever default
    `pipe` stores; the fit and the before / after measures then use these stored probabilities.

    Args:
        pipe: a loaded DAKTer pipeline, on the device to use.
        dataset (`datasets.Dataset`): a labelled real split with `image` and `mask` columns, ideally at the model's
            sample size (e.g. `dakter_hf.data.load_sos(..., split="train", resolution=64)`), never the test split
            of a benchmark.
        num_inference_steps (`int`, *optional*, defaults to 20): scheduler steps of every segmentation.
        batch_size (`int`, *optional*, defaults to 8): images per pipeline call.
        seed (`int`, *optional*, defaults to 0): image `i` is segmented with seed `seed + i`.
        conditioning (`str`, *optional*, defaults to `"auto"`): `"exact"`, `"replacement"` or `"auto"` (see
            `dakter_hf.pipelines.conditional_sampling`).
        num_bins (`int`, *optional*, defaults to 15): equal-width bins of the ECE.
        bounds (`tuple[float, float]`, *optional*, defaults to `(0.01, 100.0)`): search interval of T.

    Returns:
        [`SoftLabelCalibration`]
    """
    _check_split(dataset)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    segmenter = pipe if isinstance(pipe, DAKTerSegmentationPipeline) else DAKTerSegmentationPipeline.from_pipe(pipe)
    soft_labels, masks = [], []
    with quiet_pipeline(segmenter):
        for start in tqdm(range(0, len(dataset), batch_size), desc="Segmenting the calibration split", unit="batch"):
            stop = min(start + batch_size, len(dataset))
            images, batch_masks = _split_rows(dataset, start, stop)
            generators = [torch.Generator().manual_seed(seed + i) for i in range(start, stop)]
            out = segmenter(images=images, generator=generators, num_inference_steps=num_inference_steps,
                            conditioning=conditioning, soft_label_temperature=1.0, output_type="pt")
            if isinstance(out.soft_labels, list):
                raise ValueError(f"`dataset` rows {start}..{stop - 1} hold images of different sizes; load the split "
                                 f"at one resolution.")
            soft_labels.append(out.soft_labels.float().cpu())
            masks.append(torch.from_numpy(batch_masks))
    soft_labels, masks = torch.cat(soft_labels), torch.cat(masks)

    temperature = fit_temperature(soft_labels, masks, bounds=bounds)
    before, after = (CalibrationMetrics(soft_labels.shape[1], num_bins=num_bins) for _ in range(2))
    before.update(soft_labels, masks)
    after.update(temper_probabilities(soft_labels, temperature), masks)
    before, after = before.compute(), after.compute()
    at_bound = any(abs(math.log(temperature / b)) < 1e-3 for b in bounds)
    if at_bound:
        logger.warning("The fitted soft-label temperature %.4g is at the end of the search interval %s.",
                       temperature, tuple(bounds))
    settings = {"num_inference_steps": num_inference_steps, "scheduler": type(segmenter.scheduler).__name__,
                "conditioning": segmenter.resolve_conditioning(conditioning, 10, 1), "seed": seed,
                "batch_size": batch_size, "num_bins": num_bins, "bounds": [float(b) for b in bounds],
                "previous_temperature": segmenter.config.get("soft_label_temperature"),
                "resolution": list(soft_labels.shape[-2:])}
    return SoftLabelCalibration(
        temperature=temperature, nll_before=before["nll"], nll_after=after["nll"], ece_before=before["ece"],
        ece_after=after["ece"], argmax_ece=before["argmax_ece"], num_pixels=before["num_pixels"],
        num_images=len(dataset), at_bound=at_bound, settings=settings)


def save_soft_label_temperature(pipeline_dir: str | os.PathLike, temperature: float,
                                calibration: SoftLabelCalibration | dict | None = None,
                                split: str | None = None) -> str:
    """Store `temperature` as the default soft-label temperature of the pipeline saved in `pipeline_dir`.

    `model_index.json` gets `soft_label_temperature` and is replaced in one rename (readers see the old or the new
    file, never a half-written one); nothing else in it changes. When the directory has a card (`README.md`), its
    "Soft-label temperature" section (with the fit's measures when `calibration` is given) is written or replaced.

    Args:
        pipeline_dir (`str` or `os.PathLike`): a saved DAKTer pipeline's directory.
        temperature (`float`): a finite number > 0.
        calibration ([`SoftLabelCalibration`] or `dict`, *optional*): the fit, for the card.
        split (`str`, *optional*): how the card names the split the fit used.

    Returns:
        `str`: the path of `model_index.json`.
    """
    pipeline_dir = os.fspath(pipeline_dir)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or not temperature > 0:
        raise ValueError(f"`temperature` must be a finite number > 0, got {temperature!r}.")
    path = os.path.join(pipeline_dir, MODEL_INDEX_NAME)
    if not os.path.isfile(path):
        raise ValueError(f"{pipeline_dir!r} is not a saved pipeline directory: it has no {MODEL_INDEX_NAME}.")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} cannot be read as JSON ({error}).") from error
    if not isinstance(config, dict) or config.get("_class_name") not in DAKTER_PIPELINE_CLASSES:
        name = config.get("_class_name") if isinstance(config, dict) else None
        raise ValueError(f"{path} is not the index of a DAKTer pipeline (its _class_name is {name!r}, expected one "
                         f"of {DAKTER_PIPELINE_CLASSES}).")
    config["soft_label_temperature"] = float(temperature)
    # the layout diffusers' `save_config` writes
    write_text_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    card_path = os.path.join(pipeline_dir, CARD_NAME)
    if os.path.isfile(card_path):
        if isinstance(calibration, SoftLabelCalibration):
            calibration = calibration.to_dict()
        add_temperature_to_card(card_path, float(temperature), calibration, split)
    return path
