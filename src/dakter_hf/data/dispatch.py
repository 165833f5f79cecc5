"""One entry point for every dataset, shared by the training and distillation scripts' CLI flags."""

import argparse
import json
import os
from typing import Dict, Optional, Tuple

from datasets import Dataset

from .builder import ON_ERROR_CHOICES
from .errors import DataError
from .files import PathLike, find_subdir, resolve_split_dir
from .folder import load_mask_folder
from .osd import load_osd
from .simulator import simulate_sar_scenes
from .sos import SOS_SENSORS, load_sos
from .transforms import Resolution


DATASET_NAMES = ("simulated", "sos", "osd", "folder")
#: Default number of simulated scenes per split (when ``num_samples`` is not given).
SIMULATED_DEFAULT_SCENES = {"train": 512, "validation": 128, "test": 128}
#: Default simulated scene size when no ``resolution`` is given.
SIMULATED_DEFAULT_SIZE = 64
#: Split of the training pairs left out of the seeded ``--num_train_samples`` subset: in a scarce-data regime, a
#: validation set for choosing hyperparameters without looking at the test split.
HELDOUT_SPLIT = "train_heldout"


def load_dataset_by_name(
    name: str,
    data_dir: Optional[PathLike] = None,
    sensor: Optional[str] = None,
    split: str = "train",
    resolution: Optional[Resolution] = None,
    num_samples: Optional[int] = None,
    seed: int = 0,
    on_error: str = "raise",
    **kwargs,
) -> Dataset:
    """Load a dataset by name, with the same arguments for every source.

    - ``"simulated"``: :func:`simulate_sar_scenes`; ``data_dir``/``sensor`` are ignored; ``num_samples`` is the
      number of scenes (default 512 for train, 128 otherwise); ``seed`` is the simulator seed and the split is
      mixed into it, so train / validation / test scenes never coincide; scene size is ``resolution`` (default
      64). Extra kwargs: ``num_classes`` (5 or 2).
    - ``"sos"``: :func:`load_sos`; needs ``data_dir`` and ``sensor`` (``"palsar"``/``"sentinel"``).
    - ``"osd"``: :func:`load_osd`; needs ``data_dir``. Extra kwargs: ``patch_size``, ``stride``, ``mask_type``,
      ``color_tolerance``.
    - ``"folder"``: :func:`load_mask_folder` on ``<data_dir>/<split>/images`` and ``<data_dir>/<split>/masks``
      (or ``labels``); pass ``image_dir``/``mask_dir`` kwargs to point elsewhere. Extra kwargs: ``colormap``,
      ``num_classes``, ``id2label``, ``mask_threshold``, ``patch_size``, ``stride``...

    For the file-based datasets ``num_samples`` takes a seeded random subset (per ``seed``) and ``resolution``
    resizes at load time (antialiased bilinear / nearest, as the transforms do).

    Args:
        name (`str`): one of ``"simulated"``, ``"sos"``, ``"osd"``, ``"folder"``.
        data_dir (`str` or `os.PathLike`, *optional*): dataset root (not used by ``"simulated"``).
        sensor (`str`, *optional*): SOS sensor; for ``"folder"``, written to the ``sensor`` column.
        split (`str`): ``"train"``, ``"test"`` (or ``"validation"`` where it exists).
        resolution (`int` or `(height, width)`, *optional*): load-time size.
        num_samples (`int`, *optional*): subset size / number of simulated scenes.
        seed (`int`): subset / simulator seed.
        on_error (`str`): ``"raise"`` or ``"skip"`` bad pairs (file-based datasets).
        **kwargs: passed to the underlying loader.

    Returns:
        `Dataset` with the shared schema; class names via :func:`get_id2label`.

    Raises:
        `ValueError`: unknown name or missing ``data_dir``/``sensor``; `DataError`: bad data.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}")
    if name == "simulated":
        num_scenes = num_samples if num_samples is not None else SIMULATED_DEFAULT_SCENES.get(split, 128)
        return simulate_sar_scenes(
            num_scenes,
            size=resolution if resolution is not None else SIMULATED_DEFAULT_SIZE,
            seed=seed,
            split=split,
            **kwargs,
        )
    if data_dir is None:
        raise ValueError(f"dataset {name!r} needs data_dir (--data_dir)")
    common = dict(num_samples=num_samples, seed=seed, resolution=resolution, on_error=on_error)
    if name == "sos":
        if sensor is None:
            raise ValueError(f"dataset 'sos' needs sensor (--sensor), one of {SOS_SENSORS}")
        return load_sos(data_dir, sensor, split=split, **common, **kwargs)
    if name == "osd":
        return load_osd(data_dir, split=split, **common, **kwargs)
    image_dir, mask_dir = kwargs.pop("image_dir", None), kwargs.pop("mask_dir", None)
    if image_dir is None or mask_dir is None:
        split_dir = resolve_split_dir(data_dir, split, required=("images",))
        image_dir = image_dir or find_subdir(split_dir, ("images",))
        mask_dir = mask_dir or find_subdir(split_dir, ("masks", "labels", "annotations"))
        if mask_dir is None:
            raise DataError(f"folder dataset {split_dir} must contain masks/ (or labels/)", (str(split_dir),))
    return load_mask_folder(image_dir, mask_dir, sensor=sensor or "", split=split, **common, **kwargs)


def add_data_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the dataset flags shared by the training and distillation scripts.

    Flags: ``--dataset`` (simulated|sos|osd|folder, default simulated), ``--data_dir``, ``--sensor``,
    ``--num_train_samples`` (seeded subset of the training split / number of simulated training scenes),
    ``--data_seed`` (default 0), ``--on_error`` (raise|skip, default raise), ``--simulated_num_classes`` (5 or 2);
    for file datasets whose scenes are large or whose masks are not index masks: ``--patch_size`` /
    ``--patch_stride`` (osd, folder: tile each scene into patches), ``--mask_threshold`` and ``--colormap``
    (folder: 0/255 masks, or RGB masks with a JSON colour map).

    Args:
        parser (`argparse.ArgumentParser`): the parser to extend.

    Returns:
        `argparse.ArgumentParser`: the same parser.
    """
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", choices=DATASET_NAMES, default="simulated", help="dataset source")
    group.add_argument("--data_dir", type=str, default=None, help="dataset root (sos / osd / folder)")
    group.add_argument("--sensor", choices=SOS_SENSORS, default=None, help="SOS sensor")
    group.add_argument(
        "--num_train_samples",
        type=int,
        default=None,
        help="seeded random subset of the training pairs (simulated: number of training scenes)",
    )
    group.add_argument("--data_seed", type=int, default=0, help="seed of the subset / simulator")
    group.add_argument("--on_error", choices=ON_ERROR_CHOICES, default="raise", help="bad pairs: raise or skip")
    group.add_argument(
        "--simulated_num_classes",
        type=int,
        choices=(2, 5),
        default=5,
        help="simulated scenes: 5 classes (OSD-like) or 2 (sea / oil spill, SOS-like)",
    )
    group.add_argument("--patch_size", type=int, default=None,
                       help="osd / folder: tile every scene into square patches of this size (OSD scenes are 1250x650)")
    group.add_argument("--patch_stride", type=int, default=None, help="osd / folder: step between patches "
                       "(default: --patch_size, i.e. no overlap)")
    group.add_argument("--mask_threshold", type=int, default=None,
                       help="folder: binary masks, class 1 where the mask value is > this (e.g. 127 for 0/255 masks)")
    group.add_argument("--num_classes", type=int, default=None,
                       help="folder: number of classes K (mask values must be 0..K-1); default: inferred from the "
                            "masks, refused when the values have gaps")
    group.add_argument("--colormap", type=str, default=None,
                       help='folder: RGB masks; JSON file or string mapping class index to colour, e.g. '
                            '\'{"0": [0, 0, 0], "1": [255, 255, 255]}\'')
    return parser


