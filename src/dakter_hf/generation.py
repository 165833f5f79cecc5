"""Generated datasets: a trained [`DAKTerPipeline`] becomes a `datasets` dataset of synthetic (image, soft label) pairs.

A generated dataset has one row per pair and four columns:

* `image`: [`datasets.Image`] (mode `"L"` for single-channel SAR), the generated image quantised to 8 bits;
* `soft_label`: [`datasets.Array3D`] of shape `(K, H, W)`, the per-pixel class probabilities, stored as `uint8`
  (the default: see [`quantize_soft_labels`]), `float16` or `float32`; read it back with [`decode_soft_labels`];
* `label`: [`datasets.Image`] (mode `"L"`), the argmax mask; its feature carries `id2label` in the format of
  [`dakter_hf.data`] (read it with [`get_generated_id2label`]);
* `seed`: the seed of the row: row `i` is always generated from seed `seed + i` with its own `torch.Generator`,
  so any subset of a dataset can be regenerated exactly ([`generate_dataset`] with `indices`).

[`generate_to_disk`] writes such a dataset resumably (generated batches are committed as shards to
`<output_dir>.partial/`; a restart skips completed indices), splits the index range between the processes of an
`accelerate launch`, and moves the finished dataset, its card (`README.md`) and a preview grid (`preview.png`) into
`output_dir` in one atomic rename: `output_dir` never holds a half-written dataset.
[`dakter_hf.hub.push_dataset_to_hub`] shares such a dataset on the Hub with its card.

**Where `id2label` lives for a pipeline.** A pipeline's class names are part of its config
([`DAKTerPipeline.id2label`], saved in `model_index.json`); an explicit `id2label` argument overrides them.
"""

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import PIL.Image
import torch
from datasets import Array3D, Dataset, Features, Value
from datasets import Image as ImageFeature
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm

from .data.common import get_id2label, make_features
from .labels import default_id2label, normalize_id2label
from .model_cards import CARD_NAME, make_dataset_card


logger = logging.getLogger(__name__)

#: Scheduler names accepted by [`set_scheduler`] and `dakter-generate --scheduler`.
SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpmsolver": DPMSolverMultistepScheduler,  # DPM-Solver++ (its default `algorithm_type="dpmsolver++"`)
    "euler": EulerDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}
#: Storage types of the `soft_label` column.
SOFT_LABEL_DTYPES = ("uint8", "float16", "float32")
#: Quantised soft labels of one pixel are integers summing to this value; decoding divides by it.
QUANTIZATION_LEVELS = 255

PREVIEW_NAME = "preview.png"
MANIFEST_NAME = "manifest.json"
WORK_DIR_SUFFIX = ".partial"
_SHARD_RE = re.compile(r"^shard-(\d{9})-(\d{9})$")
_MANIFEST_VERSION = 1
_CLASS_AXIS = -3  # soft labels are (K, H, W) for a row and (B, K, H, W) for a batch


# ----------------------------------------------------------------------------------------------------------------
# Soft-label codec
# ----------------------------------------------------------------------------------------------------------------


