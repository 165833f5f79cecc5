"""The card of a DAKTer generator: written by the training run ([`save_joint_diffusion_model_card`]) or, for a
pipeline pushed without one, built from the pipeline ([`make_pipeline_card`])."""

import os
from collections.abc import Mapping
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from ..labels import normalize_id2label
from .common import DEFAULT_LICENSE, QUALITY_KEY, _describe_data, dataset_id


_LOAD_SNIPPET = """```python
import torch
from dakter_hf import DAKTerPipeline

pipe = DAKTerPipeline.from_pretrained("{path}")
out = pipe(batch_size=4, num_inference_steps=50, generator=torch.Generator().manual_seed(0), output_type="np")
out.images.shape       # (4, {size}, {size}, 1), values in [0, 1]
out.soft_labels.shape  # (4, {size}, {size}, {num_classes}), per-pixel class probabilities
out.labels.shape       # (4, {size}, {size}), argmax class indices
```"""


def joint_diffusion_model_card(
    unet_config: Mapping[str, Any],
    args: Mapping[str, Any],
    num_train_examples: int,
    id2label: Mapping[int, str],
    global_step: int,
    final_losses: Mapping[str, float],
    num_parameters: int,
    load_path: str = "path/to/this/directory",
    has_loss_curve: bool = True,
    license: str = DEFAULT_LICENSE,
    quality: Mapping[str, float] | None = None,
) -> str:
    """
    The README.md of a trained joint diffusion pipeline.

    Args:
        unet_config (`Mapping`): the saved `JointUNet2DModel` config.
        args (`Mapping`): the training arguments (`vars(args)` of `examples/train_joint_diffusion.py`).
        num_train_examples (`int`): size of the training split.
        id2label (`Mapping[int, str]`): class names.
        global_step (`int`): optimisation steps done.
        final_losses (`Mapping[str, float]`): mean losses over the last logged steps (from `JsonlLossLog.final_means`).
        num_parameters (`int`): number of model parameters.
        load_path (`str`, *optional*): the local path or Hub id shown in the loading snippet.
        has_loss_curve (`bool`, *optional*, defaults to `True`): whether `loss_curve.png` sits next to the card.
        license (`str`, *optional*, defaults to [`DEFAULT_LICENSE`]): the licence in the metadata.
        quality (`Mapping[str, float]`, *optional*): generator quality measures computed for this model, written
            under [`QUALITY_KEY`] and in the text.

    Returns:
        `str`: the card, with YAML metadata.
    """
    metadata = ModelCardData(library_name="diffusers", pipeline_tag="unconditional-image-generation",
                             license=license, datasets=[dataset_id(args)],
                             tags=["dakter", "sar", "oil-spill", "segmentation", "joint-diffusion",
                                   "diffusers:DAKTerPipeline"])
    if quality:
        metadata[QUALITY_KEY] = {k: float(v) for k, v in quality.items()}
    size = unet_config["sample_size"]
    size = size if isinstance(size, int) else size[0]
    label_scale = unet_config["label_scale"]
    scale_source = ("estimated as the RMS of the normalised training images (`--label_scale auto`)"
                    if args.get("label_scale") == "auto" else "given (`--label_scale`)")
    classes = ", ".join(f"{i}: {name}" for i, name in sorted(id2label.items()))
    crop = f", trained on random {args['crop_size']}x{args['crop_size']} crops" if args.get("crop_size") else ""
    if final_losses:
        n = final_losses.get("num_steps_averaged", 0)
        losses = (f"Training losses, mean over the last {n} steps: total {final_losses['loss']:.4f}, image "
                  f"{final_losses['image_loss']:.4f}, label cross-entropy {final_losses['label_loss']:.4f}.")
    else:
        losses = "No training losses were logged."
    lines = [
        "---", metadata.to_yaml(), "---", "",
        "# DAKTer joint image + soft-label diffusion model", "",
        "A `JointUNet2DModel` that jointly generates a SAR image and per-pixel class probabilities (soft labels), "
        "trained with `examples/train_joint_diffusion.py` of `dakter_hf`.", "",
        "## Training", "",
        f"- Data: {_describe_data(args, num_train_examples)}",
        f"- Classes ({unet_config['num_classes']}): {classes}",
        f"- Resolution: {size}x{size}{crop}",
        f"- Balancing factor b (`label_scale`): {label_scale:.6f}, {scale_source}",
        f"- Architecture: `{unet_config['architecture']}`, preset `{args.get('model_size')}`, block_out_channels "
        f"{list(unet_config['block_out_channels'])}, {num_parameters / 1e6:.2f}M parameters",
        f"- Image prediction: `{unet_config['prediction_type']}`; label: logits with cross-entropy weight "
        f"{args.get('ce_weight')}",
        f"- Noise schedule: DDPM, {args.get('num_train_timesteps')} training timesteps{_describe_timesteps(args)}",
        f"- Steps: {global_step}, batch size {args.get('train_batch_size')} per device, gradient accumulation "
        f"{args.get('gradient_accumulation_steps')}, learning rate {args.get('learning_rate')} "
        f"({args.get('lr_scheduler')}, {args.get('lr_warmup_steps')} warm-up steps), EMA weights: "
        f"{'yes' if args.get('use_ema') else 'no'}, seed {args.get('seed')}",
        "", "## Measured", "", losses,
    ]
    if has_loss_curve:
        lines += ["", "![training losses](loss_curve.png)"]
    if quality:
        lines += ["", "Generator quality measures: " + ", ".join(f"{k} {float(v):.4f}" for k, v in quality.items())
                  + "."]
    else:
        lines += ["", "No generation quality (FID) or downstream segmentation results were measured for this model "
                  "by the training run."]
    lines += [
        "",
        "## Usage", "",
        _LOAD_SNIPPET.format(path=load_path, size=size, num_classes=unet_config["num_classes"]), "",
    ]
    return "\n".join(lines)


