"""The one dataset builder behind every file loader: validated image / mask pairs → a :class:`datasets.Dataset`.

A loader (:mod:`~dakter_hf.data.sos`, :mod:`~dakter_hf.data.osd`, :mod:`~dakter_hf.data.folder`) finds its pairs
(:func:`~dakter_hf.data.find_pairs`), says how its masks decode and what its classes are, and hands the knobs its
user gave — seeded subset, tiling, resizing, the ``on_error`` policy — to :func:`build_pair_dataset` as one
:class:`LoadOptions`.
"""

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
from datasets import Dataset

from .errors import MAX_LISTED, DataError, LoadingInfo, SkippedPair
from .files import MaskDecoder, PairSpec, read_image, to_greyscale
from .schema import encode_png, rows_to_dataset
from .transforms import Resolution, as_hw, resize_image, resize_mask


logger = logging.getLogger(__name__)

ON_ERROR_CHOICES: Tuple[str, ...] = ("raise", "skip")


@dataclass(frozen=True)
class LoadOptions:
    """The knobs every file loader shares: which pairs to keep, how each becomes rows, and what to do with bad ones.

    Args:
        num_samples (`int`, *optional*): keep a seeded random subset of that many pairs (scenes, before tiling);
            for a fixed ``seed`` a smaller subset is contained in a larger one. ``None`` keeps all.
        seed (`int`): seed of the subset.
        patch_size (`int` or `(height, width)`, *optional*): tile every scene into patches of this size;
            ``patch_box`` records each patch's position and ``id`` is ``<key>_x<left>_y<top>``.
        stride (`int` or `(height, width)`, *optional*): step between patches (default ``patch_size``); the
            last row / column is aligned to the border so the scene is fully covered.
        resolution (`int` or `(height, width)`, *optional*): resize images (antialiased bilinear) and masks
            (nearest) to this size at load time (after tiling), as :mod:`dakter_hf.data.transforms` would.
        on_error (`str`): ``"raise"`` (default) raises a :class:`DataError` on the first bad input;
            ``"skip"`` drops bad pairs, logs a warning naming them and records them in the `LoadingInfo`.
        output_loading_info (`bool`): also return a :class:`LoadingInfo` (kept / skipped pairs).
        num_workers (`int`, *optional*): threads used for decoding (default: CPU count, at most 8).
    """

    num_samples: Optional[int] = None
    seed: int = 0
    patch_size: Optional[Resolution] = None
    stride: Optional[Resolution] = None
    resolution: Optional[Resolution] = None
    on_error: str = "raise"
    output_loading_info: bool = False
    num_workers: Optional[int] = None


def check_on_error(on_error: str) -> str:
    """Validate an ``on_error`` argument (``"raise"`` or ``"skip"``) and return it."""
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    return on_error


# --------------------------------------------------------------------------------------------------------------
# Tiling and seeded subsets
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


def subset_order(num_candidates: int, num_samples: Optional[int], seed: int) -> np.ndarray:
    """Order in which candidates are considered for a seeded random subset.

    Returns ``arange`` when ``num_samples`` is None, else a permutation drawn from ``numpy.random.default_rng
    (seed)``. The subset is the first ``num_samples`` valid candidates in that order, so for a fixed seed a
    smaller subset is contained in a larger one.
    """
    if num_samples is None:
        return np.arange(num_candidates)
    return np.random.default_rng(seed).permutation(num_candidates)


# --------------------------------------------------------------------------------------------------------------
# One pair → rows
# --------------------------------------------------------------------------------------------------------------


def _read_mask(pair: PairSpec, image: PIL.Image.Image, decode_mask: MaskDecoder, num_classes: Optional[int]):
    """Read and decode the mask of ``pair``, checking it against its image and the class count. Raises DataError."""
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
    return mask


