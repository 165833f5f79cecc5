"""Loader for the Oil Spill Detection dataset (OSD, Krestenitis et al., Remote Sensing 2019)."""

from typing import Dict, Optional, Tuple, Union

from datasets import Dataset

from .builder import LoadOptions, build_pair_dataset
from .errors import DataError, LoadingInfo
from .files import DEFAULT_COLOR_TOLERANCE, PathLike, find_pairs, find_subdir, make_mask_decoder, resolve_split_dir
from .transforms import Resolution


OSD_ID2LABEL: Dict[int, str] = {0: "sea", 1: "oil_spill", 2: "look_alike", 3: "ship", 4: "land"}
OSD_COLORMAP: Dict[int, Tuple[int, int, int]] = {
    0: (0, 0, 0),
    1: (0, 255, 255),
    2: (255, 0, 0),
    3: (153, 76, 0),
    4: (0, 153, 0),
}
OSD_MASK_TYPES: Tuple[str, ...] = ("auto", "index", "color")


def load_osd(
    data_dir: PathLike,
    split: str = "train",
    patch_size: Optional[Resolution] = None,
    stride: Optional[Resolution] = None,
    mask_type: str = "auto",
    color_tolerance: float = DEFAULT_COLOR_TOLERANCE,
    num_samples: Optional[int] = None,
    seed: int = 0,
    resolution: Optional[Resolution] = None,
    on_error: str = "raise",
    output_loading_info: bool = False,
) -> Union[Dataset, Tuple[Dataset, LoadingInfo]]:
    """Load a split of OSD from the release's original layout.

    Layout (per split; the split folder may be called ``train``/``training``, ``test``/``testing``,
    ``val``/``validation``, in any case, directly under ``data_dir`` or one level deeper)::

        <split>/images/<name>.jpg       1250x650 Sentinel-1 scenes
        <split>/labels/<name>.png       colour-coded masks
        <split>/labels_1D/<name>.png    index masks (0..4)

    Classes: 0 sea (0,0,0), 1 oil_spill (0,255,255), 2 look_alike (255,0,0), 3 ship (153,76,0),
    4 land (0,153,0). With ``mask_type="auto"`` the exact ``labels_1D`` index masks are used when the folder
    exists, the colour masks otherwise. Colour masks map every pixel to the nearest class colour when within
    ``color_tolerance`` (Euclidean RGB distance, default 40: the closest two class colours are 127 apart), and
    raise a :class:`DataError` naming the file and the colour otherwise.

    Args:
        data_dir (`str` or `os.PathLike`): root of the release.
        split (`str`): ``"train"`` or ``"test"`` (or ``"validation"`` if such a folder exists).
        patch_size (`int` or `(height, width)`, *optional*): tile each scene into patches; each row's
            ``patch_box`` gives its ``[left, top, right, bottom]`` in the scene, ``scene_id`` the scene.
        stride (`int` or `(height, width)`, *optional*): step between patches (default ``patch_size``).
        mask_type (`str`): ``"auto"``, ``"index"`` (``labels_1D``) or ``"color"`` (``labels``).
        color_tolerance (`float`): see above.
        num_samples (`int`, *optional*): seeded random subset of this many scenes (before tiling).
        seed (`int`): seed of the subset.
        resolution (`int` or `(height, width)`, *optional*): resize scenes / patches at load time.
        on_error (`str`): ``"raise"`` or ``"skip"`` bad pairs.
        output_loading_info (`bool`): also return a :class:`LoadingInfo`.

    Returns:
        `Dataset` (or `(Dataset, LoadingInfo)`) with the shared schema, ``source="osd"``,
        ``sensor="sentinel"``.

    Raises:
        `DataError`: missing folders or any bad input (see :func:`~dakter_hf.data.load_mask_folder`).
    """
    options = LoadOptions(num_samples=num_samples, seed=seed, patch_size=patch_size, stride=stride,
                          resolution=resolution, on_error=on_error, output_loading_info=output_loading_info)
    if mask_type not in OSD_MASK_TYPES:
        raise ValueError(f"mask_type must be one of {OSD_MASK_TYPES}, got {mask_type!r}")
    split_dir = resolve_split_dir(data_dir, split, required=("images",))
    image_dir = find_subdir(split_dir, ("images", "imgs"))
    index_dir = find_subdir(split_dir, ("labels_1D", "labels_1d"))
    color_dir = find_subdir(split_dir, ("labels",))
    if mask_type == "auto":
        mask_type = "index" if index_dir is not None else "color"
    mask_dir = index_dir if mask_type == "index" else color_dir
    if image_dir is None or mask_dir is None:
        wanted = "labels_1D/" if mask_type == "index" else "labels/"
        raise DataError(f"OSD split folder {split_dir} must contain images/ and {wanted}", (str(split_dir),))
    pairs, problems = find_pairs(image_dir, mask_dir)
    colormap = OSD_COLORMAP if mask_type == "color" else None
    return build_pair_dataset(
        pairs, problems=problems, decode_mask=make_mask_decoder(colormap, color_tolerance),
        num_classes=len(OSD_ID2LABEL), id2label=OSD_ID2LABEL, source="osd", sensor="sentinel", split=split,
        context=f"osd {image_dir} | {mask_dir}", options=options,
    )