def quantize_soft_labels(probs: np.ndarray | torch.Tensor, axis: int = _CLASS_AXIS) -> np.ndarray:
    """Quantise per-pixel class probabilities to `uint8` values that sum to exactly 255 per pixel.

    Largest-remainder rounding: every probability times 255 is rounded down, then the pixel's missing units (at
    most K - 1) go to the classes with the largest remainders. Decoding as `value / 255` therefore gives
    probabilities that sum to 1 per pixel and differ from the input by less than 1/255.

    Args:
        probs (`np.ndarray` or `torch.Tensor`): non-negative probabilities summing to 1 along `axis` (small deviations
            are renormalised).
        axis (`int`, *optional*, defaults to -3): the class axis (`(K, H, W)` rows and `(B, K, H, W)` batches).

    Returns:
        `np.ndarray`: `uint8` array of the input's shape.
    """
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().numpy()
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 0:
        raise ValueError("`probs` must have a class axis, got a scalar.")
    if not np.all(np.isfinite(probs)) or probs.size and probs.min() < -1e-6:
        raise ValueError("`probs` must hold finite, non-negative probabilities.")
    probs = np.clip(probs, 0.0, None)
    total = probs.sum(axis=axis, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("`probs` has a pixel whose probabilities sum to 0: not a probability distribution.")
    scaled = probs / total * QUANTIZATION_LEVELS
    floor = np.floor(scaled)
    deficit = QUANTIZATION_LEVELS - floor.sum(axis=axis, keepdims=True)  # integer in [0, K - 1]
    order = np.argsort(-(scaled - floor), axis=axis, kind="stable")  # classes by decreasing remainder
    rank = np.argsort(order, axis=axis, kind="stable")  # rank of each class in that order
    return (floor + (rank < deficit)).astype(np.uint8)


def encode_soft_labels(probs: np.ndarray | torch.Tensor, dtype: str = "uint8") -> np.ndarray:
    """Encode soft labels for storage: [`quantize_soft_labels`] for `"uint8"`, a plain cast for `"float16"` and
    `"float32"`.

    Args:
        probs (`np.ndarray` or `torch.Tensor`): probabilities, `(K, H, W)` or `(B, K, H, W)`.
        dtype (`str`, *optional*, defaults to `"uint8"`): one of [`SOFT_LABEL_DTYPES`].

    Returns:
        `np.ndarray` of the requested dtype.
    """
    dtype = _check_soft_label_dtype(dtype)
    if dtype == "uint8":
        return quantize_soft_labels(probs)
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().float().numpy()
    return np.asarray(probs).astype(dtype)


def decode_soft_labels(value: Any, dtype: str | np.dtype | Features | Any | None = None) -> np.ndarray | torch.Tensor:
    """Turn stored soft labels back into `float32` probabilities that sum to 1 per pixel.

    `value` is a row `(K, H, W)` or a batch `(B, K, H, W)` of the `soft_label` column in whatever form `datasets`
    returns it: nested Python lists (no format), a NumPy array (`"numpy"`), a torch tensor (`"torch"`). `datasets`
    reads `uint8` back as `int64` and `float16` as `float32`/`float64`, so the storage type is decided as follows:

    1. if `dtype` is given, it decides: a name (`"uint8"`, `"float16"`, `"float32"`), a NumPy dtype, the dataset's
       `Features` (its `soft_label` feature is read) or the `soft_label` feature itself;
    2. otherwise, integer arrays are quantised values and floating arrays whose maximum exceeds 1 are quantised
       values read as floats (probabilities never exceed 1, while quantised values of a pixel sum to 255, so their
       maximum is at least 255 / K > 1 for K < 255); every other floating array holds probabilities.

    Quantised values are divided by 255; every result is then renormalised per pixel (this only removes the
    rounding of `float16` storage).

    Args:
        value: the stored soft labels, `(K, H, W)` or `(B, K, H, W)`.
        dtype (*optional*): the storage type hint described above.

    Returns:
        `np.ndarray` (or `torch.Tensor` for a tensor input) of `float32` probabilities with the input's shape.

    Example:

    ```py
    >>> ds = datasets.load_from_disk("outputs/generated").with_format("numpy")
    >>> probs = decode_soft_labels(ds[0]["soft_label"], dtype=ds.features)  # (K, H, W), sums to 1 per pixel
    ```
    """
    is_tensor = isinstance(value, torch.Tensor)
    array = value.detach().cpu().numpy() if is_tensor else np.asarray(value)
    if array.dtype == object:
        raise ValueError("`value` is ragged: soft labels must have one shape (K, H, W) per row.")
    if array.ndim not in (3, 4):
        raise ValueError(f"`value` must have shape (K, H, W) or (B, K, H, W), got {array.shape}.")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"`value` must hold numbers, got dtype {array.dtype}.")
    stored = _stored_soft_label_dtype(dtype)
    if stored is None:
        quantized = np.issubdtype(array.dtype, np.integer) or bool(array.size and array.max() > 1.0)
    else:
        quantized = stored == "uint8"
    probs = array.astype(np.float32)
    if quantized:
        probs /= QUANTIZATION_LEVELS
    total = probs.sum(axis=_CLASS_AXIS, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("`value` has a pixel whose soft label sums to 0: not stored soft labels.")
    probs /= total
    return torch.from_numpy(probs) if is_tensor else probs


def _check_soft_label_dtype(dtype: str) -> str:
    if dtype not in SOFT_LABEL_DTYPES:
        raise ValueError(f"`soft_label_dtype` must be one of {SOFT_LABEL_DTYPES}, got {dtype!r}.")
    return dtype


def _stored_soft_label_dtype(hint) -> str | None:
    """The storage dtype name named by a `decode_soft_labels` hint (see there), or None without a hint."""
    if hint is None:
        return None
    if isinstance(hint, Mapping):  # `Features` or a plain dict of features
        if "soft_label" not in hint:
            raise ValueError(f"`dtype` features have no 'soft_label' column: {list(hint)}.")
        hint = hint["soft_label"]
    if hasattr(hint, "dtype") and not isinstance(hint, (np.dtype, str)):  # Array3D / Value
        hint = hint.dtype
    elif hasattr(hint, "feature"):  # nested List / Sequence features
        return _stored_soft_label_dtype(hint.feature)
    name = np.dtype(hint).name if not isinstance(hint, str) else hint
    return _check_soft_label_dtype(name)


# ----------------------------------------------------------------------------------------------------------------
# Schedulers, class names, features
# ----------------------------------------------------------------------------------------------------------------


def set_scheduler(pipe, name: str):
    """Replace the pipeline's scheduler by the one called `name` (see [`SCHEDULERS`]), built from the current
    scheduler's config so the noise schedule is kept. The pipeline converts the model's predictions for any
    `prediction_type`. Returns the pipeline."""
    if name not in SCHEDULERS:
        raise ValueError(f"`scheduler` must be one of {sorted(SCHEDULERS)}, got {name!r}.")
    pipe.scheduler = SCHEDULERS[name].from_config(pipe.scheduler.config)
    return pipe


def resolve_id2label(pipe, id2label: Mapping | None = None) -> dict[int, str]:
    """The class names of a pipeline's generated labels: `id2label` if given (checked against
    `pipe.unet.config.num_classes`), else the pipeline's own [`DAKTerPipeline.id2label`] (saved in its
    `model_index.json`; `class_<i>` placeholders, with a warning, when it has none)."""
    if id2label is not None:
        return normalize_id2label(id2label, pipe.unet.config.num_classes)
    if pipe.config.get("id2label") is None:
        logger.warning("No class names stored with the pipeline: using %s. Pass `id2label` to name them.",
                       pipe.id2label)
    return pipe.id2label


def _sample_hw(unet_config) -> tuple[int, int]:
    size = unet_config.sample_size
    return (size, size) if isinstance(size, int) else tuple(size)


def _image_mode(channels: int) -> str:
    if channels == 1:
        return "L"
    if channels == 3:
        return "RGB"
    raise ValueError(f"Generated images must have 1 or 3 channels to be stored as images, got {channels}.")


def generated_features(
    num_classes: int,
    height: int,
    width: int,
    id2label: Mapping[int, str] | None = None,
    soft_label_dtype: str = "uint8",
    image_channels: int = 1,
) -> Features:
    """The features (schema) of a generated dataset.

    `id2label` is stored on the `label` feature in the format of [`dakter_hf.data`] (see [`get_generated_id2label`]).

    Args:
        num_classes (`int`): number of classes K.
        height (`int`), width (`int`): sample size.
        id2label (`dict`, *optional*): class names; [`default_id2label`] when not given.
        soft_label_dtype (`str`, *optional*, defaults to `"uint8"`): storage type of `soft_label`.
        image_channels (`int`, *optional*, defaults to 1): 1 (mode `"L"`) or 3 (mode `"RGB"`).
    """
    id2label = normalize_id2label(id2label or default_id2label(num_classes), num_classes)
    return Features(
        {
            "image": ImageFeature(mode=_image_mode(image_channels)),
            "soft_label": Array3D(shape=(num_classes, height, width), dtype=_check_soft_label_dtype(soft_label_dtype)),
            "label": make_features(id2label)["mask"],
            "seed": Value("int64"),
        }
    )


def get_generated_id2label(dataset: Dataset | Features) -> dict[int, str]:
    """The class names of a generated dataset (stored on its `label` feature; works after `load_from_disk` and
    `load_dataset` from the Hub)."""
    features = dataset if isinstance(dataset, Features) else dataset.features
    if "label" not in features:
        raise ValueError(f"Not a generated dataset: no 'label' column in {list(features)}.")
    return get_id2label(Features({"mask": features["label"]}))


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class GenerationProgress:
    """What a `callback` of [`generate_to_disk`] receives after each committed batch.

    Args:
        batch_index (`int`): index of the batch in this run (0-based).
        indices (`list[int]`): dataset indices of the batch.
        num_done (`int`): indices of this process's range completed so far (including resumed ones).
        num_total (`int`): size of this process's range.
    """

    batch_index: int
    indices: list[int]
    num_done: int
    num_total: int


@dataclass
class GenerationOutput(BaseOutput):
    """
    Output of [`generate_to_disk`].

    Args:
        dataset (`datasets.Dataset`): the finished dataset, loaded from `output_dir`.
        output_dir (`str`): where the dataset, its card and its preview are.
        card_path (`str`): path of the dataset card (`README.md`).
        preview_path (`str` or `None`): path of the preview grid, None if it could not be drawn.
        num_generated (`int`): pairs generated by this process in this run.
        num_resumed (`int`): pairs of this process's range found already generated by an interrupted run.
    """

    dataset: Dataset
    output_dir: str
    card_path: str
    preview_path: str | None
    num_generated: int
    num_resumed: int


def split_indices(num_samples: int, num_processes: int = 1, process_index: int = 0) -> range:
    """The contiguous block of dataset indices one process generates.

    The blocks of processes `0 .. num_processes - 1` partition `range(num_samples)` in order (no duplicate, no
    gap); their sizes differ by at most one (the first `num_samples % num_processes` processes take one more).
    """
    if num_samples < 0:
        raise ValueError(f"`num_samples` must be >= 0, got {num_samples}.")
    if num_processes < 1 or not 0 <= process_index < num_processes:
        raise ValueError(f"`process_index` must lie in [0, {num_processes}), got {process_index}.")
    base, extra = divmod(num_samples, num_processes)
    start = process_index * base + min(process_index, extra)
    return range(start, start + base + (process_index < extra))


def _batches(indices: Iterable[int], batch_size: int) -> list[list[int]]:
    """Split sorted indices into batches of at most `batch_size` consecutive indices (a batch never spans a gap,
    so it is stored as one shard named by its range)."""
    batches: list[list[int]] = []
    for index in sorted(indices):
        if batches and len(batches[-1]) < batch_size and batches[-1][-1] == index - 1:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


@contextlib.contextmanager
def _quiet_pipeline(pipe):
    """Silence the pipeline's per-step progress bar (generation shows one bar over samples)."""
    previous = dict(getattr(pipe, "_progress_bar_config", {}))
    pipe.set_progress_bar_config(disable=True)
    try:
        yield pipe
    finally:
        pipe._progress_bar_config = previous


@contextlib.contextmanager
def _quiet_datasets():
    disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not disabled:
            datasets.enable_progress_bars()


def generate_rows(
    pipe,
    indices: Sequence[int],
    seed: int = 0,
    num_inference_steps: int = 50,
    soft_label_temperature: float = 1.0,
    eta: float = 0.0,
    soft_label_dtype: str = "uint8",
    pad_to: int | None = None,
) -> dict[str, list]:
    """Generate the rows `indices` of a dataset in one pipeline call: row `i` from seed `seed + i`.

    Each row has its own CPU `torch.Generator` (also on accelerators, so the noise is the same on every device
    type), so a row does not depend on which other rows share its batch. Floating-point kernels may still round
    differently for different batch sizes (about 1e-6 on CPU, enough to move a quantised value by one level), so a
    batch smaller than `pad_to` is padded with repeats of its last seed, whose rows are dropped: with the same
    `pad_to`, a row is bit-identical whatever batch it is generated in.

    Returns:
        `dict`: columns `image` (PIL images), `soft_label` (encoded arrays `(K, H, W)`), `label` (PIL masks),
        `seed` (ints), ready for [`generated_features`].
    """
    if not len(indices):
        raise ValueError("`indices` is empty: nothing to generate.")
    seeds = [seed + int(i) for i in indices]
    padded = seeds + seeds[-1:] * max(0, (pad_to or 0) - len(seeds))
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in padded]
    out = pipe(batch_size=len(padded), generator=generators, num_inference_steps=num_inference_steps,
               soft_label_temperature=soft_label_temperature, eta=eta, output_type="pt")
    n = len(seeds)
    images = (out.images[:n].float().cpu() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if _image_mode(images.shape[-1]) == "L":
        images = images[..., 0]
    labels = out.labels[:n].cpu().numpy().astype(np.uint8)
    soft_labels = encode_soft_labels(out.soft_labels[:n].float().cpu(), soft_label_dtype)
    return {  # 2-D uint8 arrays become mode "L" images, (H, W, 3) ones mode "RGB"
        "image": [PIL.Image.fromarray(image) for image in images],
        "soft_label": list(soft_labels),
        "label": [PIL.Image.fromarray(label) for label in labels],
        "seed": seeds,
    }


def _features_for(pipe, id2label, soft_label_dtype) -> Features:
    config = pipe.unet.config
    height, width = _sample_hw(config)
    return generated_features(config.num_classes, height, width, id2label, soft_label_dtype, config.image_channels)


def generate_dataset(
    pipe,
    indices: Sequence[int] | int,
    seed: int = 0,
    batch_size: int = 8,
    num_inference_steps: int = 50,
    soft_label_temperature: float = 1.0,
    eta: float = 0.0,
    soft_label_dtype: str = "uint8",
    id2label: Mapping[int, str] | None = None,
) -> Dataset:
    """Generate rows of a dataset in memory: the rows `indices` (or `range(indices)` for an int) of the dataset
    [`generate_to_disk`] writes with the same settings (bit-identical with the same `batch_size`, see
    [`generate_rows`]).

    Example: regenerate rows 3 and 4 of a dataset made with `--seed 0`:

    ```py
    >>> rows = generate_dataset(pipe, [3, 4], seed=0, num_inference_steps=50)
    ```
    """
    indices = list(range(indices)) if isinstance(indices, int) else [int(i) for i in indices]
    features = _features_for(pipe, resolve_id2label(pipe, id2label), soft_label_dtype)
    columns: dict[str, list] = {name: [] for name in features}
    with _quiet_pipeline(pipe):
        # batches in the given order, so the rows come out in the order asked for
        for start in tqdm(range(0, len(indices), batch_size), desc="Generating pairs", unit="batch"):
            for name, values in generate_rows(pipe, indices[start:start + batch_size], seed, num_inference_steps,
                                              soft_label_temperature, eta, soft_label_dtype,
                                              pad_to=batch_size).items():
                columns[name].extend(values)
    return Dataset.from_dict(columns, features=features)


def unet_fingerprint(unet: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers: a resumed run must continue with the same weights.

    The bytes are read in row-major order whatever the memory layout (which [`unet_memory_format`] reports).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(unet.state_dict().items()):
        digest.update(name.encode())
        # reshape(-1): a channels-last 1x1 kernel counts as contiguous but its last stride is not 1
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def unet_memory_format(unet: torch.nn.Module) -> str:
    """The memory layout of a model's convolution kernels: `"channels_last"`, `"contiguous"` or `"mixed"`.

    The layout decides which kernels run, hence the floating-point rounding of the samples (about 1e-6, like the batch
    size), so it is part of the generation settings. Kernels laid out the same either way (1x1 kernels, kernels of
    one input channel) are ignored.
    """
    layouts = set()
    for parameter in unet.parameters():
        if parameter.dim() != 4:
            continue
        channels_last = parameter.is_contiguous(memory_format=torch.channels_last)
        if channels_last != parameter.is_contiguous():
            layouts.add("channels_last" if channels_last else "contiguous")
    if len(layouts) > 1:
        return "mixed"
    return layouts.pop() if layouts else "contiguous"


def generation_settings(
    pipe,
    batch_size: int,
    seed: int,
    num_inference_steps: int,
    soft_label_temperature: float,
    eta: float,
    soft_label_dtype: str,
    id2label: Mapping[int, str],
) -> dict[str, Any]:
    """Everything a generated row depends on (recorded in the manifest of a run and in the dataset card; the
    batch size is among them because it decides the floating-point rounding, see [`generate_rows`])."""
    scheduler_config = json.loads(pipe.scheduler.to_json_string())
    scheduler_config.pop("_diffusers_version", None)
    unet_config = {k: v for k, v in dict(pipe.unet.config).items() if not k.startswith("_")}
    settings = {
        "unet_config": unet_config,
        "unet_fingerprint": unet_fingerprint(pipe.unet),
        "label_scale": float(pipe.unet.config.label_scale),
        "scheduler": type(pipe.scheduler).__name__,
        "scheduler_config": scheduler_config,
        "num_inference_steps": int(num_inference_steps),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "soft_label_temperature": float(soft_label_temperature),
        "eta": float(eta),
        "soft_label_dtype": soft_label_dtype,
        "id2label": {str(k): v for k, v in id2label.items()},
    }
    memory_format = unet_memory_format(pipe.unet)
    if memory_format != "contiguous":  # recorded only then, so that runs begun before this key existed still resume
        settings["unet_memory_format"] = memory_format
    return json.loads(json.dumps(settings))  # JSON-normalised (tuples -> lists), as read back from the manifest


def work_dir_for(output_dir: str | os.PathLike) -> str:
    """Where a run writing `output_dir` keeps its shards and manifest until it is complete."""
    return os.path.normpath(os.fspath(output_dir)) + WORK_DIR_SUFFIX


def _completed_shards(work_dir: str) -> list[tuple[int, int, str]]:
    """`(start, stop, path)` of the committed shards of a work directory, sorted by start."""
    shards = []
    for name in os.listdir(work_dir):
        match = _SHARD_RE.match(name)
        if match:
            shards.append((int(match.group(1)), int(match.group(2)), os.path.join(work_dir, name)))
    return sorted(shards)


def _read_manifest(work_dir: str) -> dict[str, Any] | None:
    path = os.path.join(work_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete {work_dir} to start over.") from error


def _prepare_work_dir(work_dir: str, settings: dict[str, Any], overwrite: bool = False) -> None:
    """Create the work directory with its manifest, or check that an existing one was made with `settings` (with
    `overwrite`, an existing one made with other settings is discarded instead)."""
    expected = {"version": _MANIFEST_VERSION, "settings": settings}
    previous = _read_manifest(work_dir) if os.path.isdir(work_dir) else None
    if os.path.isdir(work_dir) and overwrite and previous != expected:
        shutil.rmtree(work_dir)
        previous = None
    if previous is None and os.path.isdir(work_dir) and _completed_shards(work_dir):
        raise ValueError(f"{work_dir} holds shards but no {MANIFEST_NAME}: their settings are unknown. Delete it (or "
                         f"pass `overwrite=True` / --overwrite) to start over.")
    if os.path.isdir(work_dir):  # temporary shards of a killed run, and the staging copy of an unfinished one
        for name in os.listdir(work_dir):
            if name.startswith(".tmp-") or name == "dataset":
                shutil.rmtree(os.path.join(work_dir, name), ignore_errors=True)
    if previous is not None:
        if previous != expected:
            changed = sorted(k for k in set(settings) | set(previous.get("settings", {}))
                             if previous.get("settings", {}).get(k) != settings.get(k))
            raise ValueError(
                f"{work_dir} holds an interrupted run with different settings (differing: {changed}). Resume it with "
                f"the same pipeline and settings, or delete {work_dir} (or pass `overwrite=True` / --overwrite) to "
                f"start over."
            )
        return
    os.makedirs(work_dir, exist_ok=True)
    manifest_path = os.path.join(work_dir, MANIFEST_NAME)
    tmp_path = manifest_path + ".tmp"
    with open(tmp_path, "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=2, sort_keys=True)
    os.replace(tmp_path, manifest_path)


def _write_shard(work_dir: str, rows: dict[str, list], features: Features, indices: list[int]) -> None:
    """Commit one batch: write it to a temporary directory, then rename it to its final shard name."""
    name = f"shard-{indices[0]:09d}-{indices[-1] + 1:09d}"
    tmp_dir = os.path.join(work_dir, f".tmp-{name}-{os.getpid()}")
    with _quiet_datasets():
        Dataset.from_dict(rows, features=features).save_to_disk(tmp_dir)
    os.replace(tmp_dir, os.path.join(work_dir, name))


def _assemble(work_dir: str, num_samples: int, seed: int) -> Dataset:
    """Concatenate the shards covering `range(num_samples)`; raise if an index is missing or duplicated."""
    parts, next_index = [], 0
    for start, stop, path in _completed_shards(work_dir):
        if start >= num_samples:
            continue
        if start != next_index:
            problem = "missing" if start > next_index else "generated twice"
            raise RuntimeError(f"Cannot assemble {work_dir}: indices {min(start, next_index)}.. are {problem}.")
        shard = datasets.load_from_disk(path)
        parts.append(shard.select(range(min(stop, num_samples) - start)) if stop > num_samples else shard)
        next_index = min(stop, num_samples)
    if next_index != num_samples:
        raise RuntimeError(f"Cannot assemble {work_dir}: indices {next_index}..{num_samples - 1} are missing.")
    dataset = datasets.concatenate_datasets(parts)
    if list(dataset["seed"]) != list(range(seed, seed + num_samples)):
        raise RuntimeError(f"Cannot assemble {work_dir}: the shards' seeds do not match seed {seed} + index.")
    return dataset


def _move_into_place(staging_dir: str, output_dir: str, overwrite: bool) -> None:
    """Atomically rename the finished dataset to `output_dir` (replacing an old one only if `overwrite`)."""
    if os.path.exists(output_dir):
        if not overwrite:
            raise FileExistsError(f"`output_dir` {output_dir} already exists; pass overwrite=True / --overwrite.")
        old = output_dir.rstrip(os.sep) + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(output_dir, old)
        os.replace(staging_dir, output_dir)
        shutil.rmtree(old)
    else:
        os.replace(staging_dir, output_dir)


class _SingleProcess:
    """Stand-in for `accelerate.PartialState` outside `accelerate launch`."""

    num_processes, process_index, is_main_process = 1, 0, True

    def wait_for_everyone(self) -> None:
        pass


def generate_to_disk(
    pipe,
    output_dir: str | os.PathLike,
    num_samples: int,
    batch_size: int = 8,
    seed: int = 0,
    num_inference_steps: int = 50,
    soft_label_temperature: float = 1.0,
    eta: float = 0.0,
    soft_label_dtype: str = "uint8",
    id2label: Mapping[int, str] | None = None,
    overwrite: bool = False,
    pipeline_name: str | None = None,
    distributed_state=None,
    callback: Callable[[GenerationProgress], None] | None = None,
    preview_rows: int = 8,
) -> GenerationOutput:
    r"""
    Generate `num_samples` pairs with `pipe` and save them as a dataset in `output_dir` (resumable, atomic).

    Row `i` is generated from seed `seed + i`. Each batch is committed as a shard to `<output_dir>.partial/`, whose
    `manifest.json` records the settings; a rerun with the same settings resumes at the first missing index (a
    rerun with different ones is refused). Under `accelerate launch`, pass the `accelerate.PartialState` as
    `distributed_state`: process `p` generates [`split_indices`]`(num_samples, P, p)`, then the main process
    assembles all shards once every process is done. The finished dataset (`save_to_disk` format), its card and
    its preview are written next to the shards and renamed to `output_dir` in one step, so `output_dir` only
    ever holds a complete dataset.

    Args:
        pipe ([`DAKTerPipeline`]): the generator, on the device to use.
        output_dir (`str` or `os.PathLike`): where the dataset goes (read it with `datasets.load_from_disk`).
        num_samples (`int`): number of pairs.
        batch_size (`int`, *optional*, defaults to 8): pairs per pipeline call (and per shard).
        seed (`int`, *optional*, defaults to 0): row `i` uses seed `seed + i`.
        num_inference_steps (`int`, *optional*, defaults to 50): denoising steps.
        soft_label_temperature (`float`, *optional*, defaults to 1.0): softmax temperature of the soft labels.
        eta (`float`, *optional*, defaults to 0.0): DDIM's eta.
        soft_label_dtype (`str`, *optional*, defaults to `"uint8"`): `"uint8"`, `"float16"` or `"float32"`.
        id2label (`dict`, *optional*): class names; by default those stored with the pipeline
            ([`resolve_id2label`]).
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing `output_dir` and discard an
            interrupted run with other settings; otherwise both are errors.
        pipeline_name (`str`, *optional*): how the card names the generator (defaults to `pipe.name_or_path`).
        distributed_state (`accelerate.PartialState`, *optional*): the process group of an `accelerate launch`.
        callback (`Callable[[GenerationProgress], None]`, *optional*): called after each committed batch.
        preview_rows (`int`, *optional*, defaults to 8): rows of the preview grid (0: no preview).

    Returns:
        [`GenerationOutput`]
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"`num_samples` must be a positive integer, got {num_samples!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    _check_soft_label_dtype(soft_label_dtype)
    state = distributed_state or _SingleProcess()
    output_dir = os.path.normpath(os.fspath(output_dir))
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(f"`output_dir` {output_dir} already exists; pass overwrite=True / --overwrite to "
                              f"replace it, or choose another directory.")
    work_dir = work_dir_for(output_dir)
    id2label = resolve_id2label(pipe, id2label)
    settings = generation_settings(pipe, batch_size, seed, num_inference_steps, soft_label_temperature, eta,
                                   soft_label_dtype, id2label)
    features = _features_for(pipe, id2label, soft_label_dtype)

    if state.is_main_process:
        _prepare_work_dir(work_dir, settings, overwrite)
    state.wait_for_everyone()

    own = split_indices(num_samples, state.num_processes, state.process_index)
    done = {i for start, stop, _ in _completed_shards(work_dir) for i in range(start, stop)}
    todo = [i for i in own if i not in done]
    num_resumed = len(own) - len(todo)
    if num_resumed:
        logger.info("Resuming %s: %d of %d pairs already generated.", work_dir, num_resumed, len(own))
    with _quiet_pipeline(pipe), tqdm(total=len(own), initial=num_resumed, desc="Generating pairs", unit="pair",
                                     disable=not state.is_main_process) as bar:
        num_done = num_resumed
        for batch_index, batch in enumerate(_batches(todo, batch_size)):
            rows = generate_rows(pipe, batch, seed, num_inference_steps, soft_label_temperature, eta,
                                 soft_label_dtype, pad_to=batch_size)
            _write_shard(work_dir, rows, features, batch)
            num_done += len(batch)
            bar.update(len(batch))
            if callback is not None:
                callback(GenerationProgress(batch_index, batch, num_done, len(own)))
    state.wait_for_everyone()

    card_path, preview_path = os.path.join(output_dir, CARD_NAME), None
    if state.is_main_process:
        staging = os.path.join(work_dir, "dataset")
        with _quiet_datasets():
            dataset = _assemble(work_dir, num_samples, seed)
            dataset.save_to_disk(staging)
        card = make_dataset_card(settings, num_samples, pipeline_name or getattr(pipe, "name_or_path", None),
                                 soft_label_dtype)
        card.save(os.path.join(staging, CARD_NAME))
        if preview_rows:
            preview_path = save_preview(dataset, os.path.join(staging, PREVIEW_NAME), id2label, preview_rows)
        _move_into_place(staging, output_dir, overwrite)
        shutil.rmtree(work_dir)
        if preview_path:
            preview_path = os.path.join(output_dir, PREVIEW_NAME)
    state.wait_for_everyone()
    if preview_path is None and os.path.isfile(os.path.join(output_dir, PREVIEW_NAME)):
        preview_path = os.path.join(output_dir, PREVIEW_NAME)
    return GenerationOutput(dataset=datasets.load_from_disk(output_dir), output_dir=output_dir, card_path=card_path,
                            preview_path=preview_path, num_generated=len(todo), num_resumed=num_resumed)


# ----------------------------------------------------------------------------------------------------------------
# Preview
# ----------------------------------------------------------------------------------------------------------------


def save_preview(
    dataset: Dataset, path: str, id2label: Mapping[int, str] | None = None, max_rows: int = 8
) -> str | None:
    """Draw the first `max_rows` rows of a generated dataset as a grid (image | soft label colour map | argmax)
    with [`dakter_hf.visualization.save_sample_grid`]. Returns the path, or None if that module is missing."""
    try:
        from .visualization import save_sample_grid
    except ImportError as error:
        logger.warning("No preview drawn (%s): dakter_hf.visualization.save_sample_grid is unavailable.", error)
        return None
    rows = dataset.select(range(min(max_rows, len(dataset)))).with_format("numpy")
    images = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in rows["image"]])
    soft_labels = decode_soft_labels(rows["soft_label"], dtype=dataset.features)
    # `labels=None`: the stored label is the argmax of the soft label, which the grid draws already
    save_sample_grid(images, soft_labels, None, path, id2label=dict(id2label or {}) or None, max_rows=max_rows,
                     title="DAKTer generated pairs (synthetic)")
    return path
