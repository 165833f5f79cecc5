"""`dakter-generate`: turn a trained DAKTer pipeline into a `datasets` dataset of synthetic (image, soft label) pairs.

Single process:

    dakter-generate --pipeline outputs/joint --num_samples 4000 --output_dir outputs/generated

Several processes (each generates its own block of indices; the main process assembles the dataset), on GPUs or,
with gloo, on CPU cores:

    accelerate launch --multi_gpu --num_processes 2 -m dakter_hf.commands.generate --pipeline outputs/joint \\
        --num_samples 4000 --output_dir outputs/generated

Images drawn for the masks of a labelled dataset (k per mask, optionally flipped / rotated and, with
`--perturb_masks`, randomly dilated / eroded / shifted / composed first; the dataset flags are those of the training
scripts), same schema plus `source_mask` and `mask_transform` (and `mask_perturbation`) columns:

    dakter-generate --pipeline outputs/joint --masks_from_dataset --dataset sos --data_dir ../shared/data/sos \
        --sensor sentinel --num_train_samples 150 --images_per_mask 4 --augment_masks --output_dir outputs/drawn

Rerunning an interrupted command resumes at the first missing index. See `dakter_hf.generation` for the format.
"""

import argparse
import json
import logging
import os
import sys

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

from ..data import add_data_args, check_data_args, dataset_from_args
from ..distributed import check_world_size
from ..errors import DAKTerError
from ..filesystem import OutputDirLock, is_launcher_main_process
from ..generation import COMPUTE_DTYPES, MASK_PERTURBATIONS, generate_mask_conditioned_to_disk, generate_to_disk
from ..hub import HubPushError, push_dataset_to_hub
from ..labels import SOFT_LABEL_DTYPES
from ..models import JointUNet2DModel
from ..pipelines import SCHEDULERS, DAKTerPipeline, set_scheduler
from .errors import DEBUG_HELP, command_line_errors
from .options import positive_int


logger = logging.getLogger("dakter_hf.generate")


