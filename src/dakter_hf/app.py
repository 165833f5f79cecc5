"""A Gradio web app to look at a DAKTer generator before trusting it (`dakter app PIPELINE`, `examples/app.py`).

Joint sampling: a seed, a number of steps, a scheduler and a soft-label temperature give a few pairs, drawn as
image | soft label | overlay, with the pairs to download as a generated dataset (the same rows, schema and card as
`dakter-generate` writes with those settings). A task pipeline that the installed `dakter_hf` provides adds its tab:
mask -> image (`DAKTerMaskToImagePipeline`) and segmentation of an uploaded SAR image (`DAKTerSegmentationPipeline`);
see [`TASK_TABS`].

Gradio is an optional dependency (`pip install "dakter_hf[app]"`): it is imported by [`build_app`] only. The
work behind the buttons ([`sample_pairs`], [`render_pairs`], [`save_pairs_archive`], [`images_for_mask`],
[`segment_image`]) runs without it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .generation import generate_dataset, generation_settings
from .labels import decode_soft_labels, resolve_id2label
from .model_cards import CARD_NAME, make_dataset_card
from .overlays import label_overlay, soft_label_to_rgb
from .pipelines import DAKTerMaskToImagePipeline, DAKTerPipeline, DAKTerSegmentationPipeline
from .pipelines.schedulers import SCHEDULERS


#: Choice of the scheduler menu that keeps the pipeline's own scheduler.
PIPELINE_SCHEDULER = "pipeline default"
#: Most pairs one click generates (the app is for looking, `dakter generate` is for datasets).
MAX_PAIRS = 8


@dataclass
class SamplingSettings:
    """What one click of "Generate" asks for; row i of the pairs is generated from seed `seed + i`, as in
    `dakter generate --seed`."""

    seed: int = 0
    num_inference_steps: int = 25
    scheduler: str = PIPELINE_SCHEDULER
    soft_label_temperature: float = 1.0
    num_pairs: int = 2

    def check(self) -> SamplingSettings:
        """Return the settings with integer fields as ints, or raise `ValueError` naming the bad field."""
        if self.scheduler != PIPELINE_SCHEDULER and self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be {PIPELINE_SCHEDULER!r} or one of {sorted(SCHEDULERS)}, "
                             f"got {self.scheduler!r}.")
        if not float(self.num_inference_steps).is_integer() or self.num_inference_steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.num_inference_steps}.")
        if not 1 <= self.num_pairs <= MAX_PAIRS:
            raise ValueError(f"pairs must be between 1 and {MAX_PAIRS}, got {self.num_pairs}.")
        if not self.soft_label_temperature > 0:
            raise ValueError(f"soft-label temperature must be > 0, got {self.soft_label_temperature}.")
        if not float(self.seed).is_integer() or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}.")
        return SamplingSettings(int(self.seed), int(self.num_inference_steps), self.scheduler,
                                float(self.soft_label_temperature), int(self.num_pairs))


def with_scheduler(pipe: DAKTerPipeline, name: str) -> DAKTerPipeline:
    """A pipeline sharing `pipe`'s model with a fresh scheduler `name` (from `pipe`'s scheduler config, so the noise
    schedule is kept): the app's sessions never change the loaded pipeline."""
    scheduler_class = type(pipe.scheduler) if name == PIPELINE_SCHEDULER else SCHEDULERS[name]
    scheduler = scheduler_class.from_config(pipe.scheduler.config)
    sampler = DAKTerPipeline(unet=pipe.unet, scheduler=scheduler, id2label=pipe.config.get("id2label"))
    sampler.set_progress_bar_config(disable=True)
    return sampler