def parse_colormap(value: str) -> Dict[int, Tuple[int, int, int]]:
    """Parse ``--colormap``: a JSON object (or the path of a JSON file) mapping class index to an RGB triple."""
    source = "--colormap"
    if os.path.isfile(value):
        source = value
        with open(value, encoding="utf-8") as f:
            value = f.read()
    try:
        raw = json.loads(value)
        colormap = {int(k): tuple(int(c) for c in v) for k, v in raw.items()}
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{source}: expected a JSON object mapping class index to an RGB triple, e.g. "
                         f'{{"0": [0, 0, 0], "1": [255, 255, 255]}}; got {value!r} ({error})') from None
    bad = {k: v for k, v in colormap.items() if len(v) != 3 or not all(0 <= c <= 255 for c in v)}
    if bad or not colormap:
        raise ValueError(f"{source}: every colour must be three values in 0..255, got {bad or raw!r}")
    return colormap


def check_data_args(parser: argparse.ArgumentParser, args: argparse.Namespace, split: Optional[str] = None) -> None:
    """Validate the flags of :func:`add_data_args` before any work starts; a problem ends the script through
    ``parser.error`` (usage and a one-line message naming the flag), not a traceback.

    Checks: ``--data_dir`` given (and a directory) for file datasets, ``--sensor`` for SOS, the osd / folder
    options (applicable to the dataset, a valid ``--colormap``) and, for ``split="train_heldout"``, that the flags
    define that split.
    """
    if args.dataset == "simulated" and (args.data_dir is not None or args.sensor is not None):
        flag = "--data_dir" if args.data_dir is not None else "--sensor"
        parser.error(f"{flag} is read by --dataset sos / osd / folder, but --dataset is 'simulated' (the default), "
                     f"which would ignore it and train on simulated scenes: add --dataset sos, osd or folder.")
    if args.dataset != "simulated" and args.data_dir is None:
        parser.error(f"--dataset {args.dataset} needs --data_dir.")
    if args.num_train_samples is not None and args.num_train_samples < 1:
        parser.error(f"--num_train_samples must be a positive integer, got {args.num_train_samples}.")
    if args.dataset == "simulated" and split is not None and split != HELDOUT_SPLIT \
            and split not in SIMULATED_DEFAULT_SCENES:
        parser.error(f"split {split!r} does not exist for --dataset simulated; expected one of "
                     f"{', '.join(SIMULATED_DEFAULT_SCENES)}.")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        parser.error(f"--data_dir {args.data_dir!r} is not a directory.")
    if args.dataset == "sos" and args.sensor is None:
        parser.error(f"--dataset sos needs --sensor (one of {', '.join(SOS_SENSORS)}).")
    try:
        _loader_options(args)
        if split == HELDOUT_SPLIT:
            _check_heldout_args(args)
    except ValueError as error:
        parser.error(str(error))


