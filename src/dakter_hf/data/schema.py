"""The dataset schema every loader returns, and where the class names (``id2label``) are stored.

Every loader in :mod:`dakter_hf.data` returns a :class:`datasets.Dataset` with the schema of :func:`make_features`:

- ``image``: :class:`datasets.Image` with ``mode="L"`` (8-bit greyscale SAR intensity),
- ``mask``: :class:`datasets.Image` with ``mode="L"`` holding class indices ``0..K-1``,
- ``id`` (unique row id), ``scene_id`` (the source scene / file stem), ``source`` (``"sos"``, ``"osd"``,
  ``"folder"``, ``"simulated"``), ``sensor`` (``""`` when unknown), ``split`` and ``patch_box``
  (``[left, top, right, bottom]`` of the row inside its scene, in scene pixels).

Because all loaders share this schema, datasets with the same classes can be joined with
:func:`datasets.concatenate_datasets`.

**How ``id2label`` is stored.** The class names travel inside the dataset's features: the ``mask`` column's
:class:`datasets.Image` feature carries them as a JSON string in its ``id`` field
(``{"id2label": {"0": "sea", ...}}``). Features are part of the Arrow schema metadata, so the mapping survives
``select``/``shuffle``/``map``/``filter``/``train_test_split``/``concatenate_datasets``, ``save_to_disk`` +
``load_from_disk`` and Parquet export (``push_to_hub``). Read it with :func:`get_id2label`, replace it with
:func:`set_id2label`. (Casting the ``mask`` column to a fresh ``Image()`` drops it.)
"""

import io
import json
from typing import Dict, Tuple, Union

import numpy as np
import PIL.Image
from datasets import Dataset, DatasetDict, Features, IterableDataset, Value
from datasets import Image as ImageFeature


try:  # datasets >= 4
    from datasets import List as ListFeature
except ImportError:  # pragma: no cover - older datasets
    from datasets import Sequence as ListFeature

from ..labels import normalize_id2label
from .errors import DataError


#: Metadata columns present in every dataset (in this order, after ``image`` and ``mask``).
METADATA_COLUMNS: Tuple[str, ...] = ("id", "scene_id", "source", "sensor", "split", "patch_box")

_ID2LABEL_KEY = "id2label"


def make_features(id2label: Dict[int, str]) -> Features:
    """The features (schema) shared by every loader, with ``id2label`` stored on the ``mask`` feature.

    Args:
        id2label (`Dict[int, str]`): class index → class name, indices ``0..K-1``.

    Returns:
        `datasets.Features`: ``image``, ``mask`` and the :data:`METADATA_COLUMNS`.
    """
    id2label = normalize_id2label(id2label)
    mask_meta = json.dumps({_ID2LABEL_KEY: {str(k): v for k, v in id2label.items()}}, sort_keys=True)
    return Features(
        {
            "image": ImageFeature(mode="L"),
            "mask": ImageFeature(mode="L", id=mask_meta),
            "id": Value("string"),
            "scene_id": Value("string"),
            "source": Value("string"),
            "sensor": Value("string"),
            "split": Value("string"),
            "patch_box": ListFeature(Value("int32"), length=4),
        }
    )


def _features_of(dataset) -> Features:
    if isinstance(dataset, Features):
        return dataset
    if isinstance(dataset, DatasetDict):
        if not dataset:
            raise ValueError("get_id2label: the DatasetDict is empty")
        dataset = next(iter(dataset.values()))
    features = getattr(dataset, "features", None)
    if features is None:
        raise ValueError(f"get_id2label: {type(dataset).__name__} has no features")
    return features


def get_id2label(dataset: Union[Dataset, IterableDataset, DatasetDict, Features]) -> Dict[int, str]:
    """Read the class names stored by the loaders (works on datasets reloaded with ``load_from_disk`` too).

    Args:
        dataset (`Dataset`, `IterableDataset`, `DatasetDict` or `Features`): a dataset made by a
            :mod:`dakter_hf.data` loader (or by :func:`set_id2label`), or its features.

    Returns:
        `Dict[int, str]`: class index → class name, sorted by index.

    Raises:
        `DataError`: if the dataset carries no class names (e.g. its ``mask`` column was re-cast).
    """
    features = _features_of(dataset)
    mask_feature = features.get("mask")
    meta = getattr(mask_feature, "id", None)
    if meta:
        try:
            return normalize_id2label(json.loads(meta)[_ID2LABEL_KEY])
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
    raise DataError(
        "this dataset carries no id2label: expected a 'mask' Image feature whose id holds "
        '\'{"id2label": {...}}\' (as written by the dakter_hf.data loaders); attach one with set_id2label()'
    )


def set_id2label(dataset: Dataset, id2label: Dict[int, str]) -> Dataset:
    """Return ``dataset`` with ``id2label`` stored on its ``mask`` feature (see the module docstring).

    Args:
        dataset (`Dataset`): a dataset with a ``mask`` image column.
        id2label (`Dict[int, str]`): class index → class name, indices ``0..K-1``.

    Returns:
        `Dataset`: the same rows, with the class names in the features.
    """
    mask_meta = make_features(id2label)["mask"]
    return dataset.cast_column("mask", mask_meta)


def encode_png(array: np.ndarray) -> bytes:
    """Encode a 2-D ``uint8`` array as a greyscale PNG (fast compression): the bytes of an ``image`` / ``mask`` cell."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L").save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()


def rows_to_dataset(rows: Dict[str, list], id2label: Dict[int, str]) -> Dataset:
    """Build a dataset with the shared schema from column lists.

    Args:
        rows (`Dict[str, list]`): one list per column of :func:`make_features`.
        id2label (`Dict[int, str]`): class names.

    Returns:
        `Dataset`
    """
    features = make_features(id2label)
    return Dataset.from_dict({name: rows[name] for name in features}, features=features)
