"""Mask-conditioned datasets: SAR images drawn by [`DAKTerMaskToImagePipeline`] for the masks of a labelled dataset
(FreeMask-style synthetic pairs: real layouts, new images), written like joint generation (resumable, atomic, split
between processes: the same shard store, [`write_generated_dataset`]).

Row `i` shows mask `i // k` of the source dataset (`k` = `num_images_per_mask`), optionally after one of the eight
symmetries of the square ([`MASK_TRANSFORMS`], drawn per row from `seed` and `i` when `augment_masks`), and is drawn
from seed `seed + i`. Its `soft_label` and `label` are that (transformed) mask at the model's size, the mask the image
was drawn for; `source_mask` names the source row (its `id`, else its index) and `mask_transform` the symmetry.
With `perturb_masks`, the source mask first undergoes a random layout perturbation drawn from the row's seed
([`MaskPerturber`]: dilation, erosion, shift or composition with another mask), recorded in `mask_perturbation`.

**What the soft labels carry.** A row's `soft_label` is the one-hot mask the image was drawn for, not a model output:
the pairs add new images, not soft labels, and `soft` distillation (KD on q) learns exactly what `hard` distillation
(cross-entropy on argmax q) does from them.
"""

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import PIL.Image
import torch

from ..data.generated import MASK_PERTURBATION_COLUMN, MASK_TRANSFORMS, image_mode, mask_conditioned_features
from ..labels import check_soft_label_dtype, encode_soft_labels, resolve_id2label
from ..model_cards import make_dataset_card, read_card_metadata
from ..pipelines import DAKTerMaskToImagePipeline
from ..pipelines.inputs import prepare_masks
from .mask_perturbation import MASK_PERTURBATIONS, MaskPerturber
from .sampling import _sample_hw, check_compute_dtype, check_finite_outputs, compute_autocast, quiet_pipeline
from .settings import generation_settings
from .store import GenerationOutput, GenerationProgress, check_pipeline, check_run_arguments, write_generated_dataset


__all__ = ["apply_mask_transform", "generate_mask_conditioned_to_disk", "mask_transform_of_row"]


def apply_mask_transform(mask: np.ndarray, name: str) -> np.ndarray:
    """Apply one of [`MASK_TRANSFORMS`] to an `(H, W)` mask: an optional left-right flip, then `np.rot90`."""
    if name not in MASK_TRANSFORMS:
        raise ValueError(f"Unknown mask transform {name!r}; expected one of {MASK_TRANSFORMS}.")
    flip, _, rotation = name.partition("+") if name.startswith("flip") else ("", "", name)
    if flip:
        mask = np.fliplr(mask)
    quarter_turns = {"": 0, "identity": 0, "rot90": 1, "rot180": 2, "rot270": 3}[rotation]
    return np.ascontiguousarray(np.rot90(mask, quarter_turns))


def mask_transform_of_row(seed: int, index: int, augment: bool) -> str:
    """The transform of row `index` of a dataset made with `seed`: `"identity"` without augmentation, else one of the
    eight symmetries, uniformly, from a generator of its own (independent of the row's sampling noise)."""
    if not augment:
        return "identity"
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), 0x6D61736B])  # 0x6D61736B: "mask"
    return MASK_TRANSFORMS[int(rng.integers(len(MASK_TRANSFORMS)))]


def _source_names(masks_dataset) -> list[str]:
    if "id" in masks_dataset.column_names:
        return [str(name) for name in masks_dataset["id"]]
    return [str(i) for i in range(len(masks_dataset))]


