"""The card of a generated dataset: what generated it, how to load it and how to regenerate any row."""

import json
from collections.abc import Mapping
from typing import Any

from huggingface_hub import DatasetCard, DatasetCardData

from .common import DEFAULT_LICENSE, QUALITY_KEY, _size_category


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
    generator = str(pipeline_name) if pipeline_name else "an unnamed DAKTer pipeline"  # a Path from name_or_path
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
    masks = settings.get("masks")  # a mask-conditioned dataset (`generate_mask_conditioned_to_disk`)
    if masks:
        dakter.update(task="mask-to-image", masks=masks, conditioning=settings["conditioning"])
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
    what = ("a SAR image and, per pixel, a class-probability map (a soft label) sampled together" if not masks else
            f"a SAR image drawn for a real mask of {masks['source']} ({masks['num_masks']} masks, "
            f"{masks['num_images_per_mask']} image(s) per mask"
            f"{', each mask randomly flipped / rotated by 90 degrees' if masks['augment'] else ''}"
            f"{_perturbation_text(masks.get('perturb'))}; {settings['conditioning']['mode']} conditioning); its soft "
            "label and label are that mask, one-hot: these rows carry no soft label beyond the mask, so `soft` and "
            "`hard` distillation learn the same from them")
    regenerate = (f"""Any row can be regenerated with the same pipeline and settings:
`dakter_hf.generation.generate_dataset(pipe, [i], seed={seed}, batch_size={settings["batch_size"]},
num_inference_steps={settings["num_inference_steps"]}, soft_label_temperature={settings["soft_label_temperature"]},
eta={settings["eta"]})` with the scheduler above.""" if not masks else f"""The dataset can be regenerated bit for bit
with `dakter_hf.generation.generate_mask_conditioned_to_disk` from the same pipeline, masks (sha256
`{masks["fingerprint"][:16]}...`) and settings (below), with the scheduler above.""")
    text = f"""
# DAKTer synthetic SAR image / soft-label pairs

**These samples are synthetic.** Every row was generated by a DAKTer joint diffusion model ({generator}): {what}.
They are meant to augment real training data of a student segmentation model (cross-entropy on real pairs,
knowledge distillation on these soft labels), not to stand for real observations.

## Content

{num_samples} rows, classes: {classes}.

| column | content |
|---|---|
| `image` | generated image, 8-bit greyscale (`datasets.Image`, mode L) |
| `soft_label` | per-pixel class probabilities, shape (K, H, W), {decoding} |
| `label` | argmax of the soft label, class indices (`datasets.Image`, mode L); carries `id2label` |
| `seed` | the seed of the row: row i was generated from seed {seed} + i |{_mask_columns(masks)}

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

{regenerate}

## Full generation settings

```json
{json.dumps({k: v for k, v in settings.items()}, indent=2, sort_keys=True)}
```
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{text}")


def _perturbation_text(perturb: Mapping[str, Any] | None) -> str:
    if not perturb:
        return ""
    return (f", each mask first perturbed at random ({' / '.join(perturb['kinds'])}: radii up to "
            f"{perturb['max_radius']} px, shifts up to {perturb['max_shift_fraction']:g} of the side)")


def _mask_columns(masks: Mapping[str, Any] | None) -> str:
    """The table rows of a mask-conditioned dataset's own columns ('' for a joint one)."""
    if not masks:
        return ""
    rows = """
| `source_mask` | the `id` (else the row index) of the mask in its source dataset |
| `mask_transform` | the flip / 90-degree rotation applied to the source mask before drawing |"""
    if masks.get("perturb"):
        rows += """
| `mask_perturbation` | the layout perturbation applied to the source mask before its flip / rotation: `dilate:r` / \
`erode:r` (regions grown / shrunk by r px), `shift:dy,dx` (moved, background filled in), `compose:name` (the regions \
of mask `name` added) |"""
    return rows