def _process_pair(
    pair: PairSpec, decode_mask: MaskDecoder, num_classes: Optional[int], options: LoadOptions
) -> List[dict]:
    """Read, validate and encode one pair; returns its rows (several when tiled). Raises DataError."""
    image = read_image(pair.image_path, "image")
    mask = _read_mask(pair, image, decode_mask, num_classes)
    grey, path_decodes_same = to_greyscale(image)
    width, height = image.size
    boxes = [(0, 0, width, height)]
    if options.patch_size is not None:
        try:
            boxes = tile_boxes(width, height, options.patch_size, options.stride)
        except ValueError as err:
            raise DataError(f"cannot tile image {pair.image_path}: {err}", (pair.image_path,)) from err
    rows = []
    for box in boxes:
        whole = box == (0, 0, width, height)
        patch_image = grey if whole else grey.crop(box)
        patch_mask = PIL.Image.fromarray(mask[box[1] : box[3], box[0] : box[2]].astype(np.uint8), mode="L")
        if options.resolution is not None:
            patch_image = resize_image(patch_image, options.resolution)
            patch_mask = resize_mask(patch_mask, options.resolution)
        if whole and options.resolution is None and path_decodes_same:
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
                "_labels": (pair.mask_path, np.unique(mask).tolist()),
            }
        )
    return rows


# --------------------------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------------------------


def _report_skipped(skipped: Sequence[SkippedPair], context: str) -> None:
    if skipped:
        logger.warning(
            "%s: skipped %d bad pair(s): %s",
            context,
            len(skipped),
            "; ".join(s.reason for s in skipped[:MAX_LISTED]) + (" ..." if len(skipped) > MAX_LISTED else ""),
        )


def _raise_problems(problems: Sequence[SkippedPair], context: str) -> None:
    if len(problems) == 1:
        raise DataError(f"{context}: {problems[0].reason}", problems[0].files)
    files = tuple(f for p in problems for f in p.files)
    listed = "; ".join(p.reason for p in problems[:MAX_LISTED])
    more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
    raise DataError(
        f"{context}: {len(problems)} bad pair(s): {listed}{more}. Pass on_error='skip' to drop them.", files
    )


def _no_valid_pair(context: str, skipped: Sequence[SkippedPair]) -> DataError:
    return DataError(f"{context}: no valid image/mask pair found", tuple(f for p in skipped for f in p.files))


def _decode_subset(
    pairs: Sequence[PairSpec], decode_mask: MaskDecoder, num_classes: Optional[int], options: LoadOptions,
    context: str, skipped: List[SkippedPair],
) -> Dict[int, List[dict]]:
    """Decode pairs in seeded-subset order until ``num_samples`` are valid; returns pair index → rows.

    Bad pairs raise (``on_error="raise"``) or are appended to ``skipped``.
    """
    order = subset_order(len(pairs), options.num_samples, options.seed)
    wanted = len(pairs) if options.num_samples is None else min(options.num_samples, len(pairs))
    workers = options.num_workers or min(8, os.cpu_count() or 1)

    def work(index: int):
        try:
            return index, _process_pair(pairs[index], decode_mask, num_classes, options), None
        except DataError as err:
            return index, None, err

    kept: Dict[int, List[dict]] = {}
    position = 0
    with ThreadPoolExecutor(max_workers=workers) as executor:
        while len(kept) < wanted and position < len(order):
            batch = order[position : position + (wanted - len(kept))]
            position += len(batch)
            for index, rows, err in executor.map(work, batch.tolist()):
                if err is None:
                    kept[index] = rows
                elif options.on_error == "raise":
                    raise DataError(f"{context}: {err}", err.files) from err
                else:
                    skipped.append(SkippedPair(pairs[index].key, err.files, str(err)))
    return kept


