"""Image / mask files on disk: finding split folders, pairing images with masks, reading them with validation and
decoding masks (index, binarised or colour-coded) into class indices.

Everything here raises :class:`~dakter_hf.data.DataError` naming the file and what was expected; turning pairs into
a dataset is :mod:`dakter_hf.data.builder`'s job.
"""

import os
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image

from .errors import MAX_LISTED, DataError, SkippedPair


PathLike = Union[str, os.PathLike]

#: File extensions accepted as images / masks (lower case).
IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MASK_EXTENSIONS: Tuple[str, ...] = (".png", ".bmp", ".tif", ".tiff", ".gif", ".jpg", ".jpeg")

#: Trailing stem tags removed before matching an image with its mask (``x_sat.jpg`` ↔ ``x_mask.png``).
IMAGE_TAGS: Tuple[str, ...] = ("_sat", "_image", "_img")
MASK_TAGS: Tuple[str, ...] = ("_mask", "_label", "_labels", "_gt", "_seg")

#: Default tolerance (Euclidean distance in RGB) when mapping mask colours to the nearest class colour.
DEFAULT_COLOR_TOLERANCE = 40.0


def _list_files(paths: Sequence[str]) -> str:
    shown = ", ".join(str(p) for p in paths[:MAX_LISTED])
    more = f" (and {len(paths) - MAX_LISTED} more)" if len(paths) > MAX_LISTED else ""
    return shown + more


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
        if 0 < grey.max(initial=0) <= 1 < threshold:
            raise DataError(
                f"mask {path} holds 0/1 values but is read as a 0/255 mask (class 1 where the value is > {threshold}):"
                " every pixel would become class 0; expected 0/255 masks (or a folder dataset of 0/1 index masks "
                "without --mask_threshold)",
                (path,),
            )
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



def make_mask_decoder(
    colormap: Optional[Dict[int, Tuple[int, int, int]]] = None,
    color_tolerance: float = DEFAULT_COLOR_TOLERANCE,
    mask_threshold: Optional[int] = None,
) -> MaskDecoder:
    """Pick the mask decoder: colour-coded (``colormap``), binarised (``mask_threshold``) or plain index masks.

    Args:
        colormap (`Dict[int, Tuple[int, int, int]]`, *optional*): class index → RGB colour.
        color_tolerance (`float`): largest Euclidean RGB distance to the nearest class colour.
        mask_threshold (`int`, *optional*): binarise grey masks: class 1 where value ``> mask_threshold``.

    Returns:
        `Callable[[PIL.Image.Image, str], np.ndarray]`: mask file → ``(H, W)`` class indices.
    """
    if colormap is not None and mask_threshold is not None:
        raise ValueError("pass either colormap or mask_threshold, not both")
    if colormap is not None:
        return partial(decode_color_mask, colormap=colormap, tolerance=color_tolerance)
    return partial(decode_index_mask, threshold=mask_threshold)