def _loader_options(args: argparse.Namespace) -> dict:
    """Loader keyword arguments from the osd / folder flags; a flag given for a dataset that has no use for it is an
    error rather than silently ignored."""
    flags = {"patch_size": ("osd", "folder"), "patch_stride": ("osd", "folder"), "mask_threshold": ("folder",),
             "colormap": ("folder",), "num_classes": ("folder",)}
    options = {}
    for flag, datasets in flags.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if args.dataset not in datasets:
            raise ValueError(f"--{flag} applies to --dataset {' / '.join(datasets)}, not {args.dataset!r}.")
        if flag == "colormap":
            value = parse_colormap(value)
        if flag == "num_classes" and not 2 <= value <= 256:
            raise ValueError(f"--num_classes must be between 2 and 256, got {value}.")
        options["stride" if flag == "patch_stride" else flag] = value
    if "stride" in options and "patch_size" not in options:
        raise ValueError("--patch_stride needs --patch_size.")
    return options


def dataset_from_args(
    args: argparse.Namespace, split: str = "train", resolution: Optional[Resolution] = None, **kwargs
) -> Dataset:
    """Load the dataset selected by the flags of :func:`add_data_args`.

    ``--num_train_samples`` applies to the ``"train"`` split only (other splits are loaded whole; simulated
    ones get their default size). ``split="train_heldout"`` (:data:`HELDOUT_SPLIT`) gives the training pairs
    *outside* that subset (file datasets only).

    Args:
        args (`argparse.Namespace`): parsed arguments.
        split (`str`): split to load.
        resolution (`int` or `(height, width)`, *optional*): load-time size; defaults to ``args.resolution``
            when the script defines that flag.
        **kwargs: extra loader arguments (see :func:`load_dataset_by_name`).

    Returns:
        `Dataset`
    """
    if resolution is None:
        resolution = getattr(args, "resolution", None)
    if args.dataset == "simulated":
        kwargs.setdefault("num_classes", getattr(args, "simulated_num_classes", 5))
    kwargs = {**_loader_options(args), **kwargs}
    if split == HELDOUT_SPLIT:
        return _heldout_training_pairs(args, resolution, kwargs)
    return load_dataset_by_name(
        args.dataset,
        data_dir=args.data_dir,
        sensor=args.sensor,
        split=split,
        resolution=resolution,
        num_samples=args.num_train_samples if split == "train" else None,
        seed=args.data_seed,
        on_error=args.on_error,
        **kwargs,
    )


def _check_heldout_args(args: argparse.Namespace) -> None:
    if args.dataset == "simulated" or args.num_train_samples is None:
        raise ValueError(
            f"--split {HELDOUT_SPLIT} needs a file dataset (sos / osd / folder) and --num_train_samples: it holds "
            f"the training pairs outside the seeded --num_train_samples subset; got --dataset {args.dataset} and "
            f"--num_train_samples {args.num_train_samples}."
        )


def _heldout_training_pairs(args: argparse.Namespace, resolution: Optional[Resolution], kwargs: dict) -> Dataset:
    """The rows of the training split that the seeded ``--num_train_samples`` subset does not contain."""
    _check_heldout_args(args)
    common = dict(data_dir=args.data_dir, sensor=args.sensor, split="train", resolution=resolution,
                  seed=args.data_seed, on_error=args.on_error, **kwargs)
    used = set(load_dataset_by_name(args.dataset, num_samples=args.num_train_samples, **common)["id"])
    heldout = load_dataset_by_name(args.dataset, num_samples=None, **common).filter(
        lambda row_id: row_id not in used, input_columns="id"
    )
    if len(heldout) == 0:
        raise DataError(f"--num_train_samples {args.num_train_samples} uses every training pair of {args.data_dir}: "
                        f"split {HELDOUT_SPLIT!r} is empty", (str(args.data_dir),))
    return heldout
