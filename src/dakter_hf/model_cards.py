"""Model and dataset cards (`README.md`) written next to saved DAKTer artefacts: the trained generator
([`joint_diffusion_model_card`]), a pipeline pushed on its own ([`make_pipeline_card`]) and a generated dataset
([`make_dataset_card`]).

A card states what was run and what was measured during that run, nothing else: no quality claims are made that
the run did not measure.
"""

import json
import os
from collections.abc import Mapping
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

from .labels import normalize_id2label


#: File name of every card.
CARD_NAME = "README.md"

_LOAD_SNIPPET = """```python
import torch
from dakter_hf import DAKTerPipeline

pipe = DAKTerPipeline.from_pretrained("{path}")
out = pipe(batch_size=4, num_inference_steps=50, generator=torch.Generator().manual_seed(0), output_type="np")
out.images.shape       # (4, {size}, {size}, 1), values in [0, 1]
out.soft_labels.shape  # (4, {size}, {size}, {num_classes}), per-pixel class probabilities
out.labels.shape       # (4, {size}, {size}), argmax class indices
```"""


def _describe_data(args: Mapping[str, Any], num_train_examples: int) -> str:
    dataset = args.get("dataset", "?")
    parts = [f"`{dataset}`"]
    if args.get("sensor"):
        parts.append(f"sensor `{args['sensor']}`")
    if args.get("data_dir"):
        parts.append(f"from `{os.path.basename(os.path.normpath(str(args['data_dir'])))}`")
    text = ", ".join(parts) + f", training split: {num_train_examples} examples"
    if dataset == "simulated":
        text += " (synthetic scenes from `dakter_hf.data.simulate_sar_scenes`, not real SAR data)"
    return text


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

    Returns:
        `str`: the card, with YAML metadata.
    """
    metadata = ModelCardData(library_name="diffusers", pipeline_tag="unconditional-image-generation",
                             tags=["dakter", "sar", "oil-spill", "segmentation", "joint-diffusion",
                                   "diffusers:DAKTerPipeline"])
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
        f"- Noise schedule: DDPM, {args.get('num_train_timesteps')} training timesteps",
        f"- Steps: {global_step}, batch size {args.get('train_batch_size')} per device, gradient accumulation "
        f"{args.get('gradient_accumulation_steps')}, learning rate {args.get('learning_rate')} "
        f"({args.get('lr_scheduler')}, {args.get('lr_warmup_steps')} warm-up steps), EMA weights: "
        f"{'yes' if args.get('use_ema') else 'no'}, seed {args.get('seed')}",
        "", "## Measured", "", losses,
    ]
    if has_loss_curve:
        lines += ["", "![training losses](loss_curve.png)"]
    lines += [
        "", "No generation quality (FID) or downstream segmentation results were measured for this model by the "
        "training run.", "",
        "## Usage", "",
        _LOAD_SNIPPET.format(path=load_path, size=size, num_classes=unet_config["num_classes"]), "",
    ]
    return "\n".join(lines)


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


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def make_dataset_card(
    settings: Mapping[str, Any],
    num_samples: int,
    pipeline_name: str | None = None,
    soft_label_dtype: str = "uint8",
    repo_id: str | None = None,
):
    """The card (`README.md`) of a generated dataset: YAML metadata with the generation settings, and a text saying
    the samples are synthetic, how they were made, how to load them and how to regenerate any row.

    Args:
        settings (`dict`): from [`generation_settings`].
        num_samples (`int`): number of rows.
        pipeline_name (`str`, *optional*): the generator's directory or Hub id.
        soft_label_dtype (`str`, *optional*): storage type of `soft_label`.
        repo_id (`str`, *optional*): the Hub id the card is for (used in the loading example).

    Returns:
        `huggingface_hub.DatasetCard`
    """
    seed = settings["seed"]
    id2label = {int(k): v for k, v in settings["id2label"].items()}
    generator = pipeline_name or "an unnamed DAKTer pipeline"
    layout = settings.get("unet_memory_format", "contiguous")  # absent from settings when contiguous
    dakter = {
        "synthetic": True,
        "generator": generator,
        "label_scale": settings["label_scale"],
        "scheduler": settings["scheduler"],
        "num_inference_steps": settings["num_inference_steps"],
        "batch_size": settings["batch_size"],
        "soft_label_temperature": settings["soft_label_temperature"],
        "eta": settings["eta"],
        "seed": seed,
        "seeds": f"row i uses seed {seed} + i ({seed}..{seed + num_samples - 1})",
        "soft_label_dtype": soft_label_dtype,
        "unet_fingerprint": settings["unet_fingerprint"],
        "unet_memory_format": layout,
    }
    data = DatasetCardData(
        pretty_name="DAKTer synthetic SAR image / soft-label pairs",
        task_categories=["image-segmentation"],
        tags=["synthetic", "sar", "oil-spill", "dakter", "knowledge-distillation", "soft-labels"],
        size_categories=[_size_category(num_samples)],
        id2label={str(k): v for k, v in id2label.items()},
        dakter=dakter,
    )
    load_line = (f'ds = load_dataset("{repo_id}", split="train")' if repo_id
                 else 'ds = load_from_disk("path/to/this/directory")')
    classes = ", ".join(f"{k} = {v}" for k, v in id2label.items())
    decoding = ("quantised to uint8: the K values of a pixel sum to exactly 255 (largest-remainder rounding), "
                "value / 255 is within 1/255 of the generated probability" if soft_label_dtype == "uint8"
                else f"stored as {soft_label_dtype}")
    layout_note = {
        "contiguous": "",
        "channels_last": "\n- UNet convolution kernels in channels-last memory layout (`pipe.unet.to(memory_format="
                         "torch.channels_last)`); regenerate with the same layout to reproduce the rows bit for bit",
    }.get(layout, f"\n- UNet convolution kernels in {layout} memory layouts; regenerate with the same layouts to "
                  "reproduce the rows bit for bit")
    text = f"""
