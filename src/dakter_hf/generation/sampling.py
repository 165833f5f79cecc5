"""Sampling a generated dataset: row `i` of a dataset is generated from seed `seed + i` with its own
`torch.Generator`, so any subset of a dataset can be regenerated exactly ([`generate_dataset`] with `indices`), in
memory or written to disk by the shard store ([`generate_to_disk`]).

The columns (`image`, `soft_label`, `label`, `seed`) are described in [`dakter_hf.data.generated`]; soft labels are
stored with [`dakter_hf.labels.encode_soft_labels`].
"""

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import PIL.Image
import torch
from datasets import Dataset, Features
from tqdm.auto import tqdm

from ..data.generated import generated_features, image_mode
from ..errors import NonFiniteError
from ..labels import check_soft_label_dtype, encode_soft_labels, resolve_id2label
from ..model_cards import make_dataset_card, read_card_metadata
from ..precision import warn_if_emulated_bf16
from .settings import generation_settings
from .store import (
    GenerationOutput,
    GenerationProgress,
    check_pipeline,
    check_run_arguments,
    write_generated_dataset,
)


def _sample_hw(unet_config) -> tuple[int, int]:
    size = unet_config.sample_size
    return (size, size) if isinstance(size, int) else tuple(size)


COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
"""Compute dtypes of the denoiser during sampling (`dtype` of [`generate_rows`], `dakter-generate --dtype`)."""


def check_compute_dtype(dtype: str) -> str:
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"`dtype` must be one of {COMPUTE_DTYPES}, got {dtype!r}.")
    return dtype


def compute_autocast(pipe, dtype: str = "float32"):
    """The context in which `pipe` samples with its denoiser computing in `dtype`: `torch.autocast` on the
    pipeline's device for `"bfloat16"` / `"float16"` (the weights and the sampler's state stay float32, so only the
    convolutions, matrix products and attention run in low precision), nothing for `"float32"`. Warns
    ([`~dakter_hf.precision.EmulatedBF16Warning`], once) for `"bfloat16"` on a CPU without bf16 instructions."""
    if check_compute_dtype(dtype) == "float32":
        return contextlib.nullcontext()
    warn_if_emulated_bf16(pipe.device.type, dtype, "dtype='bfloat16' (dakter-generate --dtype bfloat16)")
    return torch.autocast(pipe.device.type, dtype=getattr(torch, dtype))


def soft_label_temperature_of(pipe, soft_label_temperature: float | None = None) -> float:
    """`soft_label_temperature`, or when it is `None` the pipeline's stored default (1.0 when it stores none): the
    temperature a generated dataset is sampled with, recorded in its settings and card."""
    if soft_label_temperature is not None:
        return soft_label_temperature
    return float(getattr(pipe, "default_soft_label_temperature", 1.0))


@contextlib.contextmanager
def quiet_pipeline(pipe):
    """Silence the pipeline's per-step progress bar (generation shows one bar over samples)."""
    previous = dict(getattr(pipe, "_progress_bar_config", {}))
    pipe.set_progress_bar_config(disable=True)
    try:
        yield pipe
    finally:
        pipe._progress_bar_config = previous


def check_finite_outputs(seeds: Sequence[int], **outputs: torch.Tensor) -> None:
    """Raise [`NonFiniteError`] if any of a batch's `outputs` (e.g. `images=...`) holds NaN or inf: its model is
    broken, and nothing of the batch (the rows of `seeds`) may be saved."""
    for name, values in outputs.items():
        if not bool(torch.isfinite(values).all()):
            raise NonFiniteError(f"the pipeline produced non-finite {name.replace('_', ' ')} for the seeds "
                                 f"{seeds[0]}..{seeds[-1]}: its model is broken (a diverged training run?); nothing "
                                 "of this batch is saved.")