def check_inferred_classes(mask_values: Sequence[Tuple[str, Sequence[int]]], context: str) -> None:
    """Refuse a class set inferred from mask values (``max + 1``) that has gaps: values that occur nowhere below
    the largest one mean the masks are not consecutive class indices (0/255 masks, a stray pixel value...).

    Args:
        mask_values (`Sequence[Tuple[str, Sequence[int]]]`): ``(mask path, distinct values)`` of every mask.
        context (`str`): prefix of the message (the dataset).

    Raises:
        `DataError`: naming the values that occur nowhere, the masks holding values above the gap, and the flags
            that state the class set.
    """
    present = sorted({int(v) for _, values in mask_values for v in values})
    missing = sorted(set(range(present[-1] + 1)) - set(present)) if present else []
    if not missing:
        return
    above = [v for v in present if v > missing[0]]
    files = sorted({path for path, values in mask_values if any(v in above for v in values)})
    shown = ", ".join(files[:3]) + (f" (+{len(files) - 3} more)" if len(files) > 3 else "")
    gap = f"{missing[0]}..{missing[-1]}" if len(missing) > 1 else str(missing[0])
    raise DataError(
        f"{context}: the number of classes would be inferred as {present[-1] + 1} from mask values {present}, but "
        f"values {gap} occur in no mask; value(s) {above[:10]} come from {shown}. Expected consecutive class "
        "indices 0..K-1: for 0/255 masks pass --mask_threshold 127; otherwise state the classes with --num_classes "
        "(or id2label) and fix the masks holding unexpected values",
        tuple(files),
    )


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
    options: Optional[LoadOptions] = None,
) -> Union[Dataset, Tuple[Dataset, LoadingInfo]]:
    """Validate image/mask pairs and build the :class:`datasets.Dataset` (the engine behind every file loader).

    Every image and mask is fully decoded once here, so unreadable / truncated files, size mismatches and mask
    values ``>= num_classes`` surface at load time. Untiled, unresized 8-bit images are stored as file
    references (decoded again, lazily, on access; ``save_to_disk`` embeds their bytes); patches, resized
    images and masks are stored as PNG bytes.

    Args:
        pairs (`Sequence[PairSpec]`): candidate pairs.
        decode_mask (`Callable[[PIL.Image.Image, str], np.ndarray]`): mask file → ``(H, W)`` class indices
            (see :func:`~dakter_hf.data.files.make_mask_decoder`).
        num_classes (`int`, *optional*): number of classes; ``None`` infers ``max(mask) + 1`` over the data, and
            refuses values with gaps ([`check_inferred_classes`]).
        id2label (`Dict[int, str]`, *optional*): class names; default ``{i: f"class_{i}"}``.
        source, sensor, split (`str`): metadata written to every row.
        context (`str`): prefix for error / warning messages (e.g. ``"SOS palsar/train"``); default ``source``.
        problems (`Sequence[SkippedPair]`): pairing problems already found (unmatched files...).
        options (`LoadOptions`, *optional*): subset, tiling, resizing, ``on_error`` and ``output_loading_info``;
            default ``LoadOptions()`` (every pair, whole scenes, native size, raise on bad input).

    Returns:
        `Dataset`, or `(Dataset, LoadingInfo)` if ``options.output_loading_info``.

    Raises:
        `DataError`: bad input with ``on_error="raise"``, no valid pair at all, or too few pairs for
            ``num_samples``.
    """
    options = options if options is not None else LoadOptions()
    check_on_error(options.on_error)
    context = context or source
    num_samples = options.num_samples
    skipped: List[SkippedPair] = []
    if problems:
        if options.on_error == "raise":
            _raise_problems(problems, context)
        skipped.extend(problems)
    if not pairs:
        _report_skipped(skipped, context)
        raise _no_valid_pair(context, skipped)
    if num_samples is not None:
        if num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if num_samples > len(pairs) and options.on_error == "raise":
            raise DataError(f"{context}: asked for num_samples={num_samples} pairs but only {len(pairs)} exist")
    kept = _decode_subset(pairs, decode_mask, num_classes, options, context, skipped)
    _report_skipped(skipped, context)
    if not kept:
        raise _no_valid_pair(context, skipped)
    if num_samples is not None and len(kept) < num_samples:
        logger.warning("%s: only %d valid pair(s) for num_samples=%d", context, len(kept), num_samples)

    rows = [row for index in sorted(kept, key=lambda i: pairs[i].key) for row in kept[index]]
    mask_values = [row.pop("_labels") for row in rows]
    if num_classes is None:
        num_classes = max(row.pop("_max_label") for row in rows) + 1
        if not id2label:
            check_inferred_classes(mask_values, context)
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
    dataset = rows_to_dataset(columns, id2label)
    if not options.output_loading_info:
        return dataset
    return dataset, LoadingInfo(num_pairs=len(kept), num_rows=len(rows), skipped=skipped)
