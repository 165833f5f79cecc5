"""Building blocks shared by every loader: the dataset schema, ``id2label`` storage, file pairing, image / mask
decoding with validation, tiling, seeded subsets and the ``on_error`` policy.

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
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
from datasets import Dataset, DatasetDict, Features, IterableDataset, Value
from datasets import Image as ImageFeature


try:  # datasets >= 4
    from datasets import List as ListFeature
except ImportError:  # pragma: no cover - older datasets
    from datasets import Sequence as ListFeature

from ..labels import normalize_id2label
from .errors import DataError, LoadingInfo, SkippedPair


logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
Resolution = Union[int, Tuple[int, int]]

#: Metadata columns present in every dataset (in this order, after ``image`` and ``mask``).
METADATA_COLUMNS: Tuple[str, ...] = ("id", "scene_id", "source", "sensor", "split", "patch_box")

#: File extensions accepted as images / masks (lower case).
IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MASK_EXTENSIONS: Tuple[str, ...] = (".png", ".bmp", ".tif", ".tiff", ".gif", ".jpg", ".jpeg")

#: Trailing stem tags removed before matching an image with its mask (``x_sat.jpg`` ↔ ``x_mask.png``).
IMAGE_TAGS: Tuple[str, ...] = ("_sat", "_image", "_img")
MASK_TAGS: Tuple[str, ...] = ("_mask", "_label", "_labels", "_gt", "_seg")

ON_ERROR_CHOICES: Tuple[str, ...] = ("raise", "skip")

_ID2LABEL_KEY = "id2label"
_MAX_LISTED = 10


# --------------------------------------------------------------------------------------------------------------
# Schema and id2label
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------


def check_on_error(on_error: str) -> str:
    """Validate an ``on_error`` argument (``"raise"`` or ``"skip"``) and return it."""
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    return on_error


def as_hw(size: Resolution, name: str = "size") -> Tuple[int, int]:
    """Turn an ``int`` or ``(height, width)`` into a validated ``(height, width)`` tuple."""
    if isinstance(size, (int, np.integer)):
        hw = (int(size), int(size))
    else:
        hw = tuple(int(s) for s in size)
        if len(hw) != 2:
            raise ValueError(f"{name} must be an int or (height, width), got {size!r}")
    if min(hw) <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return hw


def _list_files(paths: Sequence[str]) -> str:
    shown = ", ".join(str(p) for p in paths[:_MAX_LISTED])
    more = f" (and {len(paths) - _MAX_LISTED} more)" if len(paths) > _MAX_LISTED else ""
    return shown + more


def encode_png(array: np.ndarray) -> bytes:
    """Encode a 2-D ``uint8`` array as a greyscale PNG (fast compression)."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L").save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()


