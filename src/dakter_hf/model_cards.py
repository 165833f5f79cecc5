"""Model and dataset cards (`README.md`) written next to saved DAKTer artefacts: the trained generator
([`joint_diffusion_model_card`]), a pipeline pushed on its own ([`make_pipeline_card`]) and a generated dataset
([`make_dataset_card`]), and a distilled student ([`make_student_card`]).

A card states what was run and what was measured during that run, nothing else: no quality claims are made that
the run did not measure.
"""

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from .labels import normalize_id2label


#: File name of every card.
CARD_NAME = "README.md"
#: Licence written in the cards' metadata unless another is given: the licence of dakter_hf's own code. Pass
#: `license=` to record the licence a trained artefact inherits from its training data.
DEFAULT_LICENSE = "apache-2.0"
#: Metadata key of the generator quality measures (e.g. alignment, calibration, mask fidelity, each a number) in a
#: generator's card; a generated dataset's card copies them from its generator.
QUALITY_KEY = "dakter_quality"

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


def dataset_id(args: Mapping[str, Any]) -> str:
    """A short name of the real training data of a run, for the cards' `datasets` / `source_datasets` metadata:
    `sos-sentinel`, `osd`, the folder name of `--dataset folder`, `dakter-simulated`."""
    dataset = str(args.get("dataset") or "unknown")
    if dataset == "simulated":
        return "dakter-simulated"
    if dataset == "folder" and args.get("data_dir"):
        return os.path.basename(os.path.normpath(str(args["data_dir"])))
    return f"{dataset}-{args['sensor']}" if args.get("sensor") else dataset


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
        f"- Noise schedule: DDPM, {args.get('num_train_timesteps')} training timesteps",
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
    generator_metadata: Mapping[str, Any] | None = None,
):
    """The card (`README.md`) of a generated dataset: YAML metadata with the generation settings, and a text saying
    the samples are synthetic, how they were made, how to load them and how to regenerate any row.

    The metadata the Hub indexes: `task_categories: image-segmentation`, the size category,
    `annotations_creators: machine-generated`, and, from the generator's own card (`generator_metadata`, read with
    [`read_card_metadata`]), its licence (else [`DEFAULT_LICENSE`]), its training data as `source_datasets` and its
    quality measures ([`QUALITY_KEY`]) when they were computed.

    Args:
        settings (`dict`): from [`generation_settings`].
        num_samples (`int`): number of rows.
        pipeline_name (`str`, *optional*): the generator's directory or Hub id.
        soft_label_dtype (`str`, *optional*): storage type of `soft_label`.
        repo_id (`str`, *optional*): the Hub id the card is for (used in the loading example).
        generator_metadata (`Mapping`, *optional*): the metadata of the generator's card.

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
    generator_metadata = dict(generator_metadata or {})
    sources = generator_metadata.get("datasets") or []
    quality = generator_metadata.get(QUALITY_KEY) or {}
    data = DatasetCardData(
        pretty_name="DAKTer synthetic SAR image / soft-label pairs",
        license=generator_metadata.get("license") or DEFAULT_LICENSE,
        task_categories=["image-segmentation"],
        annotations_creators=["machine-generated"],
        source_datasets=[sources] if isinstance(sources, str) else list(sources),
        tags=["synthetic", "sar", "oil-spill", "dakter", "knowledge-distillation", "soft-labels"],
        size_categories=[_size_category(num_samples)],
        id2label={str(k): v for k, v in id2label.items()},
        dakter=dakter,
    )
    if quality:
        data[QUALITY_KEY] = dict(quality)
    quality_text = ("Generator quality measured on its evaluation data: "
                    + ", ".join(f"{k} {float(v):.4f}" for k, v in quality.items()) + "." if quality else
                    "No quality measure of the generator was recorded in its card.")
    sources_text = ", ".join(f"`{name}`" for name in data.source_datasets) or "not recorded in its card"
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
- the generator's training data: {sources_text}
- soft-label temperature: {settings["soft_label_temperature"]}
- seeds: row i uses seed {seed} + i ({seed}..{seed + num_samples - 1}), each with its own `torch.Generator`;
  batches of {settings["batch_size"]}{layout_note}

{quality_text}

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


def read_card_metadata(directory: str | os.PathLike | None) -> dict[str, Any]:
    """The YAML metadata of the card (`README.md`) in `directory` as a dict; `{}` when there is none (no directory,
    no card, or a card without metadata)."""
    path = os.path.join(os.fspath(directory), CARD_NAME) if directory and os.path.isdir(directory) else None
    if path is None or not os.path.isfile(path):
        return {}
    return ModelCard.load(path, ignore_metadata_errors=True).data.to_dict()


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


_STUDENT_SNIPPET = """```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

processor = AutoImageProcessor.from_pretrained("{path}")
model = AutoModelForSemanticSegmentation.from_pretrained("{path}")
image = Image.open("scene.png").convert("L")  # a single-channel (greyscale) SAR image
with torch.no_grad():
    outputs = model(**processor(images=image, return_tensors="pt"))
mask = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]  # class ids
```"""


def make_student_card(
    id2label: Mapping[int, str],
    metrics: Mapping[str, float] | None,
    args: Mapping[str, Any],
    step: int,
    generated_ratio: float | None = None,
    num_train_real: int | None = None,
    num_train_generated: int | None = None,
    base_model: str | None = None,
    license: str = DEFAULT_LICENSE,
    repo_id: str | None = None,
):
    """
    The model card (`README.md`) of a distilled student, written next to its weights.

    The metadata the Hub indexes: `pipeline_tag: image-segmentation`, `library_name: transformers`, the licence,
    `base_model` when the student was fine-tuned from a pretrained checkpoint, the real and generated training
    datasets, and a `model-index` with the mIoU and the IoU of each class on the evaluation split (classes whose
    IoU is undefined on that split are left out).

    Args:
        id2label (`Mapping[int, str]`): class names.
        metrics (`Mapping[str, float]`, *optional*): the evaluation of this checkpoint (`mean_iou`, `iou_<name>`, ...
            from [`~dakter_hf.distill.evaluate_student`]); `None` if it was not evaluated.
        args (`Mapping`): the run's arguments (`vars(args)` of `dakter distill`): `dataset`, `sensor`, `data_dir`,
            `student`, `mode`, `generated_dataset`, `max_train_steps`, `eval_split`, `resolution`, `seed`, ...
        step (`int`): the optimisation step of this checkpoint.
        generated_ratio (`float`, *optional*): the share of generated pairs per batch used.
        num_train_real (`int`, *optional*), num_train_generated (`int`, *optional*): training set sizes.
        base_model (`str`, *optional*): the pretrained checkpoint fine-tuned (a Hub id or directory).
        license (`str`, *optional*, defaults to [`DEFAULT_LICENSE`]): the licence in the metadata.
        repo_id (`str`, *optional*): the Hub id the card is for (used in the usage snippet).

    Returns:
        `huggingface_hub.ModelCard`
    """
    id2label = {int(k): v for k, v in id2label.items()}
    real = dataset_id(args)
    generated = args.get("generated_dataset") if args.get("mode", "real") != "real" else None
    split = args.get("eval_split", "test")
    results = []
    scores = {"mean_iou": ("mean_iou", "mIoU")} | {f"iou_{n}": ("iou", f"IoU {n}") for n in id2label.values()}
    for key, (metric_type, metric_name) in scores.items():
        value = (metrics or {}).get(key)
        if value is not None and math.isfinite(float(value)):
            results.append(EvalResult(task_type="image-segmentation", task_name="Semantic segmentation",
                                      dataset_type=real, dataset_name=real, dataset_split=split,
                                      metric_type=metric_type, metric_name=metric_name,
                                      metric_value=round(float(value), 4)))
    model_name = (repo_id or "dakter-student").split("/")[-1]
    data = ModelCardData(
        model_name=model_name, license=license, library_name="transformers", pipeline_tag="image-segmentation",
        base_model=base_model, datasets=[real] + ([os.fspath(generated)] if generated else []),
        tags=["dakter", "sar", "oil-spill", "segformer", "knowledge-distillation", "image-segmentation"],
        metrics=["mean_iou"], eval_results=results or None,
    )
    mode = args.get("mode", "real")
    mode_text = {"real": "real pairs only (cross-entropy): the baseline without generated data",
                 "hard": "real pairs (cross-entropy) and generated pairs with their argmax labels (cross-entropy)",
                 "soft": "real pairs (cross-entropy) and generated pairs distilled from their soft labels (KL, "
                         f"temperature {args.get('kd_temperature', 1.0)})"}.get(mode, mode)
    training = [f"- real data: `{real}`" + (f", {num_train_real} pairs" if num_train_real is not None else ""),
                f"- mode `{mode}`: {mode_text}"]
    if generated:
        ratio = f"{generated_ratio:.3f}" if generated_ratio is not None else str(args.get("generated_ratio"))
        training.append(f"- generated data: `{generated}`" + (f", {num_train_generated} pairs" if num_train_generated
                                                               is not None else "") + f"; generated share per batch "
                        f"{ratio}")
    training += [f"- student: `{args.get('student')}`" + (f" (fine-tuned from `{base_model}`)" if base_model else
                                                          " (random initialisation)")
                 + f", resolution {args.get('resolution')}",
                 f"- {args.get('max_train_steps')} steps of batch {args.get('train_batch_size')}, learning rate "
                 f"{args.get('learning_rate')}, augmentation (flips / 90-degree rotations): "
                 f"{'yes' if args.get('augment') else 'no'}, seed {args.get('seed')}; this checkpoint: step {step}"]
    if results:
        rows = "\n".join(f"| {r.metric_name} | {r.metric_value * 100:.2f} |" for r in results)
        measured = f"On the `{split}` split of `{real}` (percent):\n\n| metric | value |\n|---|---|\n{rows}"
    else:
        measured = "This checkpoint was not evaluated."
    classes = ", ".join(f"{k} = {v}" for k, v in sorted(id2label.items()))
    text = "\n".join([
        "", f"# {model_name}", "",
        f"A SegFormer student for SAR oil-spill segmentation ({classes}), trained by `dakter distill` of `dakter_hf` "
        "(DAKTer: a joint image + soft-label diffusion model generates extra training pairs).", "",
        "## Training", "", *training, "", "## Results", "", measured, "",
        "## Usage", "", _STUDENT_SNIPPET.format(path=repo_id or "path/to/this/directory",
                                                 num_classes=len(id2label)), "",
    ])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")