def generate_rows(
    pipe,
    indices: Sequence[int],
    seed: int = 0,
    num_inference_steps: int = 50,
    soft_label_temperature: float | None = None,
    eta: float = 0.0,
    soft_label_dtype: str = "uint8",
    pad_to: int | None = None,
    dtype: str = "float32",
) -> dict[str, list]:
    """Generate the rows `indices` of a dataset in one pipeline call: row `i` from seed `seed + i`.

    Each row has its own CPU `torch.Generator` (also on accelerators, so the noise is the same on every device
    type), so a row does not depend on which other rows share its batch. Floating-point kernels may still round
    differently for different batch sizes (about 1e-6 on CPU, enough to move a quantised value by one level), so a
    batch smaller than `pad_to` is padded with repeats of its last seed, whose rows are dropped: with the same
    `pad_to`, a row is bit-identical whatever batch it is generated in. `dtype` is the denoiser's compute dtype
    ([`compute_autocast`]): `"bfloat16"` samples faster on CPUs with bf16 instructions and on GPUs, with rows that
    differ from float32 ones by the bf16 rounding.

    Returns:
        `dict`: columns `image` (PIL images), `soft_label` (encoded arrays `(K, H, W)`), `label` (PIL masks),
        `seed` (ints), ready for [`generated_features`].
    """
    if not len(indices):
        raise ValueError("`indices` is empty: nothing to generate.")
    seeds = [seed + int(i) for i in indices]
    padded = seeds + seeds[-1:] * max(0, (pad_to or 0) - len(seeds))
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in padded]
    with compute_autocast(pipe, dtype):
        out = pipe(batch_size=len(padded), generator=generators, num_inference_steps=num_inference_steps,
                   soft_label_temperature=soft_label_temperature, eta=eta, output_type="pt")
    n = len(seeds)
    check_finite_outputs(seeds, images=out.images[:n], soft_labels=out.soft_labels[:n])
    images = (out.images[:n].float().cpu() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if image_mode(images.shape[-1]) == "L":
        images = images[..., 0]
    labels = out.labels[:n].cpu().numpy().astype(np.uint8)
    soft_labels = encode_soft_labels(out.soft_labels[:n].float().cpu(), soft_label_dtype)
    return {  # 2-D uint8 arrays become mode "L" images, (H, W, 3) ones mode "RGB"
        "image": [PIL.Image.fromarray(image) for image in images],
        "soft_label": list(soft_labels),
        "label": [PIL.Image.fromarray(label) for label in labels],
        "seed": seeds,
    }


def pipeline_features(pipe, id2label: Mapping[int, str], soft_label_dtype: str = "uint8") -> Features:
    """The [`generated_features`] of the datasets `pipe` generates (its sample size, classes and image channels)."""
    config = pipe.unet.config
    height, width = _sample_hw(config)
    return generated_features(config.num_classes, height, width, id2label, soft_label_dtype, config.image_channels)


def generate_dataset(
    pipe,
    indices: Sequence[int] | int,
    seed: int = 0,
    batch_size: int = 8,
    num_inference_steps: int = 50,
    soft_label_temperature: float | None = None,
    eta: float = 0.0,
    soft_label_dtype: str = "uint8",
    id2label: Mapping[int, str] | None = None,
    dtype: str = "float32",
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
    check_compute_dtype(dtype)
    soft_label_temperature = soft_label_temperature_of(pipe, soft_label_temperature)
    features = pipeline_features(pipe, resolve_id2label(pipe, id2label), soft_label_dtype)
    columns: dict[str, list] = {name: [] for name in features}
    with quiet_pipeline(pipe):
        # batches in the given order, so the rows come out in the order asked for
        for start in tqdm(range(0, len(indices), batch_size), desc="Generating pairs", unit="batch"):
            for name, values in generate_rows(pipe, indices[start:start + batch_size], seed, num_inference_steps,
                                              soft_label_temperature, eta, soft_label_dtype,
                                              pad_to=batch_size, dtype=dtype).items():
                columns[name].extend(values)
    return Dataset.from_dict(columns, features=features)


def generate_to_disk(
    pipe,
    output_dir: str | os.PathLike,
    num_samples: int,
    batch_size: int = 8,
    seed: int = 0,
    num_inference_steps: int = 50,
    soft_label_temperature: float | None = None,
    eta: float = 0.0,
    soft_label_dtype: str = "uint8",
    id2label: Mapping[int, str] | None = None,
    overwrite: bool = False,
    pipeline_name: str | None = None,
    distributed_state=None,
    callback: Callable[[GenerationProgress], None] | None = None,
    preview_rows: int = 8,
    dtype: str = "float32",
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
        soft_label_temperature (`float`, *optional*): softmax temperature of the soft labels; by default the
            pipeline's stored one (1.0 when it stores none), recorded in the settings and the card.
        eta (`float`, *optional*, defaults to 0.0): DDIM's eta.
        soft_label_dtype (`str`, *optional*, defaults to `"uint8"`): `"uint8"`, `"float16"` or `"float32"`.
        id2label (`dict`, *optional*): class names; by default those stored with the pipeline
            ([`resolve_id2label`]).
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing `output_dir` (a dataset only) and
            discard an interrupted run with other settings; otherwise both are errors. Only directories this
            function created (they carry its marker file) are ever deleted.
        pipeline_name (`str`, *optional*): how the card names the generator (defaults to `pipe.name_or_path`).
        distributed_state (`accelerate.PartialState`, *optional*): the process group of an `accelerate launch`.
        callback (`Callable[[GenerationProgress], None]`, *optional*): called after each committed batch.
        preview_rows (`int`, *optional*, defaults to 8): rows of the preview grid (0: no preview).
        dtype (`str`, *optional*, defaults to `"float32"`): compute dtype of the denoiser, `"float32"`,
            `"bfloat16"` or `"float16"` (autocast, see [`compute_autocast`]); recorded in the settings.

    Returns:
        [`GenerationOutput`]
    """
    output_dir = check_run_arguments(output_dir, num_samples, batch_size, overwrite)
    check_soft_label_dtype(soft_label_dtype)
    check_compute_dtype(dtype)
    check_pipeline(pipe, pipeline_name)
    soft_label_temperature = soft_label_temperature_of(pipe, soft_label_temperature)
    id2label = resolve_id2label(pipe, id2label)
    settings = generation_settings(pipe, batch_size, seed, num_inference_steps, soft_label_temperature, eta,
                                   soft_label_dtype, id2label, dtype)
    source = getattr(pipe, "name_or_path", None)
    card = make_dataset_card(settings, num_samples, pipeline_name or source, soft_label_dtype,
                             generator_metadata=read_card_metadata(source))

    def make_rows(batch: list[int]) -> dict[str, list]:
        return generate_rows(pipe, batch, seed, num_inference_steps, soft_label_temperature, eta, soft_label_dtype,
                             pad_to=batch_size, dtype=dtype)

    with quiet_pipeline(pipe):
        return write_generated_dataset(make_rows, output_dir, num_samples, settings,
                                       pipeline_features(pipe, id2label, soft_label_dtype), card, batch_size, seed,
                                       id2label, overwrite, distributed_state, callback, preview_rows)