def resolve_split_dir(data_dir: PathLike, split: str, required: Sequence[str] = ("images",)) -> Path:
    """Find the folder of one split inside a dataset release.

    Looks for a child of ``data_dir`` (case-insensitively) named after the split or one of its aliases
    (``train``/``training``/``trainset``; ``test``/``testing``/``testset``; ``val``/``valid``/``validation``),
    also one directory level deeper (for archives that unpack to ``<name>/train``). If ``data_dir`` itself
    is itself named after the split and contains the ``required`` sub-folders, it is the split folder.

    Args:
        data_dir (`str` or `os.PathLike`): root of the release.
        split (`str`): ``"train"``, ``"test"`` or ``"validation"`` (or any alias above).
        required (`Sequence[str]`): sub-folders that must exist in the split folder (any one of them).

    Returns:
        `Path`: the split folder.

    Raises:
        `DataError`: if ``data_dir`` does not exist or no matching split folder is found.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data_dir {root} does not exist or is not a directory", (str(root),))
    aliases = {
        "train": ("train", "training", "trainset"),
        "test": ("test", "testing", "testset"),
        "validation": ("validation", "val", "valid", "validate"),
    }
    wanted = next((names for names in aliases.values() if split.lower() in names), (split.lower(),))

    def has_required(folder: Path) -> bool:
        return any((folder / r).is_dir() for r in required) or any(
            child.is_dir() and child.name.lower() in required for child in folder.iterdir()
        )

    for base in [root] + sorted(p for p in root.iterdir() if p.is_dir()):
        for child in sorted(base.iterdir()):
            if child.is_dir() and child.name.lower() in wanted and has_required(child):
                return child
    if root.name.lower() in wanted and has_required(root):
        return root  # data_dir already points at the split folder
    raise DataError(
        f"no folder for split {split!r} in {root}: expected a sub-folder named one of {list(wanted)} "
        f"containing {' or '.join(repr(r) + '/' for r in required)}",
        (str(root),),
    )


def find_subdir(folder: Path, names: Sequence[str]) -> Optional[Path]:
    """Return the first child of ``folder`` whose name matches one of ``names`` (case-insensitive), else None."""
    children = {c.name.lower(): c for c in folder.iterdir() if c.is_dir()} if folder.is_dir() else {}
    for name in names:
        if name.lower() in children:
            return children[name.lower()]
    return None


# --------------------------------------------------------------------------------------------------------------
# Pairing images with masks
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairSpec:
    """An image file and its mask file, matched by ``key`` (the stem with image / mask tags removed)."""

    key: str
    image_path: str
    mask_path: str


def strip_tag(stem: str, tags: Iterable[str]) -> str:
    """Remove the longest matching trailing tag (case-insensitive) from a file stem: ``x_mask`` → ``x``."""
    lower = stem.lower()
    for tag in sorted(tags, key=len, reverse=True):
        if tag and lower.endswith(tag.lower()) and len(stem) > len(tag):
            return stem[: -len(tag)]
    return stem


def _index_files(folder: Path, extensions: Sequence[str], tags: Sequence[str], select: Callable[[str], bool]):
    index: Dict[str, List[str]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in extensions:
            continue
        if not select(path.stem):
            continue
        index.setdefault(strip_tag(path.stem, tags), []).append(str(path))
    return index


def find_pairs(
    image_dir: PathLike,
    mask_dir: PathLike,
    image_extensions: Sequence[str] = IMAGE_EXTENSIONS,
    mask_extensions: Sequence[str] = MASK_EXTENSIONS,
    image_tags: Sequence[str] = IMAGE_TAGS,
    mask_tags: Sequence[str] = MASK_TAGS,
) -> Tuple[List[PairSpec], List[SkippedPair]]:
    """Match image files with mask files by stem.

    A file's *key* is its stem with one trailing tag removed: image tags (``_sat``, ``_image``, ``_img``) for
    images, mask tags (``_mask``, ``_label``, ``_labels``, ``_gt``, ``_seg``) for masks; matching is on the key,
    so ``x.jpg`` ↔ ``x.png``, ``x.jpg`` ↔ ``x_mask.png`` and ``x_sat.jpg`` ↔ ``x_mask.png`` all pair up. When
    ``image_dir == mask_dir``, files whose stem ends with a mask tag are masks and the others images. Hidden
    files and files with other extensions are ignored.

    Args:
        image_dir (`str` or `os.PathLike`): folder of images.
        mask_dir (`str` or `os.PathLike`): folder of masks (may equal ``image_dir``).
        image_extensions, mask_extensions (`Sequence[str]`): accepted lower-case extensions.
        image_tags, mask_tags (`Sequence[str]`): trailing stem tags removed before matching.

    Returns:
        `Tuple[List[PairSpec], List[SkippedPair]]`: the pairs sorted by key, and the problems found (image
        without mask, mask without image, several files with the same key).

    Raises:
        `DataError`: if a folder does not exist, or contains no image / mask files at all.
    """
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    for folder, what in ((image_dir, "image"), (mask_dir, "mask")):
        if not folder.is_dir():
            raise DataError(f"{what} folder {folder} does not exist or is not a directory", (str(folder),))
    same = image_dir.resolve() == mask_dir.resolve()

    def is_mask_stem(stem: str) -> bool:
        return strip_tag(stem, mask_tags) != stem

    images = _index_files(image_dir, image_extensions, image_tags, (lambda s: not is_mask_stem(s)) if same else bool)
    masks = _index_files(mask_dir, mask_extensions, mask_tags, is_mask_stem if same else bool)
    if not images:
        raise DataError(
            f"no image files found in {image_dir}: expected files with extensions {list(image_extensions)}",
            (str(image_dir),),
        )
    if not masks:
        tag_hint = f" whose stem ends with one of {list(mask_tags)}" if same else ""
        raise DataError(
            f"no mask files found in {mask_dir}: expected files with extensions {list(mask_extensions)}{tag_hint}",
            (str(mask_dir),),
        )

    pairs: List[PairSpec] = []
    problems: List[SkippedPair] = []
    for key in sorted(set(images) | set(masks)):
        img, msk = images.get(key, []), masks.get(key, [])
        if len(img) > 1 or len(msk) > 1:
            files = tuple(img + msk)
            problems.append(SkippedPair(key, files, f"several files share the key {key!r}: {_list_files(files)}"))
        elif not msk:
            problems.append(
                SkippedPair(
                    key, tuple(img), f"image {img[0]} has no mask: expected {key}.png or {key}_mask.png in {mask_dir}"
                )
            )
        elif not img:
            problems.append(
                SkippedPair(key, tuple(msk), f"mask {msk[0]} has no image: expected {key}.jpg/.png in {image_dir}")
            )
        else:
            pairs.append(PairSpec(key, img[0], msk[0]))
    return pairs, problems


# --------------------------------------------------------------------------------------------------------------
# Reading and decoding
# --------------------------------------------------------------------------------------------------------------


def read_image(path: str, what: str = "image") -> PIL.Image.Image:
    """Open and fully decode an image file, turning any decoder failure into a :class:`DataError`.

    Args:
        path (`str`): file to read.
        what (`str`): ``"image"`` or ``"mask"``, used in the error message.

    Returns:
        `PIL.Image.Image`: the decoded image (native mode).

    Raises:
        `DataError`: if the file cannot be opened or is truncated / corrupt.
    """
    try:
        with PIL.Image.open(path) as handle:
            handle.load()
            image = handle
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise DataError(
            f"cannot read {what} file {path} ({type(err).__name__}: {err}); expected a complete, readable image",
            (path,),
        ) from err
    return image


def to_greyscale(image: PIL.Image.Image) -> Tuple[PIL.Image.Image, bool]:
    """Convert an image to 8-bit greyscale ``"L"``.

    8-bit modes use PIL's conversion (3 identical channels → the same values). High bit-depth modes (``I``,
    ``I;16``, ``F``) are rescaled linearly between their 0.5 and 99.5 percentiles.

    Returns:
        `Tuple[PIL.Image.Image, bool]`: the ``"L"`` image, and whether a plain ``Image(mode="L")`` decode of the
        original file would give the same pixels (``False`` for high bit-depth inputs).
    """
    if image.mode == "L":
        return image, True
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = np.percentile(arr, [0.5, 99.5])
        scaled = np.clip((arr - lo) / max(hi - lo, 1e-12), 0.0, 1.0) * 255.0
        return PIL.Image.fromarray(np.round(scaled).astype(np.uint8), mode="L"), False
    return image.convert("L"), True


MaskDecoder = Callable[[PIL.Image.Image, str], np.ndarray]


def decode_index_mask(image: PIL.Image.Image, path: str, threshold: Optional[int] = None) -> np.ndarray:
    """Decode a single-channel index mask (``L``, ``P``, ``1``, ``I``, or RGB with identical channels).

    Args:
        image (`PIL.Image.Image`): the decoded mask file.
        path (`str`): its path, for error messages.
        threshold (`int`, *optional*): if given, binarise: class 1 where the grey value is ``> threshold``.

    Returns:
        `np.ndarray`: ``(H, W)`` integer class indices (``int64``).

    Raises:
        `DataError`: for RGB masks whose channels differ (a colour-coded mask needs a colour map).
    """
    if image.mode in ("RGB", "RGBA", "LA", "La", "RGBa"):
        arr = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
        if image.mode in ("LA", "La"):
            grey = np.asarray(image)[..., 0]
        elif (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
            grey = arr[..., 0]
        else:
            raise DataError(
                f"mask {path} is a colour image (mode {image.mode}) with differing channels; expected a "
                "single-channel index mask, or pass a colormap {class_index: (r, g, b)} for colour-coded masks",
                (path,),
            )
    elif image.mode == "P" and threshold is not None:
        grey = np.asarray(image.convert("L"))
    else:
        grey = np.asarray(image)
    grey = grey.astype(np.int64)
    if threshold is not None:
        return (grey > threshold).astype(np.int64)
    return grey


@lru_cache(maxsize=4)
def _exact_colour_table(palette: Tuple[Tuple[int, Tuple[int, int, int]], ...]) -> np.ndarray:
    """Lookup table packed RGB → class index (255 = not an exact palette colour); 16 MiB, cached."""
    table = np.full(1 << 24, 255, dtype=np.uint8)
    for index, (r, g, b) in palette:
        table[(r << 16) | (g << 8) | b] = index
    return table


def decode_color_mask(
    image: PIL.Image.Image, path: str, colormap: Dict[int, Tuple[int, int, int]], tolerance: float
) -> np.ndarray:
    """Map a colour-coded mask to class indices.

    Every pixel takes the class of the nearest colour in ``colormap`` (Euclidean RGB distance), provided that
    distance is at most ``tolerance``; exact palette colours always match (fast table lookup).

    Args:
        image (`PIL.Image.Image`): the decoded mask file (any mode; converted to RGB).
        path (`str`): its path, for error messages.
        colormap (`Dict[int, Tuple[int, int, int]]`): class index → RGB colour.
        tolerance (`float`): largest accepted Euclidean distance to a palette colour.

    Returns:
        `np.ndarray`: ``(H, W)`` ``int64`` class indices.

    Raises:
        `DataError`: naming the file and the first off-palette colours if some pixel is farther than
            ``tolerance`` from every palette colour.
    """
    rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image).astype(np.int32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    indices = np.array(sorted(colormap), dtype=np.int64)
    if len(indices) < 255:
        out = _exact_colour_table(tuple((int(i), tuple(colormap[int(i)])) for i in indices))[packed].astype(np.int64)
        inexact = out == 255
    else:
        out, inexact = np.zeros(packed.shape, dtype=np.int64), np.ones(packed.shape, dtype=bool)
    if not inexact.any():
        return out
    colours, inverse = np.unique(packed[inexact], return_inverse=True)
    unique_rgb = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], axis=1).astype(np.float64)
    palette = np.array([colormap[int(i)] for i in indices], dtype=np.float64)
    distance = np.linalg.norm(unique_rgb[:, None, :] - palette[None, :, :], axis=2)
    nearest = distance.argmin(axis=1)
    off = distance[np.arange(len(colours)), nearest] > tolerance
    if off.any():
        bad = [tuple(int(c) for c in unique_rgb[i]) for i in np.flatnonzero(off)]
        count = int(off[inverse].sum())
        shown = ", ".join(str(c) for c in bad[:5]) + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
        raise DataError(
            f"mask {path} has {count} pixel(s) with colour(s) {shown} farther than tolerance={tolerance} from "
            f"every class colour; expected colours {dict((int(i), tuple(colormap[int(i)])) for i in indices)}",
            (path,),
        )
    out[inexact] = indices[nearest][inverse.ravel()]
    return out


# --------------------------------------------------------------------------------------------------------------
# Tiling
# --------------------------------------------------------------------------------------------------------------


def _starts(length: int, patch: int, stride: int) -> List[int]:
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)  # last patch aligned to the border so the whole scene is covered
    return starts


def tile_boxes(width: int, height: int, patch_size: Resolution, stride: Optional[Resolution] = None):
    """Boxes ``(left, top, right, bottom)`` of the patches covering a ``width x height`` scene.

    Patches start every ``stride`` pixels (default: ``patch_size``, no overlap); one last row / column of
    patches is aligned to the bottom / right border so every pixel is covered.

    Args:
        width, height (`int`): scene size.
        patch_size (`int` or `(height, width)`): patch size; must fit inside the scene.
        stride (`int` or `(height, width)`, *optional*): step between patch origins.

    Returns:
        `List[Tuple[int, int, int, int]]`: row-major list of boxes.
    """
    ph, pw = as_hw(patch_size, "patch_size")
    sh, sw = as_hw(stride if stride is not None else (ph, pw), "stride")
    if ph > height or pw > width:
        raise ValueError(f"patch_size {ph}x{pw} (HxW) is larger than the {height}x{width} scene")
    return [(x, y, x + pw, y + ph) for y in _starts(height, ph, sh) for x in _starts(width, pw, sw)]


# --------------------------------------------------------------------------------------------------------------
# Building the dataset
# --------------------------------------------------------------------------------------------------------------


def _process_pair(
    pair: PairSpec,
    decode_mask: MaskDecoder,
    num_classes: Optional[int],
    patch_size: Optional[Resolution],
    stride: Optional[Resolution],
    resolution: Optional[Resolution],
) -> List[dict]:
    """Read, validate and encode one pair; returns its rows (several when tiled). Raises DataError."""
    from .transforms import resize_image, resize_mask  # local import: transforms does not import this module

    image = read_image(pair.image_path, "image")
    mask_file = read_image(pair.mask_path, "mask")
    if image.size != mask_file.size:
        raise DataError(
            f"size mismatch: image {pair.image_path} is {image.size[0]}x{image.size[1]} (WxH) but mask "
            f"{pair.mask_path} is {mask_file.size[0]}x{mask_file.size[1]}; expected identical sizes",
            (pair.image_path, pair.mask_path),
        )
    mask = decode_mask(mask_file, pair.mask_path)
    bad = (mask < 0) | (mask >= num_classes) if num_classes is not None else mask < 0
    if bad.any():
        values = np.unique(mask[bad])
        raise DataError(
            f"mask {pair.mask_path} has value(s) {values[:10].tolist()} outside 0..{(num_classes or 1) - 1}; "
            f"expected class indices < num_classes={num_classes}",
            (pair.mask_path,),
        )
    if mask.max(initial=0) > 255:
        raise DataError(f"mask {pair.mask_path} has values > 255; at most 256 classes are supported", (pair.mask_path,))
    grey, path_decodes_same = to_greyscale(image)
    width, height = image.size
    boxes = [(0, 0, width, height)]
    if patch_size is not None:
        try:
            boxes = tile_boxes(width, height, patch_size, stride)
        except ValueError as err:
            raise DataError(f"cannot tile image {pair.image_path}: {err}", (pair.image_path,)) from err
    rows = []
    for box in boxes:
        whole = box == (0, 0, width, height)
        patch_image = grey if whole else grey.crop(box)
        patch_mask = PIL.Image.fromarray(mask[box[1] : box[3], box[0] : box[2]].astype(np.uint8), mode="L")
        if resolution is not None:
            patch_image, patch_mask = resize_image(patch_image, resolution), resize_mask(patch_mask, resolution)
        if whole and resolution is None and path_decodes_same:
            image_value = {"path": os.path.abspath(pair.image_path), "bytes": None}  # decoded lazily, validated
        else:
            image_value = {"path": None, "bytes": encode_png(np.asarray(patch_image))}
        row_id = pair.key if len(boxes) == 1 else f"{pair.key}_x{box[0]}_y{box[1]}"
        rows.append(
            {
                "image": image_value,
                "mask": {"path": None, "bytes": encode_png(np.asarray(patch_mask))},
                "id": row_id,
                "scene_id": pair.key,
                "patch_box": list(box),
                "_max_label": int(mask.max(initial=0)),
            }
        )
    return rows


def _report_skipped(skipped: Sequence[SkippedPair], context: str) -> None:
    if skipped:
        logger.warning(
            "%s: skipped %d bad pair(s): %s",
            context,
            len(skipped),
            "; ".join(s.reason for s in skipped[:_MAX_LISTED]) + (" ..." if len(skipped) > _MAX_LISTED else ""),
        )


def _raise_problems(problems: Sequence[SkippedPair], context: str) -> None:
    if len(problems) == 1:
        raise DataError(f"{context}: {problems[0].reason}", problems[0].files)
    files = tuple(f for p in problems for f in p.files)
    listed = "; ".join(p.reason for p in problems[:_MAX_LISTED])
    more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
    raise DataError(
        f"{context}: {len(problems)} bad pair(s): {listed}{more}. Pass on_error='skip' to drop them.", files
    )


def subset_order(num_candidates: int, num_samples: Optional[int], seed: int) -> np.ndarray:
    """Order in which candidates are considered for a seeded random subset.

    Returns ``arange`` when ``num_samples`` is None, else a permutation drawn from ``numpy.random.default_rng
    (seed)``. The subset is the first ``num_samples`` valid candidates in that order, so for a fixed seed a
    smaller subset is contained in a larger one.
    """
    if num_samples is None:
        return np.arange(num_candidates)
    return np.random.default_rng(seed).permutation(num_candidates)


def build_pair_dataset(
    pairs: Sequence[PairSpec],
    *,
    decode_mask: MaskDecoder,
    num_classes: Optional[int],
    id2label: Optional[Dict[int, str]],
    source: str,
    sensor: str = "",
    split: str = "",
    context: str = "",
    problems: Sequence[SkippedPair] = (),
    num_samples: Optional[int] = None,
    seed: int = 0,
    patch_size: Optional[Resolution] = None,
    stride: Optional[Resolution] = None,
    resolution: Optional[Resolution] = None,
    on_error: str = "raise",
    output_loading_info: bool = False,
    num_workers: Optional[int] = None,
) -> Union[Dataset, Tuple[Dataset, LoadingInfo]]:
    """Validate image/mask pairs and build the :class:`datasets.Dataset` (the engine behind every file loader).

    Every image and mask is fully decoded once here, so unreadable / truncated files, size mismatches and mask
    values ``>= num_classes`` surface at load time. Untiled, unresized 8-bit images are stored as file
    references (decoded again, lazily, on access; ``save_to_disk`` embeds their bytes); patches, resized
    images and masks are stored as PNG bytes.

    Args:
        pairs (`Sequence[PairSpec]`): candidate pairs.
        decode_mask (`Callable[[PIL.Image.Image, str], np.ndarray]`): mask file → ``(H, W)`` class indices.
        num_classes (`int`, *optional*): number of classes; ``None`` infers ``max(mask) + 1`` over the data.
        id2label (`Dict[int, str]`, *optional*): class names; default ``{i: f"class_{i}"}``.
        source, sensor, split (`str`): metadata written to every row.
        context (`str`): prefix for error / warning messages (e.g. ``"SOS palsar/train"``).
        problems (`Sequence[SkippedPair]`): pairing problems already found (unmatched files...).
        num_samples (`int`, *optional*): keep a seeded random subset of that many pairs (scenes, before tiling).
        seed (`int`): seed of the subset.
        patch_size, stride (`int` or `(height, width)`, *optional*): tile every scene into patches.
        resolution (`int` or `(height, width)`, *optional*): resize images (antialiased bilinear) and masks
            (nearest) to this size at load time, as :mod:`dakter_hf.data.transforms` would.
        on_error (`str`): ``"raise"`` (default) raises a :class:`DataError` on the first bad input;
            ``"skip"`` drops bad pairs, logs a warning naming them and records them in the `LoadingInfo`.
        output_loading_info (`bool`): also return a :class:`LoadingInfo`.
        num_workers (`int`, *optional*): threads used for decoding (default: CPU count, at most 8).

    Returns:
        `Dataset`, or `(Dataset, LoadingInfo)` if ``output_loading_info``.

    Raises:
        `DataError`: bad input with ``on_error="raise"``, no valid pair at all, or too few pairs for
            ``num_samples``.
    """
    check_on_error(on_error)
    context = context or source
    skipped: List[SkippedPair] = []
    if problems:
        if on_error == "raise":
            _raise_problems(problems, context)
        skipped.extend(problems)
    if not pairs:
        _report_skipped(skipped, context)
        raise DataError(f"{context}: no valid image/mask pair found", tuple(f for p in skipped for f in p.files))
    if num_samples is not None:
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if num_samples > len(pairs) and on_error == "raise":
            raise DataError(f"{context}: asked for num_samples={num_samples} pairs but only {len(pairs)} exist")
    order = subset_order(len(pairs), num_samples, seed)
    wanted = len(pairs) if num_samples is None else min(num_samples, len(pairs))
    workers = num_workers or min(8, os.cpu_count() or 1)

    kept: Dict[int, List[dict]] = {}
    position = 0
    with ThreadPoolExecutor(max_workers=workers) as executor:
        while len(kept) < wanted and position < len(order):
            batch = order[position : position + (wanted - len(kept))]
            position += len(batch)

            def work(index: int):
                try:
                    return index, _process_pair(
                        pairs[index], decode_mask, num_classes, patch_size, stride, resolution
                    ), None
                except DataError as err:
                    return index, None, err

            for index, rows, err in executor.map(work, batch.tolist()):
                if err is None:
                    kept[index] = rows
                elif on_error == "raise":
                    raise DataError(f"{context}: {err}", err.files) from err
                else:
                    skipped.append(SkippedPair(pairs[index].key, err.files, str(err)))
    _report_skipped(skipped, context)
    if not kept:
        raise DataError(f"{context}: no valid image/mask pair found", tuple(f for p in skipped for f in p.files))
    if num_samples is not None and len(kept) < num_samples:
        logger.warning("%s: only %d valid pair(s) for num_samples=%d", context, len(kept), num_samples)

    rows = [row for index in sorted(kept, key=lambda i: pairs[i].key) for row in kept[index]]
    if num_classes is None:
        num_classes = max(row.pop("_max_label") for row in rows) + 1
        num_classes = max(num_classes, len(id2label) if id2label else 0)
    else:
        for row in rows:
            row.pop("_max_label")
    if id2label is None:
        id2label = {i: f"class_{i}" for i in range(num_classes)}
    if len(id2label) != num_classes:
        raise ValueError(f"id2label has {len(id2label)} classes but num_classes={num_classes}")

    columns = {name: [row[name] for row in rows] for name in ("image", "mask", "id", "scene_id", "patch_box")}
    columns.update(source=[source] * len(rows), sensor=[sensor or ""] * len(rows), split=[split or ""] * len(rows))
    features = make_features(id2label)
    dataset = Dataset.from_dict({name: columns[name] for name in features}, features=features)
    if not output_loading_info:
        return dataset
    return dataset, LoadingInfo(num_pairs=len(kept), num_rows=len(rows), skipped=skipped)


def rows_to_dataset(rows: Dict[str, list], id2label: Dict[int, str]) -> Dataset:
    """Build a dataset with the shared schema from column lists (used by the simulator).

    Args:
        rows (`Dict[str, list]`): one list per column of :func:`make_features`.
        id2label (`Dict[int, str]`): class names.

    Returns:
        `Dataset`
    """
    features = make_features(id2label)
    return Dataset.from_dict({name: rows[name] for name in features}, features=features)
