"""Loader for any folder of image / mask pairs (index masks or colour-coded masks)."""

from typing import Dict, Optional, Tuple, Union

from datasets import Dataset

from .builder import LoadOptions, build_pair_dataset
from .errors import LoadingInfo
from .files import DEFAULT_COLOR_TOLERANCE, PathLike, find_pairs, make_mask_decoder
from .transforms import Resolution


def load_mask_folder(
    image_dir: PathLike,
    mask_dir: PathLike,
    colormap: Optional[Dict[int, Tuple[int, int, int]]] = None,
    num_classes: Optional[int] = None,
    id2label: Optional[Dict[int, str]] = None,
    mask_threshold: Optional[int] = None,
    color_tolerance: float = DEFAULT_COLOR_TOLERANCE,
    num_samples: Optional[int] = None,
    seed: int = 0,
    patch_size: Optional[Resolution] = None,
    stride: Optional[Resolution] = None,
    resolution: Optional[Resolution] = None,
    on_error: str = "raise",
    output_loading_info: bool = False,
    source: str = "folder",
    sensor: str = "",
    split: str = "",
) -> Union[Dataset, Tuple[Dataset, LoadingInfo]]:
    """Load a folder of images and a folder of masks, paired by file stem.

    **Matching.** A file's key is its stem minus one trailing tag — ``_sat``/``_image``/``_img`` for images,
    ``_mask``/``_label``/``_labels``/``_gt``/``_seg`` for masks — so ``x.jpg`` ↔ ``x.png``,
    ``x.jpg`` ↔ ``x_mask.png`` and ``x_sat.jpg`` ↔ ``x_mask.png`` pair up. ``image_dir`` and ``mask_dir`` may
    be the same folder (then masks are the files with a mask tag). See :func:`~dakter_hf.data.find_pairs`.

    **Masks.** Without ``colormap``: single-channel index masks (``L``/``P``/``I``, or RGB with identical
    channels) holding class indices, optionally binarised with ``mask_threshold`` (e.g. 127 for 0/255 masks).
    With ``colormap``: RGB masks, every pixel mapped to the nearest class colour within ``color_tolerance``.

    Args:
        image_dir (`str` or `os.PathLike`): folder of images (jpg/png/tif/bmp; read as 8-bit greyscale).
        mask_dir (`str` or `os.PathLike`): folder of masks.
        colormap (`Dict[int, Tuple[int, int, int]]`, *optional*): class index → RGB colour, indices 0..K-1.
        num_classes (`int`, *optional*): K; default ``len(colormap)``, ``len(id2label)``, 2 with
            ``mask_threshold``, else ``max(mask) + 1`` over the data. Mask values ``>= K`` are errors.
        id2label (`Dict[int, str]`, *optional*): class names; default ``{i: "class_i"}``.
        mask_threshold (`int`, *optional*): binarise grey masks (class 1 where value ``> mask_threshold``).
        color_tolerance (`float`): Euclidean RGB distance accepted between a pixel and its class colour
            (default 40, under a third of the gap between the closest OSD class colours), absorbing JPEG /
            resampling noise; farther colours raise a :class:`DataError` naming the file and the colour.
        num_samples (`int`, *optional*): seeded random subset of this many pairs (scenes, before tiling).
        seed (`int`): seed of the subset.
        patch_size (`int` or `(height, width)`, *optional*): tile every scene into patches of this size;
            ``patch_box`` records each patch's position and ``id`` is ``<key>_x<left>_y<top>``.
        stride (`int` or `(height, width)`, *optional*): step between patches (default ``patch_size``); the
            last row / column is aligned to the border so the scene is fully covered.
        resolution (`int` or `(height, width)`, *optional*): resize (after tiling) at load time.
        on_error (`str`): ``"raise"`` (default) or ``"skip"`` bad pairs, with a logged warning listing them.
        output_loading_info (`bool`): also return a :class:`LoadingInfo` (kept / skipped pairs).
        source, sensor, split (`str`): metadata written to every row.

    Returns:
        `Dataset` (or `(Dataset, LoadingInfo)`) with the shared schema (see :mod:`dakter_hf.data.schema`).

    Raises:
        `DataError`: empty folders, unmatched / unreadable files, size mismatches, out-of-range mask values,
            off-palette colours (unless ``on_error="skip"``).
    """
    options = LoadOptions(num_samples=num_samples, seed=seed, patch_size=patch_size, stride=stride,
                          resolution=resolution, on_error=on_error, output_loading_info=output_loading_info)
    if colormap is not None:
        colormap = {int(k): tuple(int(c) for c in v) for k, v in colormap.items()}
        if sorted(colormap) != list(range(len(colormap))):
            raise ValueError(f"colormap keys must be the class indices 0..K-1, got {sorted(colormap)}")
    if num_classes is None:
        if colormap is not None:
            num_classes = len(colormap)
        elif id2label is not None:
            num_classes = len(id2label)
        elif mask_threshold is not None:
            num_classes = 2
    pairs, problems = find_pairs(image_dir, mask_dir)
    return build_pair_dataset(
        pairs, problems=problems, decode_mask=make_mask_decoder(colormap, color_tolerance, mask_threshold),
        num_classes=num_classes, id2label=id2label, source=source, sensor=sensor, split=split,
        context=f"{source} {image_dir} | {mask_dir}", options=options,
    )