def _masks_fingerprint(masks_dataset, names: list[str], num_classes: int) -> str:
    """SHA-256 of the source masks and their names (a resumed run must draw for the same masks), checking on the way
    that every mask holds class indices of the model."""
    digest = hashlib.sha256()
    for index, (name, mask) in enumerate(zip(names, masks_dataset["mask"])):
        array = np.ascontiguousarray(np.asarray(mask))
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer) or array.size == 0:
            raise ValueError(f"`masks_dataset` row {index} ({name!r}): a mask must be a non-empty (H, W) image of "
                             f"class indices, got shape {array.shape} and dtype {array.dtype}.")
        if array.min() < 0 or array.max() >= num_classes:
            raise ValueError(f"`masks_dataset` row {index} ({name!r}): class ids must lie in [0, {num_classes}) (the "
                             f"model's num_classes), got values in [{array.min()}, {array.max()}].")
        digest.update(f"{name}:{array.shape}:{array.dtype}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _make_rows(pipe, masks_dataset, names, num_images_per_mask, augment, perturber, seed, options, soft_label_dtype,
               batch_size, dtype) -> Callable[[list[int]], dict[str, list]]:
    """`make_rows(indices)` of the shard store: the rows `indices`, padded to `batch_size` like [`generate_rows`]
    so that a row is bit-identical whatever batch it is drawn in, the denoiser computing in `dtype`. A row's mask is
    its source mask, perturbed (with a `perturber`), then flipped / rotated."""
    config = pipe.unet.config
    size = _sample_hw(config)

    def make_rows(indices: list[int]) -> dict[str, list]:
        sources = [i // num_images_per_mask for i in indices]
        transforms = [mask_transform_of_row(seed, i, augment) for i in indices]
        masks = [_load_mask(masks_dataset, s) for s in sources]
        perturbations = None
        if perturber is not None:
            masks, perturbations = map(list, zip(*(perturber(m, s, seed + i) for m, s, i in
                                                   zip(masks, sources, indices))))
        masks = [apply_mask_transform(m, t) for m, t in zip(masks, transforms)]
        probabilities = torch.cat([prepare_masks(m, config.num_classes, size) for m in masks])
        padding = max(0, batch_size - len(indices))
        seeds = [seed + i for i in indices] + [seed + indices[-1]] * padding
        padded = torch.cat([probabilities, probabilities[-1:].expand(padding, -1, -1, -1)])
        with compute_autocast(pipe, dtype):
            out = pipe(masks=padded, generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="pt",
                       **options)
        n = len(indices)
        check_finite_outputs(seeds[:n], images=out.images[:n])
        images = (out.images[:n].float().cpu() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        if image_mode(images.shape[-1]) == "L":
            images = images[..., 0]
        labels = probabilities.argmax(dim=1).numpy().astype(np.uint8)
        rows = {
            "image": [PIL.Image.fromarray(image) for image in images],
            "soft_label": list(encode_soft_labels(probabilities, soft_label_dtype)),
            "label": [PIL.Image.fromarray(label) for label in labels],
            "seed": seeds[:n],
            "source_mask": [names[s] for s in sources],
            "mask_transform": transforms,
        }
        if perturbations is not None:
            rows[MASK_PERTURBATION_COLUMN] = perturbations
        return rows

    return make_rows


def _load_mask(masks_dataset, index: int) -> np.ndarray:
    return np.asarray(masks_dataset[index]["mask"], dtype=np.int64)


def _perturbation_kinds(perturb_masks) -> tuple[str, ...]:
    """The kinds of `perturb_masks`: `False` / `None` none, `True` all of [`MASK_PERTURBATIONS`], else its items."""
    if perturb_masks is None or perturb_masks is False:
        return ()
    if perturb_masks is True:
        return MASK_PERTURBATIONS
    if isinstance(perturb_masks, str):
        return (perturb_masks,)
    kinds = tuple(perturb_masks)
    if not kinds:
        raise ValueError(f"`perturb_masks` must be a bool or perturbation kinds among {list(MASK_PERTURBATIONS)}, "
                         "got an empty sequence.")
    return kinds


def generate_mask_conditioned_to_disk(
    pipe,
    masks_dataset,
    output_dir: str | os.PathLike,
    num_images_per_mask: int = 1,
    augment_masks: bool = False,
    perturb_masks: bool | Sequence[str] = False,
    batch_size: int = 8,
    seed: int = 0,
    num_inference_steps: int = 50,
    conditioning: str = "auto",
    jump_length: int = 10,
    jump_n_sample: int = 1,
    eta: float = 0.0,
    soft_label_dtype: str = "uint8",
    dtype: str = "float32",
    id2label: Mapping[int, str] | None = None,
    overwrite: bool = False,
    pipeline_name: str | None = None,
    masks_name: str | None = None,
    distributed_state=None,
    callback: Callable[[GenerationProgress], None] | None = None,
    preview_rows: int = 8,
) -> GenerationOutput:
    r"""
    Draw `num_images_per_mask` images for every mask of a labelled dataset and save them as a dataset in `output_dir`
    (resumable, atomic, multi-process: see [`generate_to_disk`], whose shard store it uses).

    Args:
        pipe: a loaded DAKTer pipeline ([`DAKTerPipeline`] or [`DAKTerMaskToImagePipeline`]; the latter is made
            with `from_pipe`, sharing weights and scheduler), on the device to use.
        masks_dataset (`datasets.Dataset`): a labelled dataset with a `mask` column of class indices (a
            `dakter_hf.data` dataset, e.g. `load_sos(..., num_samples=150)`); its `id` column names the masks.
        output_dir (`str` or `os.PathLike`): where the dataset goes.
        num_images_per_mask (`int`, *optional*, defaults to 1): images drawn per mask (k): the dataset has
            `len(masks_dataset) * k` rows.
        augment_masks (`bool`, *optional*, defaults to `False`): apply a random flip / 90-degree rotation to each
            row's mask before drawing (one of [`MASK_TRANSFORMS`] per row, recorded in `mask_transform`).
        perturb_masks (`bool` or `Sequence[str]`, *optional*, defaults to `False`): a random layout perturbation of
            each row's source mask before drawing (and before its flip / rotation), drawn from the row's seed by
            [`MaskPerturber`]: `True` draws among all of [`MASK_PERTURBATIONS`] (dilation, erosion, shift,
            composition with another mask of the set), a sequence among those kinds. Recorded per row in
            `mask_perturbation`, and in the manifest and the card.
        batch_size (`int`, *optional*, defaults to 8): images per pipeline call (and per shard).
        seed (`int`, *optional*, defaults to 0): row `i` is drawn from seed `seed + i`.
        num_inference_steps, conditioning, jump_length, jump_n_sample, eta: the [`DAKTerMaskToImagePipeline`]
            options; `conditioning="auto"` is exact for models with per-modality timesteps.
        soft_label_dtype (`str`, *optional*, defaults to `"uint8"`): storage of `soft_label`.
        dtype (`str`, *optional*, defaults to `"float32"`): compute dtype of the denoiser, `"float32"`,
            `"bfloat16"` or `"float16"` (autocast, see [`compute_autocast`]); recorded in the settings.
        id2label (`dict`, *optional*): class names; by default the pipeline's.
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing `output_dir` and discard an
            interrupted run with other settings.
        pipeline_name (`str`, *optional*): how the card names the generator.
        masks_name (`str`, *optional*): how the card names the mask source (e.g. `"sos sentinel train, 150 pairs"`).
        distributed_state (`accelerate.PartialState`, *optional*): the process group of an `accelerate launch`.
        callback (`Callable[[GenerationProgress], None]`, *optional*): called after each committed batch.
        preview_rows (`int`, *optional*, defaults to 8): rows of the preview grid (0: no preview).

    Returns:
        [`GenerationOutput`]
    """
    if "mask" not in getattr(masks_dataset, "column_names", []):
        raise ValueError("`masks_dataset` must be a labelled dataset with a 'mask' column (a `dakter_hf.data` "
                         f"dataset), got columns {getattr(masks_dataset, 'column_names', None)}.")
    if isinstance(num_images_per_mask, bool) or not isinstance(num_images_per_mask, int) or num_images_per_mask < 1:
        raise ValueError(f"`num_images_per_mask` must be a positive integer, got {num_images_per_mask!r}.")
    if len(masks_dataset) == 0:
        raise ValueError("`masks_dataset` is empty: no mask to draw images for.")
    num_samples = len(masks_dataset) * num_images_per_mask
    output_dir = check_run_arguments(output_dir, num_samples, batch_size, overwrite)
    check_soft_label_dtype(soft_label_dtype)
    check_compute_dtype(dtype)
    check_pipeline(pipe, pipeline_name)
    drawer = pipe if isinstance(pipe, DAKTerMaskToImagePipeline) else DAKTerMaskToImagePipeline.from_pipe(pipe)
    mode = drawer.resolve_conditioning(conditioning, jump_length, jump_n_sample)
    id2label = resolve_id2label(pipe, id2label)
    names = _source_names(masks_dataset)
    kinds = _perturbation_kinds(perturb_masks)
    perturber = MaskPerturber(lambda index: _load_mask(masks_dataset, index), names, kinds) if kinds else None
    settings = generation_settings(drawer, batch_size, seed, num_inference_steps, 1.0, eta, soft_label_dtype,
                                   id2label, dtype)
    settings["masks"] = {"source": masks_name or "a labelled dataset", "num_masks": len(masks_dataset),
                         "fingerprint": _masks_fingerprint(masks_dataset, names, drawer.unet.config.num_classes),
                         "num_images_per_mask": num_images_per_mask, "augment": bool(augment_masks)}
    if perturber is not None:  # recorded only then, so that runs begun before perturbations existed still resume
        settings["masks"]["perturb"] = perturber.settings()
    settings["conditioning"] = {"mode": mode, "jump_length": jump_length, "jump_n_sample": jump_n_sample}
    source = getattr(pipe, "name_or_path", None)
    card = make_dataset_card(settings, num_samples, pipeline_name or source, soft_label_dtype,
                             generator_metadata=read_card_metadata(source))
    options = dict(num_inference_steps=num_inference_steps, conditioning=mode, jump_length=jump_length,
                   jump_n_sample=jump_n_sample, eta=eta)
    make_rows = _make_rows(drawer, masks_dataset, names, num_images_per_mask, augment_masks, perturber, seed, options,
                           soft_label_dtype, batch_size, dtype)
    config = drawer.unet.config
    features = mask_conditioned_features(config.num_classes, *_sample_hw(config), id2label, soft_label_dtype,
                                         config.image_channels, perturbed=perturber is not None)
    with quiet_pipeline(drawer):
        return write_generated_dataset(make_rows, output_dir, num_samples, settings, features, card, batch_size,
                                       seed, id2label, overwrite, distributed_state, callback, preview_rows)