def _describe_timesteps(args: Mapping[str, Any]) -> str:
    """', per-modality timesteps (...)' for a run with `--per_modality_timesteps`, '' otherwise."""
    sampling = args.get("timestep_sampling")
    if not args.get("per_modality_timesteps") or sampling is None:
        return ""
    return (f"; per-modality timesteps: clean image {sampling.clean_image:g}, clean label {sampling.clean_label:g}, "
            f"independent {sampling.independent:g}, joint {sampling.joint:g} of the samples")


def save_joint_diffusion_model_card(output_dir: str | os.PathLike, repo_id: str | None = None, **kwargs) -> str:
    """
    Write [`joint_diffusion_model_card`] to `output_dir/README.md`.

    Args:
        output_dir (`str`): the saved pipeline's directory.
        repo_id (`str`, *optional*): the Hub repository id, shown in the loading snippet instead of a local path.
        **kwargs: the other arguments of [`joint_diffusion_model_card`].

    Returns:
        `str`: the path of the card.
    """
    kwargs.setdefault("load_path", repo_id or str(output_dir))
    kwargs.setdefault("has_loss_curve", os.path.exists(os.path.join(output_dir, "loss_curve.png")))
    path = os.path.join(output_dir, "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(joint_diffusion_model_card(**kwargs))
    return path


def make_pipeline_card(pipe, id2label: Mapping[int, str], repo_id: str | None = None,
                       license: str = DEFAULT_LICENSE):
    """The model card (`README.md`) of a DAKTer pipeline without a training card: metadata (licence, task, `id2label`
    and `label_scale`) and usage."""
    config = pipe.unet.config
    id2label = normalize_id2label(id2label, config.num_classes)
    name = repo_id or "path/to/pipeline"
    data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        license=license,
        tags=["dakter", "sar", "oil-spill", "image-segmentation", "diffusers", "joint-diffusion"],
        id2label={str(k): v for k, v in id2label.items()},
        label_scale=float(config.label_scale),
    )
    size = config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    stored = pipe.config.get("soft_label_temperature")
    if stored is not None:
        data["soft_label_temperature"] = float(stored)
    temperature = "" if stored is None else (
        f" Default soft-label temperature T = {float(stored):.4g} (fitted on real labelled pairs, stored in "
        "`model_index.json`): the soft labels are `softmax(logits / T)`.")
    text = f"""
# DAKTer joint SAR image / soft-label generator

A [DAKTer](https://arxiv.org/abs/2412.08116) joint diffusion model (`JointUNet2DModel`, architecture
`{config.architecture}`): it generates {height}x{width} SAR images together with per-pixel soft labels over
{config.num_classes} classes ({", ".join(f"{k} = {v}" for k, v in id2label.items())}). Balancing factor b
(`label_scale`) = {config.label_scale}; scheduler `{type(pipe.scheduler).__name__}`.{temperature}

## Usage

```python
from dakter_hf import DAKTerPipeline

pipe = DAKTerPipeline.from_pretrained("{name}")
out = pipe(batch_size=4, num_inference_steps=50, output_type="np")
```

Generate a dataset for student training: `dakter-generate --pipeline {name} --num_samples 1000 --output_dir generated`.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")


_QUALITY_BEGIN = "<!-- dakter-generator-quality -->"
_QUALITY_END = "<!-- /dakter-generator-quality -->"


def _percent(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.2f}"


def quality_metadata(report: Mapping[str, Any]) -> dict[str, float]:
    """The headline numbers of a [`dakter_hf.generation.measure_generator_quality`] report, as the flat
    [`QUALITY_KEY`] metadata of a generator's card (which the cards of its generated datasets copy)."""
    alignment, calibration, fidelity = report["alignment"], report["calibration"], report.get("mask_fidelity")
    numbers = {"alignment_mean_iou": alignment.get("mean_iou"), "calibration_ece": calibration.get("ece"),
               "calibration_argmax_ece": calibration.get("argmax_ece"), "calibration_nll": calibration.get("nll")}
    if fidelity:
        numbers.update(mask_fidelity_mean_iou=fidelity["generated"].get("mean_iou"),
                       mask_fidelity_real_mean_iou=fidelity["real"].get("mean_iou"),
                       mask_fidelity_ratio=fidelity.get("mean_iou_ratio"))
    return {k: float(v) for k, v in numbers.items() if v is not None}


