"""The schema of a generated dataset: its features, its class names, and the files beside it.

A generated dataset (written by [`dakter_hf.generation.generate_to_disk`]) has one row per synthetic pair and four
columns: `image` ([`datasets.Image`], mode `"L"` for single-channel SAR), `soft_label` ([`datasets.Array3D`]
`(K, H, W)`, encoded with [`dakter_hf.labels.encode_soft_labels`]), `label` (the argmax mask, whose feature carries
`id2label` in the format of the real datasets) and `seed` (row `i` comes from seed `seed + i`).

A mask-conditioned dataset (images drawn for the masks of a labelled dataset, written by
[`dakter_hf.generation.generate_mask_conditioned_to_disk`]) has the same columns, with `soft_label` and `label` the
mask the image was drawn for, plus `source_mask` (the `id`, or row index, of the mask in its dataset) and
`mask_transform` (the flip / 90-degree rotation applied to it before drawing, see [`MASK_TRANSFORMS`]) and, when its
masks were perturbed before drawing (`perturb_masks`), `mask_perturbation` (what was applied, e.g. `"dilate:2"`).
Its soft labels are the (one-hot) masks themselves, so `soft` and `hard` distillation learn the same from its rows.
"""

from collections.abc import Mapping

from datasets import Array3D, Dataset, Features, Value
from datasets import Image as ImageFeature

from ..labels import check_soft_label_dtype, default_id2label, normalize_id2label
from .schema import get_id2label, make_features


#: The preview grid written next to a generated dataset (and pushed with it).
PREVIEW_NAME = "preview.png"

#: The symmetries of the square a mask may undergo before images are drawn for it: `np.rot90(mask, k)` after an
#: optional left-right flip.
MASK_TRANSFORMS = ("identity", "rot90", "rot180", "rot270", "flip", "flip+rot90", "flip+rot180", "flip+rot270")
#: The columns a mask-conditioned dataset has beyond those of [`generated_features`].
MASK_SOURCE_COLUMNS = ("source_mask", "mask_transform")
#: The column of a mask-conditioned dataset whose masks were perturbed before drawing.
MASK_PERTURBATION_COLUMN = "mask_perturbation"


def image_mode(channels: int) -> str:
    """The PIL mode a generated image of `channels` channels is stored in: `"L"` (1) or `"RGB"` (3)."""
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
            "image": ImageFeature(mode=image_mode(image_channels)),
            "soft_label": Array3D(shape=(num_classes, height, width), dtype=check_soft_label_dtype(soft_label_dtype)),
            "label": make_features(id2label)["mask"],
            "seed": Value("int64"),
        }
    )


def mask_conditioned_features(*args, perturbed: bool = False, **kwargs) -> Features:
    """The features of a mask-conditioned dataset: [`generated_features`] (same arguments) plus `source_mask` and
    `mask_transform` strings, and a `mask_perturbation` string when the masks were `perturbed`."""
    features = generated_features(*args, **kwargs)
    names = MASK_SOURCE_COLUMNS + ((MASK_PERTURBATION_COLUMN,) if perturbed else ())
    features.update({name: Value("string") for name in names})
    return features


def get_generated_id2label(dataset: Dataset | Features) -> dict[int, str]:
    """The class names of a generated dataset (stored on its `label` feature; works after `load_from_disk` and
    `load_dataset` from the Hub)."""
    features = dataset if isinstance(dataset, Features) else dataset.features
    if "label" not in features:
        raise ValueError(f"Not a generated dataset: no 'label' column in {list(features)}.")
    return get_id2label(Features({"mask": features["label"]}))