def sample_pairs(pipe: DAKTerPipeline, settings: SamplingSettings):
    """Generate `settings.num_pairs` pairs as the rows of a generated dataset (`datasets.Dataset`, soft labels as
    float32), and the generation settings that its card records."""
    settings = settings.check()
    sampler = with_scheduler(pipe, settings.scheduler)
    id2label = resolve_id2label(sampler)
    dataset = generate_dataset(sampler, settings.num_pairs, seed=settings.seed, batch_size=settings.num_pairs,
                               num_inference_steps=settings.num_inference_steps,
                               soft_label_temperature=settings.soft_label_temperature, soft_label_dtype="float32",
                               id2label=id2label)
    recorded = generation_settings(sampler, settings.num_pairs, settings.seed, settings.num_inference_steps,
                                   settings.soft_label_temperature, 0.0, "float32", id2label)
    return dataset, recorded


def render_pairs(dataset) -> tuple[list, list, list]:
    """The (image, caption) lists of the three columns image | soft label | overlay of generated rows."""
    rows = dataset.with_format("numpy")
    soft_labels = decode_soft_labels(rows["soft_label"], dtype=dataset.features)
    images, labels, overlays = [], [], []
    for image, soft_label, seed in zip(rows["image"], soft_labels, rows["seed"]):
        grey = np.asarray(image, dtype=np.float32) / 255.0
        images.append((np.asarray(image, dtype=np.uint8), f"seed {seed}"))
        labels.append((soft_label_to_rgb(soft_label), f"seed {seed}"))
        overlays.append((label_overlay(grey, soft_label), f"seed {seed}"))
    return images, labels, overlays


def save_pairs_archive(dataset, settings: dict, pipeline_name: str, directory: str) -> str:
    """Save generated rows as a dataset directory with its card (as `dakter generate` writes it: read it back with
    `datasets.load_from_disk`) and zip it; returns the path of the zip file."""
    first, last = dataset[0]["seed"], dataset[-1]["seed"]
    name = f"dakter-pairs-seed{first}-{last}"
    target = os.path.join(directory, name)
    dataset.save_to_disk(target)
    make_dataset_card(settings, len(dataset), pipeline_name=pipeline_name,
                      soft_label_dtype=settings["soft_label_dtype"]).save(os.path.join(target, CARD_NAME))
    archive = shutil.make_archive(target, "zip", root_dir=directory, base_dir=name)
    shutil.rmtree(target)
    return archive


# ------------------------------------------------------------------------------------------------------------------
# The Gradio interface
# ------------------------------------------------------------------------------------------------------------------