def generator_quality_section(report: Mapping[str, Any]) -> str:
    """The card section of a generator's measures on real data ([`dakter_hf.generation.measure_generator_quality`]):
    alignment, calibration and mask fidelity, with the settings they were measured with."""
    alignment, calibration, fidelity = report["alignment"], report["calibration"], report.get("mask_fidelity")
    settings = report.get("settings", {})
    split = report.get("split") or "a labelled real split"
    lines = [
        _QUALITY_BEGIN, "## Measured on real data", "",
        f"On {split} ({report.get('num_images')} images), with `dakter_hf.generation.measure_generator_quality` "
        f"({settings.get('conditioning')} conditioning, {settings.get('scheduler')}, "
        f"{settings.get('num_inference_steps')} steps, {settings.get('num_samples')} segmentation draw(s) per image, "
        f"seed {settings.get('seed')}):", "",
        "| measure | value |", "|---|---|",
        f"| alignment: mIoU of the generator as a segmenter (%) | {_percent(alignment.get('mean_iou'))} |",
        f"| calibration: ECE of its soft labels ({settings.get('num_bins')} equal-width bins, %) | "
        f"{_percent(calibration.get('ece'))} |",
        f"| calibration: ECE of their argmax (one-hot, %) | {_percent(calibration.get('argmax_ece'))} |",
        f"| calibration: NLL of its soft labels (nats per pixel) | {calibration.get('nll', float('nan')):.4f} |",
    ]
    if fidelity:
        lines += [
            f"| mask fidelity: real-data student's mIoU on images drawn for the masks (%) | "
            f"{_percent(fidelity['generated'].get('mean_iou'))} |",
            f"| the same student's mIoU on the real images (%) | {_percent(fidelity['real'].get('mean_iou'))} |",
            f"| mask fidelity ratio (drawn / real) | {fidelity['mean_iou_ratio']:.3f} |",
        ]
    else:
        lines += ["", "Mask fidelity was not measured (no real-data student was given)."]
    lines += ["", "Full report: `quality.json`.", _QUALITY_END]
    return "\n".join(lines)


