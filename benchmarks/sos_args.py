"""The flags of `benchmarks/sos_benchmark.py`: its parser, the checks of their combinations, and what a
set of flags turns on."""

import argparse
import functools
from pathlib import Path

from dakter_hf.distill.sampler import parse_generated_ratio
from dakter_hf.experiments import MODES


#: The student budget that names no students of its own (the only budget before `--student_steps` took several).
DEFAULT_STUDENT_STEPS = 600
#: Which generated pairs the students get (`--pairs`).
PAIRS = ("joint", "mask", "mixed")
#: Whose segmentation the levers of the generated labels use (`--labeller`).
LABELLERS = ("self", "per_modality")


def build_parser(description=None):
    """Every flag of the benchmark, with its default and help (`description`: the text above them in --help)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--sensor", required=True, choices=("palsar", "sentinel"))
    p.add_argument("--output_dir", type=Path, default=Path("outputs/sos-benchmark"))
    p.add_argument("--regimes", nargs="+", default=["150", "full"],
                   help="real-data regimes: 'full' (the whole train split) or a number of pairs (seeded subset)")
    p.add_argument("--data_seed", type=int, default=0)
    p.add_argument("--resolution", type=int, default=64)
    # Generator.
    p.add_argument("--model_size", default="small")
    p.add_argument("--generator_channels", type=int, nargs="+", default=None,
                   help="the generator's block_out_channels (width and levels), overriding --model_size's")
    p.add_argument("--generator_steps", type=int, default=2000)
    p.add_argument("--generator_batch_size", type=int, default=16)
    p.add_argument("--generator_lr", default="1e-3")
    p.add_argument("--crop_size", type=int, default=32,
                   help="patch-wise generator training on random crops (sampling stays at --resolution); "
                        "--crop_size equal to --resolution trains on whole scenes (generators named '-whole'); another "
                        "crop size than the default needs its own --output_dir")
    p.add_argument("--ce_weight", type=float, default=1.0)
    p.add_argument("--generator_augment", action="store_true",
                   help="train the generators on dihedral-augmented real pairs (random flips / 90-degree rotations)")
    p.add_argument("--soft_label_targets", action="store_true",
                   help="generator label targets keep the masks' boundary uncertainty: class fractions of the "
                        "full-size masks area-averaged to --resolution (soft-target CE) instead of one-hot masks")
    p.add_argument("--per_modality_timesteps", action="store_true",
                   help="train the generators with separate image and label timesteps (exact mask -> image "
                        "conditioning for --pairs mask / mixed)")
    p.add_argument("--generator_seed", type=int, nargs="+", default=None,
                   help="training seeds of the generators (default: --data_seed); each other value trains its own "
                        "generators, sampled with the same seeds (the generator's run-to-run spread), with its own "
                        "results file; several seeds run one after the other (with --jobs > 1 their generators "
                        "train side by side first), then a table over the generator seeds is printed "
                        "(benchmarks/sos_report.py)")
    # k = 4 is the paper's amount (0 / 1x / 2x / 4x gave 73.38 / 73.81 / 74.65 / 74.86 mIoU on OSD).
    p.add_argument("--generated_multiple", type=float, default=4.0,
                   help="k: generated pairs = k x real pairs (the paper's 4; another k names its own generated set)")
    p.add_argument("--scheduler", default="dpmsolver")
    p.add_argument("--num_inference_steps", type=int, default=20,
                   help="sampling steps of the generated pairs (another number names its own generated set)")
    p.add_argument("--soft_label_temperature", type=float, default=1.0,
                   help="softens the generated soft labels, softmax(logits / T) (joint samples only)")
    p.add_argument("--calibrate_temperature", action="store_true",
                   help="fit T on the regime's held-out training pairs by NLL (dakter-calibrate --save: stored in "
                        "the generator's model_index.json) and sample the generated pairs with it (scarce regimes "
                        "only; names its own generated sets and students, '-Tfit')")
    p.add_argument("--pairs", choices=PAIRS, default="joint",
                   help="joint: image and soft label sampled together; mask: k images per real training mask (a "
                        "random flip / rotation each); mixed: half of each. mask / mixed name their own generated "
                        "sets and students")
    p.add_argument("--perturb_masks", action="store_true",
                   help="with --pairs mask / mixed: a random layout perturbation of each mask before drawing "
                        "(dilation, erosion, shift, composition with another mask)")
    # Levers of the generated labels, from the generator's own segmentation pipeline.
    p.add_argument("--posterior_labels", type=int, default=0, metavar="N",
                   help="relabel the generated pairs with the average of N segmentation draws of the generator "
                        "(posterior soft labels; its own generated set and students). Use it with --labeller "
                        "per_modality (or --per_modality_timesteps): the one-timestep generator segments by "
                        "replacement conditioning, and its posterior labels cost Sentinel 150's soft students 15 mIoU "
                        "(BENCHMARKS.md)")
    p.add_argument("--drop_worst_pairs", type=float, default=0.0, metavar="F",
                   help="hard / soft students drop the fraction F of generated pairs whose soft label agrees least "
                        "with the generator's segmentation of their image (pair_quality)")
    p.add_argument("--pair_quality_weighting", action="store_true",
                   help="hard / soft students weight each generated pair's loss by its pair_quality")
    p.add_argument("--balance_generated_classes", action="store_true",
                   help="hard / soft students weight each generated pair's loss so that the generated pairs hold the "
                        "classes in the real pairs' proportions (class-balance lever; names its students '-cb')")
    p.add_argument("--labeller", choices=LABELLERS, default="self",
                   help="whose segmentation the label levers above use: 'self', the generator that sampled the pairs; "
                        "'per_modality', the --per_modality_timesteps generator of the same seed and data levers "
                        "(exact conditioning; trained if missing, reused if there; names its own sets and students, "
                        "'-pmtlabels')")
    p.add_argument("--labelling_steps", type=int, default=None, metavar="S",
                   help="sampling steps of the label levers' segmentation (default: --num_inference_steps; another "
                        "number names its own sets and students, '-lstepsS')")
    # Students.
    p.add_argument("--student", default="b0")
    p.add_argument("--student_steps", type=int, nargs="+", default=[DEFAULT_STUDENT_STEPS],
                   help="student budgets (optimisation steps); each budget trains its own students")
    p.add_argument("--no_augment", action="store_true",
                   help="students without random flips / 90-degree rotations (the protocol before issue #24)")
    p.add_argument("--student_batch_size", type=int, default=16)
    p.add_argument("--student_lr", default="6e-4")
    p.add_argument("--student_seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--generated_ratio", type=parse_generated_ratio, default=0.5,
                   help="share of generated pairs in every hard / soft student batch (default 0.5: half of each "
                        "batch; 'auto': |gen| / (|real| + |gen|), 0.8 at k = 4, the default before issue #24)")
    p.add_argument("--kd_temperature", type=float, default=1.0,
                   help="KD temperature tau of the soft students, tau^2 KL(q || softmax(z / tau)); hard, real and "
                        "synthetic-only students do not use it")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    # Ablations and diagnostics.
    p.add_argument("--ablate_label_scale", action="store_true", help="b = 1 vs estimated b (first regime)")
    p.add_argument("--ablate_architecture", action="store_true", help="concat vs dual (first regime)")
    p.add_argument("--train_on_synthetic", action="store_true", help="students trained only on generated pairs")
    p.add_argument("--relabelled_control", action="store_true",
                   help="control arm: hard / soft students on the generated images labelled by a real-data student "
                        "(needs 'real' in --modes)")
    p.add_argument("--num_threads", type=int, default=None,
                   help="torch threads of the run: of each stage run alone, split between --jobs concurrent ones")
    p.add_argument("--jobs", type=int, default=1,
                   help="independent stages (the generators and `real` students, then every other student with its "
                        "evaluation) run N at a time, generation as N processes over disjoint rows, each with "
                        "max(1, num_threads // N) threads (same results as a sequential run at that thread count)")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast for the generator's training (--mixed_precision bf16), its sampling (--dtype "
                        "bfloat16: joint pairs and images drawn for masks) and the students' training; faster on CPUs "
                        "with bf16 instructions (avx512_bf16, AMX) or on GPUs, 7-15x slower on CPUs without them, "
                        "where the run warns (BENCHMARKS.md; a full run scored as fp32 did on the same CPU). "
                        "Stages finished without it stop the run.")
    return p


def parse_args(argv=None, description=None):
    """Parse `argv` and refuse bad values and combinations of flags with an error naming them."""
    parser = build_parser(description)
    args = parser.parse_args(argv)
    if min(args.student_steps) < 1:
        parser.error(f"--student_steps must be positive integers, got {args.student_steps}")
    args.student_steps = sorted(set(args.student_steps))
    if args.calibrate_temperature and "full" in args.regimes:
        parser.error("--calibrate_temperature fits T on the training pairs outside a scarce regime's subset; the "
                     "'full' regime has none (use --regimes with numbers of pairs)")
    if args.calibrate_temperature and args.soft_label_temperature != flag_default("soft_label_temperature"):
        parser.error("--calibrate_temperature fits the temperature: drop --soft_label_temperature")
    k = args.generated_multiple
    if args.perturb_masks and args.pairs == "joint":
        parser.error("--perturb_masks perturbs the masks images are drawn for: it needs --pairs mask or mixed")
    if args.pairs == "mask" and not (k.is_integer() and k >= 1):
        parser.error(f"--pairs mask draws k images per real mask: --generated_multiple must be a positive integer, "
                     f"got {k:g}")
    if args.pairs == "mixed" and not (k.is_integer() and k >= 2 and k % 2 == 0):
        parser.error(f"--pairs mixed draws k/2 images per real mask beside k/2 x n joint samples: "
                     f"--generated_multiple must be an even integer, got {k:g}")
    if args.pairs == "mask" and args.soft_label_temperature != flag_default("soft_label_temperature"):
        parser.error("--soft_label_temperature applies to joint samples; --pairs mask labels every image with its "
                     "(one-hot) mask")
    if args.calibrate_temperature and args.pairs == "mask":
        parser.error("--calibrate_temperature fits the temperature of joint samples; --pairs mask labels every image "
                     "with its (one-hot) mask")
    if args.posterior_labels < 0 or not 0 <= args.drop_worst_pairs < 1:
        parser.error(f"--posterior_labels must be >= 0 and --drop_worst_pairs in [0, 1), got {args.posterior_labels} "
                     f"and {args.drop_worst_pairs}")
    if args.posterior_labels and uses_pair_quality(args):
        parser.error("--posterior_labels replaces the labels that --drop_worst_pairs / --pair_quality_weighting score: "
                     "run them as separate variants")
    if not uses_label_levers(args) and (args.labeller != "self" or args.labelling_steps is not None):
        parser.error("--labeller and --labelling_steps set how the label levers segment: they need --posterior_labels, "
                     "--drop_worst_pairs or --pair_quality_weighting")
    if args.labeller == "per_modality" and args.per_modality_timesteps:
        parser.error("--per_modality_timesteps already makes the generator its own per-modality labeller: drop "
                     "--labeller per_modality")
    if args.labelling_steps is not None and args.labelling_steps < 1:
        parser.error(f"--labelling_steps must be a positive integer, got {args.labelling_steps}")
    if not 1 <= args.crop_size <= args.resolution:
        parser.error(f"--crop_size must lie in 1 .. --resolution ({args.resolution}), got {args.crop_size}")
    if args.jobs < 1 or (args.num_threads is not None and args.num_threads < 1):
        parser.error(f"--jobs and --num_threads must be positive integers, got {args.jobs} and {args.num_threads}")
    if args.relabelled_control and ("real" not in args.modes or set(args.modes) == {"real"}):
        parser.error("--relabelled_control needs the real-data students and a generated set: --modes real and "
                     "hard and/or soft")
    return args


@functools.cache
def flag_default(name):
    """The default value of the benchmark's flag `name` (as the parser gives it; cached)."""
    return build_parser().get_default(name)


def uses_pair_quality(args):
    """Whether hard / soft students drop or weight generated pairs by their pair_quality."""
    return bool(args.drop_worst_pairs or args.pair_quality_weighting)


def uses_label_levers(args):
    """Whether the generated pairs are relabelled or scored by a generator's segmentation (the label levers)."""
    return bool(args.posterior_labels) or uses_pair_quality(args)
