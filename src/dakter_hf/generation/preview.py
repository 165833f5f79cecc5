"""The preview grid of a generated dataset (`preview.png` beside it): image | soft-label colour map | argmax, or for a
mask-conditioned dataset, mask | generated image."""

from collections.abc import Mapping

import numpy as np
from datasets import Dataset

from ..data.generated import MASK_SOURCE_COLUMNS
from ..labels import decode_soft_labels
from ..visualization import save_sample_grid


def save_preview(
    dataset: Dataset, path: str, id2label: Mapping[int, str] | None = None, max_rows: int = 8
) -> str:
    """Draw the first `max_rows` rows of a generated dataset as a grid (image | soft label colour map | argmax)
    with [`dakter_hf.visualization.save_sample_grid`]. Returns the path."""
    rows = dataset.select(range(min(max_rows, len(dataset)))).with_format("numpy")
    images = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in rows["image"]])
    soft_labels = decode_soft_labels(rows["soft_label"], dtype=dataset.features)
    id2label = dict(id2label or {}) or None
    if MASK_SOURCE_COLUMNS[0] in dataset.column_names:  # the label is the mask the image was drawn for
        masks = np.stack([np.asarray(mask) for mask in rows["label"]])
        save_sample_grid(images, soft_labels, masks, path, id2label=id2label, max_rows=max_rows,
                         columns={"label": "mask", "image": "generated image"},
                         title="DAKTer images drawn for real masks (synthetic images)")
        return path
    # `labels=None`: the stored label is the argmax of the soft label, which the grid draws already
    save_sample_grid(images, soft_labels, None, path, id2label=id2label, max_rows=max_rows,
                     title="DAKTer generated pairs (synthetic)")
    return path
