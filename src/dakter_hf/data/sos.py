"""Loader for the SOS (Deep-SAR Oil Spill) release, in its original folder layout."""

from pathlib import Path
from typing import Optional, Tuple, Union

from datasets import Dataset

from .builder import LoadOptions, build_pair_dataset
from .errors import DataError, LoadingInfo
from .files import PathLike, find_pairs, make_mask_decoder
from .transforms import Resolution


SOS_ID2LABEL = {0: "sea", 1: "oil_spill"}
SOS_SENSORS: Tuple[str, ...] = ("palsar", "sentinel")
SOS_SPLITS: Tuple[str, ...] = ("train", "test")
#: Oil where the mask's grey value is above this (training masks have anti-aliased edges).
SOS_MASK_THRESHOLD = 127


def sos_split_dirs(data_dir: PathLike, sensor: str, split: str) -> Tuple[Path, Path]:
    """Image and mask folders of one SOS sensor / split.

    Args:
        data_dir (`str` or `os.PathLike`): root of the release (contains ``train/`` and ``test/``).
        sensor (`str`): ``"palsar"`` or ``"sentinel"``.
        split (`str`): ``"train"`` or ``"test"``.

    Returns:
        `Tuple[Path, Path]`: ``(image_dir, mask_dir)`` — ``train/<sensor>`` twice, or ``test/<sensor>/sat`` and
        ``test/<sensor>/gt``.
    """
    if sensor not in SOS_SENSORS:
        raise ValueError(f"SOS sensor must be one of {SOS_SENSORS}, got {sensor!r}")
    if split not in SOS_SPLITS:
        raise ValueError(f"SOS split must be one of {SOS_SPLITS}, got {split!r}")
    root = Path(data_dir) / split / sensor
    if not root.is_dir():
        raise DataError(
            f"SOS folder {root} does not exist: expected the release layout <data_dir>/{split}/{sensor}/",
            (str(root),),
        )
    if split == "train":
        return root, root
    return root / "sat", root / "gt"


def load_sos(
    data_dir: PathLike,
    sensor: str,
    split: str = "train",
    num_samples: Optional[int] = None,
    seed: int = 0,
    resolution: Optional[Resolution] = None,
    on_error: str = "raise",
    output_loading_info: bool = False,
) -> Union[Dataset, Tuple[Dataset, LoadingInfo]]:
    """Load one sensor / split of SOS (Zhu et al., IEEE TGRS 2021) from the release's original layout.

    Layout::

        train/<sensor>/<id>_sat.jpg + train/<sensor>/<id>_mask.png
        test/<sensor>/sat/<id>_sat.jpg + test/<sensor>/gt/<id>_mask.png

    Images (JPEG, 3 identical channels) are read as ``"L"``. Masks are binarised with the same rule for both
    splits: oil spill (1) where the grey value is ``> 127`` (training masks have anti-aliased edges), sea (0)
    elsewhere.

    Args:
        data_dir (`str` or `os.PathLike`): root of the release.
        sensor (`str`): ``"palsar"`` (ALOS PALSAR) or ``"sentinel"`` (Sentinel-1A).
        split (`str`): ``"train"`` or ``"test"``.
        num_samples (`int`, *optional*): keep a random subset of this many pairs, deterministic per ``seed``
            (for a fixed seed, smaller subsets are contained in larger ones). ``None`` keeps all.
        seed (`int`): seed of the subset.
        resolution (`int` or `(height, width)`, *optional*): resize at load time (bilinear / nearest).
        on_error (`str`): ``"raise"`` or ``"skip"`` bad pairs (see :class:`~dakter_hf.data.LoadOptions`).
        output_loading_info (`bool`): also return a :class:`LoadingInfo` (kept / skipped pairs).

    Returns:
        `Dataset` (or `(Dataset, LoadingInfo)`) with columns ``image``, ``mask`` (0 sea, 1 oil_spill), ``id``,
        ``scene_id``, ``source="sos"``, ``sensor``, ``split``, ``patch_box``; ``get_id2label(ds)`` gives
        ``{0: "sea", 1: "oil_spill"}``.

    Raises:
        `DataError`: missing folders, unmatched / unreadable files, size mismatches (unless ``on_error="skip"``).
    """
    options = LoadOptions(num_samples=num_samples, seed=seed, resolution=resolution, on_error=on_error,
                          output_loading_info=output_loading_info)
    image_dir, mask_dir = sos_split_dirs(data_dir, sensor, split)
    pairs, problems = find_pairs(
        image_dir, mask_dir, image_extensions=(".jpg", ".jpeg", ".png"), mask_extensions=(".png",)
    )
    return build_pair_dataset(
        pairs, problems=problems, decode_mask=make_mask_decoder(mask_threshold=SOS_MASK_THRESHOLD),
        num_classes=len(SOS_ID2LABEL), id2label=SOS_ID2LABEL, source="sos", sensor=sensor, split=split,
        context=f"SOS {sensor}/{split} in {data_dir}", options=options,
    )