def _id2label_arg(value: str) -> dict:
    """`--id2label`: a JSON object (`'{"0": "sea", "1": "oil_spill"}'`) or the path of a JSON file holding one."""
    text = open(value, encoding="utf-8").read() if os.path.isfile(value) else value
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--id2label must be a JSON object or a JSON file: {error}") from error
    if not isinstance(mapping, dict):
        raise argparse.ArgumentTypeError(f"--id2label must be a JSON object, got {type(mapping).__name__}.")
    return mapping


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `dakter-generate`."""
    parser = argparse.ArgumentParser(
        prog="dakter-generate",
        description="Generate synthetic SAR image / soft-label pairs with a trained DAKTer pipeline and save them as "
                    "a `datasets` dataset (resumable; shareable on the Hub).",
    )
    parser.add_argument("--pipeline", required=True, help="Pipeline directory or Hub repository id.")
    parser.add_argument("--num_samples", type=positive_int, default=None,
                        help="Number of pairs to generate (joint sampling; required without --masks_from_dataset).")
    parser.add_argument("--output_dir", required=True,
                        help="Dataset directory (read it with datasets.load_from_disk); shards of an unfinished run "
                             "live in <output_dir>.partial until the dataset is complete.")
    parser.add_argument("--batch_size", type=positive_int, default=8, help="Pairs per pipeline call (default 8).")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None,
                        help="Sampler; default: the pipeline's own scheduler. dpmsolver is DPM-Solver++.")
    parser.add_argument("--num_inference_steps", type=positive_int, default=50, help="Denoising steps (default 50).")
    parser.add_argument("--seed", type=int, default=0, help="Row i is generated from seed + i (default 0).")
    parser.add_argument("--soft_label_temperature", type=float, default=None,
                        help="Softmax temperature of the soft labels (> 1 softens); default: the pipeline's stored "
                             "one (`soft_label_temperature` in its model_index.json, written by dakter-calibrate "
                             "--save), else 1.0. The value used is recorded in the dataset card.")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta (default 0.0).")
    parser.add_argument("--soft_label_dtype", choices=SOFT_LABEL_DTYPES, default="uint8",
                        help="Storage of the soft labels (default uint8: 4x smaller than float32, error < 1/255).")
    parser.add_argument("--channels_last", action="store_true",
                        help="Run the UNet with its convolution kernels in channels-last memory layout: faster "
                             "sampling on CPU (1.2-1.5x at 64x64 in BENCHMARKS.md). Rows differ from a default run "
                             "by float rounding only; the layout is recorded in the dataset card.")
    parser.add_argument("--dtype", choices=COMPUTE_DTYPES, default="float32",
                        help="Compute dtype of the UNet (autocast; weights and sampler state stay float32): bfloat16 "
                             "samples faster on CPUs with bf16 instructions and on GPUs (see BENCHMARKS.md), float16 "
                             "on GPUs. Rows differ from float32 ones by the rounding; the dtype is recorded in the "
                             "dataset card.")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the UNet: the first batch includes the compilation (minutes on a CPU); "
                             "recorded in the dataset card.")
    parser.add_argument("--id2label", type=_id2label_arg, default=None,
                        help="Class names as JSON or a JSON file; default: those stored with the pipeline "
                             "(`id2label` in its model_index.json), else class_0..class_{K-1}.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace an existing output_dir and discard an interrupted run with other settings.")
    parser.add_argument("--push_to_hub", action="store_true", help="Push the dataset, its card and preview.")
    parser.add_argument("--hub_dataset_id", default=None,
                        help="Dataset repository id for --push_to_hub (default: the name of output_dir).")
    parser.add_argument("--hub_token", default=None, help="Hub token (default: the logged-in token / HF_TOKEN).")
    parser.add_argument("--private", action="store_true", help="Create the dataset repository as private.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    masks = parser.add_argument_group("mask-conditioned generation (images drawn for the masks of a labelled dataset)")
    masks.add_argument("--masks_from_dataset", action="store_true",
                       help="Draw images for the masks of the dataset given by the data flags (--dataset, --data_dir, "
                            "--sensor, --num_train_samples, ...) instead of sampling pairs jointly.")
    masks.add_argument("--mask_split", default="train", help="Split whose masks are used (default train).")
    masks.add_argument("--images_per_mask", type=positive_int, default=1, help="Images drawn per mask (k).")
    masks.add_argument("--augment_masks", action="store_true",
                       help="A random flip / 90-degree rotation of each row's mask before drawing.")
    masks.add_argument("--perturb_masks", nargs="*", choices=MASK_PERTURBATIONS, default=None, metavar="KIND",
                       help="A random layout perturbation of each row's mask before drawing (and before its flip / "
                            "rotation), drawn from the row's seed and recorded in a `mask_perturbation` column: "
                            "dilate / erode (the non-background classes by 1-3 px), shift (up to a quarter of the "
                            "side, background filled in), compose (the regions of another mask of the set added). "
                            f"Alone: all of {', '.join(MASK_PERTURBATIONS)}; with kinds: among those.")
    masks.add_argument("--conditioning", choices=("auto", "replacement", "exact"), default="auto",
                       help="exact: models trained with per-modality timesteps; replacement: any model; auto: exact "
                            "when the model allows it.")
    masks.add_argument("--jump_length", type=positive_int, default=10, help="RePaint resampling: steps per jump.")
    masks.add_argument("--jump_n_sample", type=positive_int, default=1,
                       help="RePaint resampling: runs of each jump (1: none; replacement only).")
    add_data_args(parser)
    args = parser.parse_args(argv)
    if args.masks_from_dataset:
        if args.num_samples is not None:
            parser.error("--num_samples is the number of masks x --images_per_mask with --masks_from_dataset; "
                         "choose the masks with --num_train_samples instead.")
        if args.soft_label_temperature is not None:
            parser.error("--soft_label_temperature does not apply with --masks_from_dataset: the soft labels are the "
                         "masks the images are drawn for.")
        check_data_args(parser, args, args.mask_split)
    elif args.num_samples is None:
        parser.error("--num_samples is required (or --masks_from_dataset).")
    mask_only = [flag for flag in ("perturb_masks", "augment_masks") if getattr(args, flag) not in (None, False)]
    if mask_only and not args.masks_from_dataset:
        parser.error(f"{', '.join('--' + flag for flag in mask_only)} only apply with --masks_from_dataset (images "
                     "drawn for the masks of a labelled dataset).")
    if args.soft_label_temperature is not None and not args.soft_label_temperature > 0:
        parser.error(f"--soft_label_temperature must be > 0, got {args.soft_label_temperature}")
    if (args.hub_dataset_id or args.private) and not args.push_to_hub:
        parser.error("--hub_dataset_id and --private need --push_to_hub")
    return args


def distributed_state():
    """The `accelerate.PartialState` of this process.

    accelerate sets up a multi-process group on CPUs only when asked to use the CPU; without it, every process of
    a CPU-only `accelerate launch --multi_gpu` / `torchrun` would believe it is alone and generate everything. So
    the CPU is requested when several processes run on a machine without CUDA (or with `ACCELERATE_USE_CPU=1`), and
    a launch whose processes still do not see each other is an error.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or (world_size > 1 and not torch.cuda.is_available())
    state = PartialState(cpu=cpu)
    check_world_size(state)
    return state