def mask_classes(mask, num_classes: int) -> np.ndarray:
    """An uploaded mask as `(H, W)` class indices: a greyscale PNG of class ids (the datasets' format), or, for two
    classes, a black / white drawing (white = class 1). Raises `ValueError` for other values."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., :3].max(axis=-1)
    values = set(np.unique(mask).tolist())
    if num_classes == 2 and values <= {0, 255}:
        return (mask == 255).astype(np.int64)
    if max(values) >= num_classes:
        raise ValueError(f"The mask holds values {sorted(values)[:8]}: expected class ids 0..{num_classes - 1} (or, "
                         "for two classes, a black / white drawing).")
    return mask.astype(np.int64)


def images_for_mask(task_pipe, mask, num_images: int, seed: int, num_inference_steps: int) -> list:
    """Images drawn by `DAKTerMaskToImagePipeline` for one mask: `(image, caption)` and `(overlay, caption)` items,
    image i from seed `seed + i`."""
    classes = mask_classes(mask, task_pipe.unet.config.num_classes)
    generators = [torch.Generator().manual_seed(int(seed) + i) for i in range(int(num_images))]
    out = task_pipe(masks=classes, num_images_per_mask=int(num_images), generator=generators,
                    num_inference_steps=int(num_inference_steps), output_type="pt")
    items = []
    for i, image in enumerate(out.images.float().cpu()):
        grey = image.mean(dim=0).numpy()
        size = grey.shape
        resized = torch.nn.functional.interpolate(torch.as_tensor(classes)[None, None].float(), size=size,
                                                  mode="nearest")[0, 0].long()
        onehot = torch.nn.functional.one_hot(resized, task_pipe.unet.config.num_classes).permute(2, 0, 1).numpy()
        items += [((grey * 255).round().astype(np.uint8), f"seed {int(seed) + i}"),
                  (label_overlay(grey, onehot), f"seed {int(seed) + i}: mask over the image")]
    return items


def segment_image(task_pipe, image, num_samples: int, seed: int, num_inference_steps: int,
                  soft_label_temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """`DAKTerSegmentationPipeline` on one uploaded image: its soft label and overlay as RGB arrays."""
    image = np.asarray(image)
    grey = image[..., :3].mean(axis=-1) if image.ndim == 3 else image.astype(np.float64)
    out = task_pipe(images=grey.round().astype(np.uint8), num_samples=int(num_samples),
                    generator=torch.Generator().manual_seed(int(seed)), num_inference_steps=int(num_inference_steps),
                    soft_label_temperature=float(soft_label_temperature), output_type="pt")
    soft_label = out.soft_labels[0].float().cpu().numpy()
    return soft_label_to_rgb(soft_label), label_overlay(grey / 255.0, soft_label)


def _mask_to_image_tab(task_pipe) -> None:
    import gradio as gr

    def run(mask, num_images, seed, steps):
        if mask is None:
            raise gr.Error("Upload a mask first.")
        try:
            return images_for_mask(task_pipe, mask, num_images, seed, steps)
        except ValueError as error:
            raise gr.Error(str(error)) from error

    with gr.Row():
        mask = gr.Image(type="numpy", image_mode="L", label="mask (class ids, or black / white)", elem_id="mask")
        with gr.Column():
            num_images = gr.Slider(1, MAX_PAIRS, value=2, step=1, label="images")
            seed = gr.Number(value=0, precision=0, minimum=0, label="seed (image i uses seed + i)")
            steps = gr.Slider(1, 200, value=25, step=1, label="steps")
            button = gr.Button("Draw images", variant="primary", elem_id="draw-images")
    gallery = gr.Gallery(label="image | mask over the image", columns=2, height="auto", elem_id="mask-images")
    button.click(run, [mask, num_images, seed, steps], gallery)


def _temperature_slider(gr, pipe):
    """The soft-label temperature slider, starting at the pipeline's stored default (1.0 when it stores none)."""
    default = float(getattr(pipe, "default_soft_label_temperature", 1.0))
    return gr.Slider(0.1, max(5.0, default), value=default, step=0.1, label="soft-label temperature")


def _segmentation_tab(task_pipe) -> None:
    import gradio as gr

    def run(image, num_samples, seed, steps, temperature):
        if image is None:
            raise gr.Error("Upload a SAR image first.")
        try:
            return segment_image(task_pipe, image, num_samples, seed, steps, temperature)
        except ValueError as error:
            raise gr.Error(str(error)) from error

    with gr.Row():
        image = gr.Image(type="numpy", image_mode="L", label="SAR image", elem_id="sar-image")
        with gr.Column():
            num_samples = gr.Slider(1, 8, value=1, step=1, label="draws averaged")
            seed = gr.Number(value=0, precision=0, minimum=0, label="seed")
            steps = gr.Slider(1, 200, value=25, step=1, label="steps")
            temperature = _temperature_slider(gr, task_pipe)
            button = gr.Button("Segment", variant="primary", elem_id="segment")
    with gr.Row():
        soft_label = gr.Image(label="soft label", elem_id="segmentation-soft-label")
        overlay = gr.Image(label="overlay", elem_id="segmentation-overlay")
    button.click(run, [image, num_samples, seed, steps, temperature], [soft_label, overlay])


#: Tabs of the task pipelines: `(tab title, pipeline class, function adding the tab)`. Each function gets the pipeline
#: built with `Class.from_pipe(pipe)` (sharing the loaded weights) and is called inside a `gradio.Tab`.
TASK_TABS: list[tuple[str, type, Callable]] = [
    ("Mask -> image", DAKTerMaskToImagePipeline, _mask_to_image_tab),
    ("Segmentation", DAKTerSegmentationPipeline, _segmentation_tab),
]


