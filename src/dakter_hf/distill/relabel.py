"""Generated images labelled by a student instead of the generator: the control arm of DAKTer's benchmark.

A generator's pairs carry its own soft labels. Relabelling the same images with a segmentation model trained on the
real pairs -- what a teacher would give -- and distilling students from that copy separates the value of the
generator's images from the value of its labels. [`relabel_with_student`] keeps every row's image and seed and
replaces its `soft_label` (the student's softmax, stored in the dataset's own type) and `label` (their argmax).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import PIL.Image
import torch
from datasets.fingerprint import generate_random_fingerprint
from tqdm.auto import tqdm

from ..labels import encode_soft_labels
from .data import _soft_label_shape
from .losses import upsample_logits


__all__ = ["relabel_to_disk", "relabel_with_student"]


@torch.no_grad()
def relabel_with_student(generated, model, image_processor, batch_size: int = 32, temperature: float = 1.0,
                         show_progress: bool = True):
    """A copy of a generated dataset whose labels are a segmentation model's predictions on its images.

    Each image goes through `image_processor` (the student's own resize and normalisation); the logits are
    upsampled bilinearly to the stored soft labels' size, and `softmax(logits / temperature)` replaces `soft_label`
    (encoded in the column's storage type, e.g. `uint8`), its argmax replaces `label`. Images, seeds and features
    are kept, so the copy is read like any generated dataset (`examples/distill.py --generated_dataset`).

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
    num_classes, height, width = _soft_label_shape(generated)
    num_labels = getattr(model.config, "num_labels", None)
    if num_labels != num_classes:
        raise ValueError(f"The student predicts {num_labels} classes but the generated soft labels have {num_classes}: "
                         "relabel with a student trained on the same classes.")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    features = generated.features
    dtype = features["soft_label"].dtype
    was_training = model.training
    model.eval()
    progress = tqdm(total=len(generated), desc="Relabelling", unit="pair", disable=not show_progress)

    def relabel(rows):
        images = [image if image.mode == "L" else image.convert("L") for image in rows["image"]]
        pixel_values = image_processor(images=images, return_tensors="pt")["pixel_values"]
        logits = model(pixel_values=pixel_values.to(model.device, model.dtype)).logits.float()
        probs = torch.softmax(upsample_logits(logits, (height, width)) / temperature, dim=1).cpu()
        progress.update(len(images))
        return {"soft_label": list(encode_soft_labels(probs, dtype)),
                "label": [PIL.Image.fromarray(label.astype(np.uint8)) for label in probs.argmax(dim=1).numpy()]}

    try:
        # In memory: `map` would otherwise write cache files into the source dataset's directory (and the model in
        # the closure cannot be hashed into a fingerprint, so a random one is given).
        return generated.map(relabel, batched=True, batch_size=batch_size, features=features, keep_in_memory=True,
                             new_fingerprint=generate_random_fingerprint())
    finally:
        progress.close()
        model.train(was_training)


def relabel_to_disk(generated, model, image_processor, output_dir: str | os.PathLike, **kwargs) -> str:
    """[`relabel_with_student`], saved with `save_to_disk` into `output_dir` in one step: the dataset is written
    next to it and renamed, so `output_dir` only ever holds a complete dataset. Returns `output_dir`.

    Raises:
        `FileExistsError`: `output_dir` exists.
    """
    output_dir = os.path.normpath(os.fspath(output_dir))
    if os.path.exists(output_dir):
        raise FileExistsError(f"`output_dir` {output_dir} already exists; choose another directory.")
    relabelled = relabel_with_student(generated, model, image_processor, **kwargs)
    staging = output_dir + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    relabelled.save_to_disk(staging)
    os.replace(staging, output_dir)
    return output_dir