# DAKTer synthetic SAR image / soft-label pairs

**These samples are synthetic.** Every row was generated by a DAKTer joint diffusion model ({generator}): a SAR
image and, per pixel, a class-probability map (a soft label) sampled together. They are meant to augment real
training data of a student segmentation model (cross-entropy on real pairs, knowledge distillation on these soft
labels), not to stand for real observations.

## Content

{num_samples} rows, classes: {classes}.

| column | content |
|---|---|
| `image` | generated image, 8-bit greyscale (`datasets.Image`, mode L) |
| `soft_label` | per-pixel class probabilities, shape (K, H, W), {decoding} |
| `label` | argmax of the soft label, class indices (`datasets.Image`, mode L); carries `id2label` |
| `seed` | the seed of the row: row i was generated from seed {seed} + i |

## Generation

- generator: `{generator}` (unet weights sha256 `{settings["unet_fingerprint"][:16]}...`)
- balancing factor b (`label_scale`): {settings["label_scale"]}
- scheduler: `{settings["scheduler"]}`, {settings["num_inference_steps"]} inference steps, eta {settings["eta"]}
- soft-label temperature: {settings["soft_label_temperature"]}
- seeds: row i uses seed {seed} + i ({seed}..{seed + num_samples - 1}), each with its own `torch.Generator`;
  batches of {settings["batch_size"]}{layout_note}

## Loading

```python
from datasets import load_dataset, load_from_disk
from dakter_hf import decode_soft_labels

{load_line}
ds = ds.with_format("numpy")
probs = decode_soft_labels(ds[0]["soft_label"], dtype=ds.features)  # float32 (K, H, W), sums to 1 per pixel
```

Any row can be regenerated with the same pipeline and settings:
`dakter_hf.generation.generate_dataset(pipe, [i], seed={seed}, batch_size={settings["batch_size"]},
num_inference_steps={settings["num_inference_steps"]}, soft_label_temperature={settings["soft_label_temperature"]},
eta={settings["eta"]})` with the scheduler above.

## Full generation settings

```json
{json.dumps({k: v for k, v in settings.items()}, indent=2, sort_keys=True)}
```
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{text}")


def make_pipeline_card(pipe, id2label: Mapping[int, str], repo_id: str | None = None):
    """The model card (`README.md`) of a DAKTer pipeline: metadata (with `id2label` and `label_scale`) and usage."""
    config = pipe.unet.config
    id2label = normalize_id2label(id2label, config.num_classes)
    name = repo_id or "path/to/pipeline"
    data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        tags=["dakter", "sar", "oil-spill", "image-segmentation", "diffusers", "joint-diffusion"],
        id2label={str(k): v for k, v in id2label.items()},
        label_scale=float(config.label_scale),
    )
    size = config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    text = f"""
# DAKTer joint SAR image / soft-label generator

A [DAKTer](https://arxiv.org/abs/2412.08116) joint diffusion model (`JointUNet2DModel`, architecture
`{config.architecture}`): it generates {height}x{width} SAR images together with per-pixel soft labels over
{config.num_classes} classes ({", ".join(f"{k} = {v}" for k, v in id2label.items())}). Balancing factor b
(`label_scale`) = {config.label_scale}; scheduler `{type(pipe.scheduler).__name__}`.

## Usage

```python
from dakter_hf import DAKTerPipeline

pipe = DAKTerPipeline.from_pretrained("{name}")
out = pipe(batch_size=4, num_inference_steps=50, output_type="np")
```

Generate a dataset for student training: `dakter-generate --pipeline {name} --num_samples 1000 --output_dir generated`.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")