def make_concatenated_dataset_card(
    parts: list[Mapping[str, Any]],
    num_samples: int,
    id2label: Mapping[int, str],
    first_metadata: Mapping[str, Any] | None = None,
):
    """The card of generated datasets concatenated into one ([`concatenate_generated_datasets`]).

    Args:
        parts (`list[dict]`): per part, `dataset` (its path), `num_rows` (rows taken: its first ones), `of` (its
            size) and `dakter` (the `dakter` metadata of its own card, `{}` without one).
        num_samples (`int`): number of rows.
        id2label (`dict`): class names.
        first_metadata (`Mapping`, *optional*): the metadata of the first part's card (licence, sources).

    Returns:
        `huggingface_hub.DatasetCard`
    """
    first_metadata = dict(first_metadata or {})
    sources = first_metadata.get("source_datasets") or []
    data = DatasetCardData(
        pretty_name="DAKTer synthetic SAR image / soft-label pairs (concatenated)",
        license=first_metadata.get("license") or DEFAULT_LICENSE,
        task_categories=["image-segmentation"],
        annotations_creators=["machine-generated"],
        source_datasets=list(sources),
        tags=["synthetic", "sar", "oil-spill", "dakter", "knowledge-distillation", "soft-labels"],
        size_categories=[_size_category(num_samples)],
        id2label={str(k): v for k, v in id2label.items()},
        dakter={"synthetic": True, "task": "concatenation", "parts": [dict(part) for part in parts]},
    )
    lines = []
    for part in parts:
        meta = part.get("dakter") or {}
        what = ("images drawn for real masks: one-hot soft labels (the masks), so `soft` and `hard` distillation "
                "learn the same from these rows" if meta.get("task") == "mask-to-image" else
                "joint samples: image and soft label sampled together" if meta else "how it was made is not recorded")
        lines.append(f"| `{part['dataset']}` | first {part['num_rows']} of {part['of']} rows | {what} |")
    classes = ", ".join(f"{k} = {v}" for k, v in id2label.items())
    text = f"""
# DAKTer synthetic SAR image / soft-label pairs (concatenated)

**These samples are synthetic.** {num_samples} rows (classes: {classes}), the rows of these generated datasets in
this order; the `generated_set` column names the part of each row (its directory name), and the columns of one part
that another lacks (e.g. `source_mask`) are empty (`None`) in the other's rows. A row's `seed` is its seed in its own
part.

| part | rows | content |
|---|---|---|
{chr(10).join(lines)}

The cards of the parts say how each was generated; their settings are in this card's metadata (`dakter.parts`).
Read the soft labels with `dakter_hf.decode_soft_labels(row["soft_label"], dtype=ds.features)`.
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{text}")


def make_labelled_dataset_card(source_card, labelling: Mapping[str, Any], source: str, num_samples: int):
    """The card of a copy of a generated dataset whose labels a labeller replaced (`labelling["task"] ==
    "relabel"`) or scored (`"score"`): the source's card (`source_card`, a `DatasetCard` or `None`) with the labelling
    under `dakter_labelling` in its metadata (a list: a copy of a copy keeps every step) and a section saying what
    changed.

    Args:
        source_card (`huggingface_hub.DatasetCard`, *optional*): the source dataset's card.
        labelling (`Mapping`): `task`, `labeller` (the labeller's settings: `kind`, `labeller`, ...).
        source (`str`): the source dataset's path or Hub id.
        num_samples (`int`): number of rows.
    """
    if source_card is None:
        data = DatasetCardData(pretty_name="DAKTer synthetic SAR image / soft-label pairs",
                               task_categories=["image-segmentation"], annotations_creators=["machine-generated"],
                               tags=["synthetic", "sar", "dakter"], size_categories=[_size_category(num_samples)])
        text = "\n# DAKTer synthetic SAR image / soft-label pairs\n\n**These samples are synthetic.**\n"
    else:
        data, text = source_card.data, source_card.text
    steps = data.to_dict().get("dakter_labelling") or []
    data["dakter_labelling"] = [*steps, {"source": source, **labelling}]
    labeller = labelling["labeller"]
    who = (f"the segmentation pipeline of the DAKTer generator `{labeller['labeller']}` (p(label | image), "
           f"{labeller['conditioning']} conditioning, {labeller['num_samples']} draw(s) averaged per image, "
           f"{labeller['num_inference_steps']} {labeller['scheduler']} steps; {labeller['seeds']})"
           if labeller["kind"] == "generator" else f"the student `{labeller['labeller']}` (its softmax at "
           f"temperature {labeller['temperature']}, upsampled bilinearly)")
    if labelling["task"] == "relabel":
        section = f"""## Labels replaced

**The `soft_label` and `label` columns of this copy are not the ones sampled with the images.** They are the soft
labels of {who}, stored in the same type, and their argmax. The images, seeds and other columns are those of
`{source}`; what the sections above say about the labels describes that source."""
    else:
        section = f"""## Pair quality

Every pair was scored against {who}: `pair_quality` = 1 - the mean over pixels of the total-variation distance
between the pair's own soft label and the labeller's (in [0, 1], 1 = identical), `pair_quality_miou` = the mIoU of
the two argmax masks over the classes present in either. The pairs themselves are those of `{source}`, unchanged.
`examples/distill.py --drop_worst_pairs F` / `--pair_quality_weighting` use `pair_quality`."""
    section += f"\n\n```json\n{json.dumps(dict(labelling), indent=2, sort_keys=True)}\n```\n"
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{text.rstrip()}\n\n{section}")
