"""Generated images labelled again: their soft labels replaced (relabelling) or scored (pair quality) by a labeller.

A generator's pairs carry its own soft labels, from the one joint draw that made the image. A labeller
(`dakter_hf.distill.labellers`) gives the same images other labels:

* a student trained on the real pairs -- what a teacher would give -- makes the control arm of DAKTer's benchmark,
  which separates the value of the generator's images from the value of its labels;
* the generator's own segmentation pipeline, averaging `num_samples` draws of p(label | image), gives posterior soft
  labels instead of the single joint draw.

[`relabel_to_disk`] writes a copy whose `soft_label` (in the column's own storage type) and `label` (their argmax)
are the labeller's, or, with `score_only=True`, a copy whose pairs are unchanged and which holds the pair-quality
columns (`dakter_hf.distill.pair_quality`). It writes through the resumable shard store of `dakter_hf.generation`:
rerunning the same command after an interruption resumes it, and `output_dir` only ever holds a complete dataset with
its card (which records the labeller and its settings). [`relabel_with_student`] is the in-memory relabelling.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import datasets
import numpy as np
import PIL.Image
import torch
from datasets import Features, Value
from huggingface_hub import DatasetCard
from tqdm.auto import tqdm

from ..data.generated import get_generated_id2label
from ..errors import UsageError
from ..generation.store import check_run_arguments, work_dir_for, write_generated_dataset
from ..labels import decode_soft_labels, encode_soft_labels
from ..model_cards import CARD_NAME, make_labelled_dataset_card
from .data import _soft_label_shape
from .labellers import StudentLabeller
from .pair_quality import PAIR_QUALITY_COLUMNS, pair_quality_scores


__all__ = ["labelled_features", "relabel_to_disk", "relabel_with_student"]


def _check_labeller(generated, labeller) -> tuple[int, int, int]:
    num_classes, height, width = _soft_label_shape(generated)
    if labeller.num_classes != num_classes:
        raise UsageError(f"The {labeller.kind} labeller {labeller.name} predicts {labeller.num_classes} classes but "
                         f"the generated soft labels have {num_classes}: label with a model trained on the same "
                         "classes.")
    return num_classes, height, width


def labelled_features(generated, score_only: bool) -> Features:
    """The features of a labelled copy: the source's (without stale score columns) when relabelling, plus the two
    float32 score columns when scoring."""
    features = Features({k: v for k, v in generated.features.items() if k not in PAIR_QUALITY_COLUMNS})
    if score_only:
        features.update({name: Value("float32") for name in PAIR_QUALITY_COLUMNS})
    return features


def _label_rows(generated, labeller, score_only: bool):
    """`make_rows(indices)` of the copy: the source rows with new labels, or with their scores."""
    _, height, width = _check_labeller(generated, labeller)
    stored = generated.features
    dtype = stored["soft_label"].dtype
    source = generated.select_columns([c for c in generated.column_names if c not in PAIR_QUALITY_COLUMNS])
    soft_source = generated.with_format("numpy", columns=["soft_label"], dtype=dtype)

    def make_rows(indices: list[int]) -> dict[str, list]:
        rows = source[indices]
        new = labeller(rows["image"], indices, (height, width))
        if score_only:
            own = torch.from_numpy(decode_soft_labels(np.asarray(soft_source[indices]["soft_label"]), dtype=stored))
            return {**rows, **pair_quality_scores(own, new)}
        return {**rows, "soft_label": list(encode_soft_labels(new, dtype)),
                "label": [PIL.Image.fromarray(label.astype(np.uint8)) for label in new.argmax(dim=1).numpy()]}

    return make_rows


@torch.no_grad()
def relabel_with_student(generated, model, image_processor, batch_size: int = 32, temperature: float = 1.0,
                         show_progress: bool = True):
    """A copy of a generated dataset (in memory) whose labels are a segmentation model's predictions on its images.

    Each image goes through `image_processor` (the student's own resize and normalisation); the logits are
    upsampled bilinearly to the stored soft labels' size, and `softmax(logits / temperature)` replaces `soft_label`
    (encoded in the column's storage type, e.g. `uint8`), its argmax replaces `label`. Images, seeds and features
    are kept (stale `pair_quality` columns are dropped), so the copy is read like any generated dataset.

    Args:
        generated (`datasets.Dataset`): a generated dataset (`image`, `soft_label`, `label`, ...).
        model: a `SegformerForSemanticSegmentation` (any model returning `.logits` `(B, K, h, w)`) over the
            dataset's K classes; run in eval mode.
        image_processor: the model's image processor (e.g. `AutoImageProcessor.from_pretrained(student_dir)`).
        batch_size (`int`, *optional*, defaults to 32): images per forward pass.
        temperature (`float`, *optional*, defaults to 1.0): softmax temperature of the new soft labels.
        show_progress (`bool`, *optional*, defaults to `True`): a progress bar.

    Returns:
        `datasets.Dataset` (in memory).

    Raises:
        `ValueError`: the model's number of classes is not the dataset's, or `temperature` is not positive.
    """
    was_training = model.training
    labeller = StudentLabeller(model, image_processor, temperature)
    make_rows = _label_rows(generated, labeller, score_only=False)
    progress = tqdm(total=len(generated), desc="Relabelling", unit="pair", disable=not show_progress)
    try:
        parts = []
        for start in range(0, len(generated), batch_size):
            indices = list(range(start, min(start + batch_size, len(generated))))
            parts.append(datasets.Dataset.from_dict(make_rows(indices), features=labelled_features(generated, False)))
            progress.update(len(indices))
        return datasets.concatenate_datasets(parts)
    finally:
        progress.close()
        model.train(was_training)


def _source_card(source: str | None) -> DatasetCard | None:
    path = os.path.join(source, CARD_NAME) if source and os.path.isdir(source) else None
    if path is None or not os.path.isfile(path):
        return None
    return DatasetCard.load(path, ignore_metadata_errors=True)


def _discard_earlier_staging(output_dir: str) -> None:
    """Versions before the shard store staged the whole copy in `<output_dir>.partial` (a bare `save_to_disk`
    dataset, no manifest, no marker) and started over after an interruption: such a leftover is discarded."""
    staging = work_dir_for(output_dir)
    names = set(os.listdir(staging)) if os.path.isdir(staging) and not os.path.islink(staging) else set()
    saved = {"state.json", "dataset_info.json"}
    if saved <= names and all(name in saved or name.startswith("data-") for name in names):
        shutil.rmtree(staging)


def relabel_to_disk(generated, labeller, output_dir: str | os.PathLike, score_only: bool = False,
                    batch_size: int = 32, source: str | None = None, overwrite: bool = False,
                    preview_rows: int = 8) -> Any:
    """Write the labelled copy of a generated dataset: resumable, atomic, with a card naming the labeller.

    Args:
        generated (`datasets.Dataset`): the generated dataset (`image`, `soft_label`, `label`, `seed`, ...).
        labeller: a [`StudentLabeller`] or [`GeneratorLabeller`] (`dakter_hf.distill.labellers.load_labeller`).
        output_dir (`str`): where the copy goes (work in progress in `<output_dir>.partial/`).
        score_only (`bool`, *optional*, defaults to `False`): keep the pairs and add the `pair_quality` /
            `pair_quality_miou` columns instead of replacing the labels.
        batch_size (`int`, *optional*, defaults to 32): images per labeller call (and per committed shard).
        source (`str`, *optional*): the source dataset's path or Hub id (its card is the base of the copy's card).
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing dataset at `output_dir`.
        preview_rows (`int`, *optional*, defaults to 8): rows of the copy's `preview.png` (0: none).

    Returns:
        [`~dakter_hf.generation.GenerationOutput`]: the copy and where it is.

    Raises:
        `UsageError`: the labeller's classes differ from the dataset's; an interrupted run with other settings is in
        `<output_dir>.partial/`. `OutputExistsError`: `output_dir` exists (without `overwrite`).
    """
    output_dir = check_run_arguments(output_dir, len(generated), batch_size, overwrite)
    _check_labeller(generated, labeller)
    _discard_earlier_staging(output_dir)
    task = "score" if score_only else "relabel"
    labelling = {"task": task, "labeller": labeller.settings(), "batch_size": batch_size}
    settings = {**labelling, "source": source, "source_fingerprint": generated._fingerprint,
                "num_rows": len(generated)}
    try:
        id2label = get_generated_id2label(generated)
    except Exception:  # no class names stored in the source
        id2label = None
    card = make_labelled_dataset_card(_source_card(source), labelling, source or "an in-memory dataset",
                                      len(generated))
    return write_generated_dataset(
        _label_rows(generated, labeller, score_only), output_dir, len(generated), settings,
        labelled_features(generated, score_only), card, batch_size=batch_size, seed=None, id2label=id2label,
        overwrite=overwrite, preview_rows=preview_rows,
        progress_desc="Scoring pairs" if score_only else "Relabelling pairs")