def _task_pipelines(pipe: DAKTerPipeline) -> list[tuple[str, Callable, object]]:
    found = []
    for title, task_class, add_tab in TASK_TABS:
        task_pipe = task_class.from_pipe(pipe)
        task_pipe.set_progress_bar_config(disable=True)
        found.append((title, add_tab, task_pipe))
    return found


def load_pipeline(name_or_path: str, device: str | None = None) -> DAKTerPipeline:
    """Load the app's pipeline from a directory or a Hub id, with a clear error when neither holds one."""
    pipe = DAKTerPipeline.from_pretrained(name_or_path)
    if device:
        pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_app(pipe: DAKTerPipeline | str, pipeline_name: str | None = None, work_dir: str | None = None):
    """
    Build the Gradio app of a DAKTer pipeline.

    Args:
        pipe ([`DAKTerPipeline`] or `str`): the pipeline, or its directory / Hub id.
        pipeline_name (`str`, *optional*): the name shown and recorded in the downloaded dataset cards; defaults to
            the path the pipeline was loaded from.
        work_dir (`str`, *optional*): where the downloadable archives are written; defaults to a new temporary
            directory.

    Returns:
        `gradio.Blocks`: call `.launch()` on it.
    """
    try:
        import gradio as gr
    except ImportError as error:
        raise ImportError('The DAKTer app needs gradio: pip install "dakter_hf[app]"') from error

    if isinstance(pipe, (str, os.PathLike)):
        pipeline_name = pipeline_name or os.fspath(pipe)
        pipe = load_pipeline(os.fspath(pipe))
    pipeline_name = pipeline_name or getattr(pipe, "name_or_path", None) or "a DAKTer pipeline"
    work_dir = work_dir or tempfile.mkdtemp(prefix="dakter-app-")
    os.makedirs(work_dir, exist_ok=True)
    config = pipe.unet.config
    size = config.sample_size
    classes = ", ".join(f"{k} = {v}" for k, v in resolve_id2label(pipe).items())

    def generate(seed, steps, scheduler, temperature, num_pairs):
        settings = SamplingSettings(seed, steps, scheduler, temperature, num_pairs)
        try:
            dataset, recorded = sample_pairs(pipe, settings)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        images, soft_labels, overlays = render_pairs(dataset)
        archive = save_pairs_archive(dataset, recorded, pipeline_name, tempfile.mkdtemp(dir=work_dir))
        return images, soft_labels, overlays, archive

    with gr.Blocks(title="DAKTer generator") as app:
        gr.Markdown(f"# DAKTer generator\n`{pipeline_name}`: {size}x{size} SAR images with soft labels over "
                    f"{config.num_classes} classes ({classes}). Every pair is synthetic.")
        with gr.Tab("Joint sampling"):
            with gr.Row():
                seed = gr.Number(value=0, precision=0, minimum=0, label="seed (pair i uses seed + i)")
                steps = gr.Slider(1, 200, value=25, step=1, label="steps")
                scheduler = gr.Dropdown([PIPELINE_SCHEDULER, *sorted(SCHEDULERS)], value=PIPELINE_SCHEDULER,
                                        label="scheduler")
                temperature = _temperature_slider(gr, pipe)
                num_pairs = gr.Slider(1, MAX_PAIRS, value=2, step=1, label="pairs")
            button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Row():
                gallery_options = {"columns": 2, "height": "auto", "object_fit": "contain", "preview": False}
                images = gr.Gallery(label="image", elem_id="images", **gallery_options)
                soft_labels = gr.Gallery(label="soft label", elem_id="soft-labels", **gallery_options)
                overlays = gr.Gallery(label="overlay", elem_id="overlays", **gallery_options)
            archive = gr.File(label="generated pairs (a `datasets` dataset with its card, zipped)",
                              elem_id="pairs-archive")
            button.click(generate, [seed, steps, scheduler, temperature, num_pairs],
                         [images, soft_labels, overlays, archive])
        for title, add_tab, task_pipe in _task_pipelines(pipe):
            with gr.Tab(title):
                add_tab(task_pipe)
    return app