def add_quality_to_card(card_path: str | os.PathLike, report: Mapping[str, Any]) -> str:
    """Put a generator's measures into its card (`README.md`): [`quality_metadata`] under [`QUALITY_KEY`] in the
    metadata, and [`generator_quality_section`] in the text (replacing the section of an earlier measure, else
    appended). The file is replaced atomically. Returns the path."""
    return _put_section(card_path, _QUALITY_BEGIN, _QUALITY_END, generator_quality_section(report),
                        {QUALITY_KEY: quality_metadata(report)})


def _put_section(card_path: str | os.PathLike, begin_marker: str, end_marker: str, section: str,
                 metadata: Mapping[str, Any]) -> str:
    """Write `metadata` into a card's metadata and `section` (delimited by the two markers) into its text, replacing
    the section of an earlier call, else appended; the file is replaced atomically. Returns the path."""
    card = ModelCard.load(card_path, ignore_metadata_errors=True)
    for key, value in metadata.items():
        card.data[key] = value
    text = card.text
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin >= 0 and end > begin:
        text = text[:begin] + section + text[end + len(end_marker):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp_path = f"{card_path}.{os.getpid()}.tmp"
    with open(tmp_path, "w", encoding="utf-8") as f:
        f.write(f"---\n{card.data.to_yaml()}\n---\n{text}")
    os.replace(tmp_path, card_path)
    return os.fspath(card_path)


_TEMPERATURE_BEGIN = "<!-- dakter-soft-label-temperature -->"
_TEMPERATURE_END = "<!-- /dakter-soft-label-temperature -->"


def temperature_section(temperature: float, calibration: Mapping[str, Any] | None = None,
                        split: str | None = None) -> str:
    """The card section of a generator's default soft-label temperature (and of its fit, when given: a
    [`dakter_hf.generation.SoftLabelCalibration`] as a dict)."""
    lines = [_TEMPERATURE_BEGIN, "## Soft-label temperature", "",
             f"This pipeline's soft labels are `softmax(logits / T)` with the stored default T = {temperature:.4g} "
             "(`soft_label_temperature` in `model_index.json`; a call's `soft_label_temperature` overrides it)."]
    if calibration:
        settings = calibration.get("settings", {})
        lines += [
            "", f"T was fitted by NLL on {split or 'a labelled real split'} ({calibration.get('num_images')} images, "
            f"{calibration.get('num_pixels')} pixels) with `dakter-calibrate` (the generator as a segmenter, "
            f"{settings.get('conditioning')} conditioning, {settings.get('scheduler')}, "
            f"{settings.get('num_inference_steps')} steps, seed {settings.get('seed')}):", "",
            "| soft labels | NLL (nats per pixel) | ECE (%) |", "|---|---|---|",
            f"| T = 1 | {calibration['nll_before']:.4f} | {_percent(calibration.get('ece_before'))} |",
            f"| T = {temperature:.4g} | {calibration['nll_after']:.4f} | {_percent(calibration.get('ece_after'))} |",
            "", f"ECE of their argmax (one-hot): {_percent(calibration.get('argmax_ece'))}%.",
        ]
    lines.append(_TEMPERATURE_END)
    return "\n".join(lines)


def add_temperature_to_card(card_path: str | os.PathLike, temperature: float,
                            calibration: Mapping[str, Any] | None = None, split: str | None = None) -> str:
    """Put a generator's default soft-label temperature into its card (`README.md`): `soft_label_temperature` in the
    metadata and [`temperature_section`] in the text (replacing an earlier one). Returns the path."""
    return _put_section(card_path, _TEMPERATURE_BEGIN, _TEMPERATURE_END,
                        temperature_section(temperature, calibration, split),
                        {"soft_label_temperature": float(temperature)})
