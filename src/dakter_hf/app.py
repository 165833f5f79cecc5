"""A Gradio web app to look at a DAKTer generator before trusting it (`dakter app PIPELINE`, `examples/app.py`).

Joint sampling: a seed, a number of steps, a scheduler and a soft-label temperature give a few pairs, drawn as
image | soft label | overlay, with the pairs to download as a generated dataset (the same rows, schema and card as
`dakter-generate` writes with those settings). A task pipeline that the installed `dakter_hf` provides adds its tab:
mask -> image (`DAKTerMaskToImagePipeline`) and segmentation of an uploaded SAR image (`DAKTerSegmentationPipeline`);
see [`TASK_TABS`].

Gradio is an optional dependency (`pip install "dakter_hf[app]"`): it is imported by [`build_app`] only. The
sampling itself ([`sample_pairs`], [`render_pairs`], [`save_pairs_archive`]) runs without it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .generation import SCHEDULERS, decode_soft_labels, generate_dataset, generation_settings, resolve_id2label
from .model_cards import CARD_NAME, make_dataset_card
from .pipelines import DAKTerPipeline
from .visualization import label_overlay, soft_label_to_rgb


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

#: Further tabs, one per task pipeline: `(name of the pipeline class in dakter_hf, function adding the tab)`. A tab
#: is shown when `dakter_hf` exports the class; its function gets the pipeline built with `Class.from_pipe(pipe)`
#: (sharing the loaded weights) and is called inside a `gradio.Tab`.
TASK_TABS: list[tuple[str, Callable]] = []


def _task_pipelines(pipe: DAKTerPipeline) -> list[tuple[str, Callable, object]]:
    import dakter_hf

    found = []
    for class_name, add_tab in TASK_TABS:
        task_class = getattr(dakter_hf, class_name, None)
        if task_class is not None:
            found.append((class_name, add_tab, task_class.from_pipe(pipe)))
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
                temperature = gr.Slider(0.1, 5.0, value=1.0, step=0.1, label="soft-label temperature")
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
        for class_name, add_tab, task_pipe in _task_pipelines(pipe):
            with gr.Tab(class_name):
                add_tab(task_pipe)
    return app