@command_line_errors
def main(argv: list[str] | None = None) -> int:
    """Run `dakter-generate`; returns the process exit code (0: success, 1: the Hub push failed; a bad input ends
    it with one line on stderr and exit code 2). One run at a time per `--output_dir` (lock `<output_dir>.lock`)."""
    args = parse_args(argv)
    if not is_launcher_main_process():
        return generate(args)
    with OutputDirLock.beside(args.output_dir):
        return generate(args)


def load_pipeline(name_or_path: str, token: str | None = None) -> DAKTerPipeline:
    """`DAKTerPipeline.from_pretrained(name_or_path)`, with a one-line [`DAKTerError`] naming `--pipeline` when it
    cannot be loaded (missing, truncated or corrupt files, a `model_index.json` naming other classes)."""
    try:
        pipe = DAKTerPipeline.from_pretrained(name_or_path, token=token)
        if not isinstance(pipe.unet, JointUNet2DModel):
            raise TypeError(f"its model_index.json makes the unet a {type(pipe.unet).__name__}, not a "
                            "JointUNet2DModel")
        return pipe
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:400]
        raise DAKTerError(f"--pipeline {name_or_path} cannot be loaded as a DAKTerPipeline ({reason}); expected the "
                          "directory (or Hub id) of a pipeline saved by train_joint_diffusion.py.") from error


def generate(args: argparse.Namespace) -> int:
    """The generation run of parsed arguments `args` (see [`main`])."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    state = distributed_state()
    pipe = load_pipeline(args.pipeline, token=args.hub_token).to(state.device)
    if args.scheduler is not None:
        set_scheduler(pipe, args.scheduler)
    if args.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if args.compile:
        pipe.unet.compile()
    common = dict(batch_size=args.batch_size, seed=args.seed, num_inference_steps=args.num_inference_steps,
                  eta=args.eta, soft_label_dtype=args.soft_label_dtype, dtype=args.dtype, id2label=args.id2label,
                  overwrite=args.overwrite, pipeline_name=args.pipeline, distributed_state=state)
    if args.masks_from_dataset:
        size = pipe.unet.config.sample_size
        size = size if isinstance(size, int) else tuple(size)
        masks = dataset_from_args(args, split=args.mask_split, resolution=size)
        subset = f", {args.num_train_samples} pairs (seed {args.data_seed})" if args.num_train_samples else ""
        output = generate_mask_conditioned_to_disk(
            pipe, masks, args.output_dir, num_images_per_mask=args.images_per_mask, augment_masks=args.augment_masks,
            perturb_masks=(args.perturb_masks or True) if args.perturb_masks is not None else False,
            conditioning=args.conditioning, jump_length=args.jump_length, jump_n_sample=args.jump_n_sample,
            masks_name=f"{' '.join(p for p in (args.dataset, args.sensor, args.mask_split) if p)}{subset}", **common)
    else:
        output = generate_to_disk(pipe, args.output_dir, args.num_samples,
                                  soft_label_temperature=args.soft_label_temperature, **common)
    if not state.is_main_process:
        return 0
    logger.info("Saved %d pairs to %s (generated now: %d, resumed: %d).", len(output.dataset), output.output_dir,
                output.num_generated, output.num_resumed)
    if args.push_to_hub:
        repo_id = args.hub_dataset_id or os.path.basename(os.path.normpath(args.output_dir))
        try:
            url = push_dataset_to_hub(output.output_dir, repo_id, token=args.hub_token, private=args.private or None)
        except HubPushError as error:
            logger.error("%s", error)
            return 1
        logger.info("Pushed the dataset to %s", url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
