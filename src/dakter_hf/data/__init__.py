"""Data for DAKTer: SAR oil-spill datasets as 🤗 ``datasets.Dataset`` objects, and the shared transforms.

Every loader returns the same schema — ``image`` (``Image(mode="L")``), ``mask`` (``Image(mode="L")`` of class
indices), ``id``, ``scene_id``, ``source``, ``sensor``, ``split``, ``patch_box`` — with the class names stored in
the features (read them with :func:`get_id2label`; they survive ``save_to_disk``/``load_from_disk``).
"""

from .builder import LoadOptions, build_pair_dataset, tile_boxes
from .dispatch import (
    DATASET_NAMES,
    HELDOUT_SPLIT,
    add_data_args,
    check_data_args,
    dataset_from_args,
    load_dataset_by_name,
)
from .errors import DataError, LoadingInfo, SkippedPair
from .files import DEFAULT_COLOR_TOLERANCE, PairSpec, find_pairs
from .folder import load_mask_folder
from .osd import OSD_COLORMAP, OSD_ID2LABEL, load_osd
from .schema import METADATA_COLUMNS, get_id2label, make_features, set_id2label
from .simulator import SIMULATED_ID2LABEL_2, SIMULATED_ID2LABEL_5, simulate_sar_scenes, simulate_scene
from .sos import SOS_ID2LABEL, SOS_SENSORS, load_sos
from .transforms import (
    SegmentationTransform,
    augment_batch,
    build_transform,
    collate_fn,
    dataset_to_tensors,
    image_to_tensor,
    mask_to_class_fractions,
    mask_to_tensor,
    random_dihedral,
    resize_image,
    resize_mask,
    tensor_to_image,
)


__all__ = [
    "DATASET_NAMES",
    "DEFAULT_COLOR_TOLERANCE",
    "HELDOUT_SPLIT",
    "METADATA_COLUMNS",
    "OSD_COLORMAP",
    "OSD_ID2LABEL",
    "SIMULATED_ID2LABEL_2",
    "SIMULATED_ID2LABEL_5",
    "SOS_ID2LABEL",
    "SOS_SENSORS",
    "DataError",
    "LoadOptions",
    "LoadingInfo",
    "PairSpec",
    "SegmentationTransform",
    "SkippedPair",
    "add_data_args",
    "check_data_args",
    "build_pair_dataset",
    "augment_batch",
    "build_transform",
    "collate_fn",
    "dataset_from_args",
    "dataset_to_tensors",
    "find_pairs",
    "get_id2label",
    "image_to_tensor",
    "load_dataset_by_name",
    "load_mask_folder",
    "load_osd",
    "load_sos",
    "make_features",
    "mask_to_class_fractions",
    "mask_to_tensor",
    "random_dihedral",
    "resize_image",
    "resize_mask",
    "set_id2label",
    "simulate_sar_scenes",
    "simulate_scene",
    "tensor_to_image",
    "tile_boxes",
]
