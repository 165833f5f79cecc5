#!/usr/bin/env python
"""The SOS benchmark: does DAKTer help a SegFormer student on real SAR oil-spill data?

For one SOS sensor, per real-data regime (the full train split and/or a scarce seeded subset):

1. train the joint diffusion on that regime's real pairs only (`dual`, b estimated from the data);
2. generate k x as many pairs (soft labels stored as uint8);
3. distil students with identical budgets in the `real`, `hard` and `soft` modes, one per student seed, every one
   trained with random flips and 90-degree rotations (applied alike to images, masks and soft labels: the baseline
   practitioners train; `--no_augment` gives the protocol without them), at each budget of `--student_steps`;
4. score everything on the real test split (final step of a fixed budget: no model selection on the test split)
   and, in a scarce regime, on the training pairs outside the subset (`train_heldout`): the validation score on
   which settings such as `--generated_ratio` or `--soft_label_temperature` are compared.

Levers of the generator's own data (`--generator_augment`: dihedral augmentation of the real pairs it trains on;
`--soft_label_targets`: the masks' area-averaged class fractions as its label targets) and `--per_modality_timesteps`
(separate image and label timesteps, which make mask -> image conditioning exact) name their own generators.
`--calibrate_temperature` (scarce regimes only) fits each generator's soft-label temperature by NLL on the regime's
held-out training pairs (`train_heldout`, never the test split) with `dakter-calibrate --save`, and samples the
generated pairs with it: its own generated sets and students (suffix `-Tfit`), the fitted T in the diagnostics.

Which pairs the students get (`--pairs`): `joint` (default) samples image and soft label together; `mask` draws k
images for each of the regime's real training masks, each mask under a random flip / 90-degree rotation (exact
conditioning for a `--per_modality_timesteps` generator, replacement otherwise); `mixed` takes half of each (the first
k/2 x n joint samples, then k/2 images per real mask), concatenated into one generated set. `--perturb_masks` (with
`mask` / `mixed`) perturbs each mask's layout at random before drawing (dilation, erosion, shift or composition with
another mask: layout variety). Mask-conditioned rows carry their (one-hot) mask as soft label: for them `soft` and
`hard` students learn the same.
The control arm `--relabelled_control` distils `hard` / `soft` students from the same generated images labelled by
a real-data student (the `real` student of the first seed at the largest budget), which measures what the
generator's own labels are worth. Levers of the generated labels (issue #24), each computed with the generator's
own segmentation pipeline (p(label | image), same sampler and steps as the generated pairs): `--posterior_labels N`
replaces every generated soft label by the average of N segmentation draws of its image; `--drop_worst_pairs F` /
`--pair_quality_weighting` score every generated pair (`pair_quality`: agreement of its soft label with the
segmentation's) and drop the fraction F of lowest score / weight each pair's loss by its score in the `hard` /
`soft` students. `--labeller per_modality` makes these levers segment with the `--per_modality_timesteps` generator
of the same seed and data levers instead (exact conditioning; trained by its generator stage if it is not there yet,
reused if it is), still on the pairs the run's own generator sampled; `--labelling_steps S` sets the segmentation's
sampling steps (default: `--num_inference_steps`).

Optional ablations on the first regime: b = 1 instead of the estimated b (`--ablate_label_scale`), `concat` instead
of `dual` (`--ablate_architecture`), each with its own generator, `soft` students and diagnostics. Generator
diagnostics, offline (no Inception weights here, so no FID), per generator: train-on-synthetic / test-on-real (a
student trained only on generated pairs, `--train_on_synthetic`), the generated vs real oil-pixel fraction and the
intensity-histogram distance.

Every stage is resumable: rerun the same command after an interruption and finished stages are skipped. Variants
reuse what they do not change, and name what they do (and their `results-<variant>.json`): a non-default
`--soft_label_temperature`, `--num_inference_steps` (sampling steps) or `--generated_multiple` (k) its own generated
set and students, `--generated_ratio` or `--kd_temperature` its own students (`--kd_temperature` only `soft` ones),
`--pairs` and `--perturb_masks` its own generated set and students, `--generator_seed`, `--generator_augment`,
`--soft_label_targets` or `--per_modality_timesteps` also its own generators, `--posterior_labels` its own generated
set (relabelled) and students, `--drop_worst_pairs` / `--pair_quality_weighting` their own `hard` / `soft` students
(on a scored copy of the generated set), and with any of these `--labeller per_modality` ('-pmtlabels') and another
`--labelling_steps` ('-lsteps10') their own relabelled / scored set and students; the `real` students are shared by
all. Every budget of `--student_steps` other than 600 and `--no_augment` name their own students, and the results
file holds them beside the others (augmented arms first). Any other setting changed against a finished stage in
the same --output_dir (say --generator_steps or --generator_channels) stops the run with an error naming the changed
arguments: use another --output_dir for it.

    python benchmarks/sos_benchmark.py --data_dir ../shared/data/sos --sensor palsar --regimes 150 \
        --output_dir outputs/sos-benchmark

`--jobs N` runs independent stages N at a time (the generators beside the `real` students, then the other students
with their evaluations) and generation as N processes, each with max(1, num_threads // N) threads; at the same
threads per stage the results equal a sequential run's bit for bit. `--bf16`: bf16 autocast in every training and
generation stage (off by default: its quality over a full run is not shown yet).
"""

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
from datasets import load_from_disk
from filelock import FileLock

from dakter_hf.data import HELDOUT_SPLIT, load_sos
from dakter_hf.distill.sampler import parse_generated_ratio
from dakter_hf.experiments import (
    COMMANDS,
    LABELS,
    METRICS,
    MODES,
    StageError,
    StageRunner,
    calibrate_temperature,
    concatenate_pairs,
    distill_student,
    format_summary,
    generate_mask_pairs,
    generate_pairs,
    label_pairs_with_generator,
    relabel_pairs,
    seed_count_note,
    summarize,
    train_generator,
    write_json,
)

from sos_report import ReportError, format_report, generator_seed_report


#: The student budget that names no students of its own (the only budget before `--student_steps` took several).
DEFAULT_STUDENT_STEPS = 600
#: Which generated pairs the students get (`--pairs`).
PAIRS = ("joint", "mask", "mixed")
#: Whose segmentation the levers of the generated labels use (`--labeller`).
LABELLERS = ("self", "per_modality")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
                   help="patch-wise generator training on random crops (sampling stays at --resolution)")
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
                        "results file; several seeds run one after the other, then a table over the generator "
                        "seeds is printed (benchmarks/sos_report.py)")
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
    p.add_argument("--generated_ratio", type=parse_generated_ratio, default="auto",
                   help="share of generated pairs in every hard / soft student batch "
                        "('auto': |gen| / (|real| + |gen|))")
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
                   help="bf16 autocast for the generator's training (--mixed_precision bf16), joint sampling (--dtype "
                        "bfloat16; images drawn for masks stay float32) and the students' training; faster on CPUs "
                        "with bf16 instructions (BENCHMARKS.md), its quality over a full run is not shown yet. "
                        "Stages finished without it stop the run.")
    return p


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.student_steps) < 1:
        parser.error(f"--student_steps must be positive integers, got {args.student_steps}")
    args.student_steps = sorted(set(args.student_steps))
    if args.calibrate_temperature and "full" in args.regimes:
        parser.error("--calibrate_temperature fits T on the training pairs outside a scarce regime's subset; the "
                     "'full' regime has none (use --regimes with numbers of pairs)")
    if args.calibrate_temperature and args.soft_label_temperature != _default("soft_label_temperature"):
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
    if args.pairs == "mask" and args.soft_label_temperature != _default("soft_label_temperature"):
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
    if args.jobs < 1 or (args.num_threads is not None and args.num_threads < 1):
        parser.error(f"--jobs and --num_threads must be positive integers, got {args.jobs} and {args.num_threads}")
    if args.relabelled_control and ("real" not in args.modes or set(args.modes) == {"real"}):
        parser.error("--relabelled_control needs the real-data students and a generated set: --modes real and "
                     "hard and/or soft")
    return args


@functools.cache
def _default(name):
    return build_parser().get_default(name)


def _variant_part(args, name, tag):
    """'-<tag><value>' if the setting `name` differs from its default, '' otherwise."""
    value = getattr(args, name)
    return "" if value == _default(name) else f"-{tag}{value:g}"


def regime_args(args, regime):
    """The data flags of every stage of a regime: the SOS sensor and, for a scarce regime, its seeded subset."""
    data = ["--dataset", "sos", "--data_dir", args.data_dir, "--sensor", args.sensor, "--data_seed", args.data_seed]
    if regime != "full":
        data += ["--num_train_samples", int(regime)]
    return data


def num_real_pairs(args, regime):
    """How many real training pairs a regime has (the subset size, or the train split's chips for 'full')."""
    if regime != "full":
        return int(regime)
    return len(list((Path(args.data_dir) / "train" / args.sensor).glob("*_sat.jpg")))


def generator_seed(args):
    """The generators' training seed: --generator_seed, else --data_seed."""
    return args.data_seed if args.generator_seed is None else args.generator_seed


def generator_variant(args):
    """Name suffix of a generator trained with a non-default seed or a lever of its own data ('' for the default)."""
    seed = "" if generator_seed(args) == args.data_seed else f"-g{generator_seed(args)}"
    return (seed + ("-gaug" if args.generator_augment else "") + ("-softtargets" if args.soft_label_targets else "")
            + ("-pmt" if args.per_modality_timesteps else ""))


def sampling_variant(args):
    """Name suffix of a sampled set from a non-default generator, sampled with a non-default soft-label temperature
    or number of sampling steps, of another size than the default k, or of other pairs than joint samples."""
    pairs = "" if args.pairs == "joint" else f"-{args.pairs}pairs" + ("-perturbed" if args.perturb_masks else "")
    return (generator_variant(args) + _variant_part(args, "soft_label_temperature", "T")
            + ("-Tfit" if args.calibrate_temperature else "")
            + _variant_part(args, "num_inference_steps", "S") + _variant_part(args, "generated_multiple", "k") + pairs)


def pairs_parts(args):
    """The settings of the generated sets a `--pairs mixed` set is made of: (joint, mask-conditioned with k/2)."""
    joint = argparse.Namespace(**{**vars(args), "pairs": "joint", "perturb_masks": False})
    drawn = argparse.Namespace(**{**vars(args), "pairs": "mask", "generated_multiple": args.generated_multiple / 2,
                                  "soft_label_temperature": _default("soft_label_temperature"),
                                  "calibrate_temperature": False})
    return joint, drawn


def generation_variant(args):
    """Name suffix of the generated set the students see: the sampled set's, and its posterior relabelling (with
    its labeller's part)."""
    if not args.posterior_labels:
        return sampling_variant(args)
    return sampling_variant(args) + _variant_part(args, "posterior_labels", "post") + labelling_variant(args)


def uses_pair_quality(args):
    """Whether hard / soft students drop or weight generated pairs by their pair_quality."""
    return bool(args.drop_worst_pairs or args.pair_quality_weighting)


def uses_label_levers(args):
    """Whether the generated pairs are relabelled or scored by a generator's segmentation (the label levers)."""
    return bool(args.posterior_labels) or uses_pair_quality(args)


def labelling_steps(args):
    """Sampling steps of the label levers' segmentation: --labelling_steps, else --num_inference_steps."""
    return args.num_inference_steps if args.labelling_steps is None else args.labelling_steps


def labelling_variant(args):
    """Name suffix of how the label levers segment: '-pmtlabels' for the per-modality labeller, '-lstepsS' for
    other sampling steps than the generated pairs' ('' for the generator itself at the same steps)."""
    steps = labelling_steps(args)
    return (("-pmtlabels" if args.labeller == "per_modality" else "")
            + ("" if steps == args.num_inference_steps else f"-lsteps{steps}"))


def labeller_args(args):
    """The arguments whose generators are the label levers' labellers: `args` with --per_modality_timesteps for
    `--labeller per_modality` (the same generators, and directories, that flag trains), None for `self`."""
    if args.labeller == "self":
        return None
    return argparse.Namespace(**{**vars(args), "per_modality_timesteps": True})


def student_variant(args, mode="soft", own_labels=True):
    """Name suffix of `mode` students trained with non-default settings ('' for the defaults); `soft` (the default)
    is also the suffix of the variant's results file. `own_labels=False`: students of sets labelled by someone else
    (the control arm), to which the levers of the generator's labels do not apply."""
    suffix = (generation_variant(args) if own_labels else sampling_variant(args)) + _variant_part(
        args, "generated_ratio", "ratio")
    suffix += "" if mode != "soft" else _variant_part(args, "kd_temperature", "tau")
    if own_labels and mode != "real" and uses_pair_quality(args):
        suffix += (_variant_part(args, "drop_worst_pairs", "drop") + ("-qw" if args.pair_quality_weighting else "")
                   + labelling_variant(args))
    return suffix


_VARIANT_NAMES = {"g": "generator seed", "gaug": "generator augmentation", "softtargets": "soft-label targets",
                  "pmt": "per-modality timesteps", "T": "T", "Tfit": "fitted T", "S": "sampling steps", "k": "k",
                  "maskpairs": "mask-conditioned pairs", "mixedpairs": "joint + mask-conditioned pairs",
                  "perturbed": "perturbed masks", "ratio": "ratio", "tau": "tau",
                  "post": "posterior labels", "drop": "drop worst", "qw": "pair-quality weighting",
                  "pmtlabels": "labels by the per-modality generator", "lsteps": "labelling steps"}


def variant_parts(suffix):
    """'-g1-gaug-S50-tau2' -> ['generator seed 1', 'generator augmentation', 'sampling steps 50', 'tau 2']."""
    parts = []
    for part in filter(None, suffix.split("-")):
        key = part.rstrip("0123456789.")
        parts.append(f"{_VARIANT_NAMES[key]} {part[len(key):]}".strip())
    return parts


def with_parts(label, parts):
    """'soft' + ['tau 2'] -> 'soft (tau 2)'; 'soft (T 2)' + ['tau 2'] -> 'soft (T 2, tau 2)'."""
    if not parts:
        return label
    if label.endswith(")"):
        return f"{label[:-1]}, {', '.join(parts)})"
    return f"{label} ({', '.join(parts)})"


def protocol_parts(args, steps):
    """The table label's parts of a student budget and protocol: ['1200 student steps', 'no augmentation']."""
    return ([] if steps == DEFAULT_STUDENT_STEPS else [f"{steps} student steps"]) + (
        ["no augmentation"] if args.no_augment else [])


def student_name(args, arm, steps, seed):
    """The directory (and stage) name of one student. Augmented students end in '-aug': students trained before
    augmentation became the default keep their names, so an old output directory's are never taken for them."""
    budget = "" if steps == DEFAULT_STUDENT_STEPS else f"-steps{steps}"
    return f"{arm}{budget}{'' if args.no_augment else '-aug'}-seed{seed}"


def train_generator_arm(runner, args, root, regime, name, **overrides):
    """Train one generator on the regime's real pairs; returns its pipeline directory."""
    data = regime_args(args, regime)
    # The validation grid always takes the default number of sampling steps, so a sampling-steps variant reuses the
    # generator.
    options = dict(resolution=args.resolution, model_size=args.model_size, block_out_channels=args.generator_channels,
                   label_scale="auto",
                   architecture="dual", train_batch_size=args.generator_batch_size,
                   max_train_steps=args.generator_steps, learning_rate=args.generator_lr, lr_warmup_steps=100,
                   use_ema=True, ce_weight=args.ce_weight, crop_size=args.crop_size, augment=args.generator_augment,
                   soft_label_targets=args.soft_label_targets, per_modality_timesteps=args.per_modality_timesteps,
                   checkpointing_steps=250,
                   checkpoints_total_limit=1, validation_steps=args.generator_steps, num_validation_samples=8,
                   validation_inference_steps=_default("num_inference_steps"), seed=generator_seed(args),
                   mixed_precision="bf16" if args.bf16 else None)
    options.update(overrides)
    return train_generator(runner, root / f"generator-{name}{generator_variant(args)}", data, **options)


def generate_arm(runner, args, root, regime, name, generator):
    """Generate k x as many pairs as the regime has real ones with `generator` (`--pairs`: joint samples, images
    drawn for the real masks, or half of each); returns the generated set."""
    data, n_real = regime_args(args, regime), num_real_pairs(args, regime)
    if args.pairs == "mask":
        return generate_mask_pairs(
            runner, generator, root / f"generated-{name}{sampling_variant(args)}", data,
            images_per_mask=int(args.generated_multiple), augment_masks=True, perturb_masks=args.perturb_masks,
            conditioning="exact" if args.per_modality_timesteps else "replacement", scheduler=args.scheduler,
            num_inference_steps=args.num_inference_steps, batch_size=32, channels_last=True,
            seed=10_000 + args.data_seed)
    if args.pairs == "mixed":  # the first k/2 x n joint samples (those of the joint set), then k/2 images per mask
        joint, drawn = pairs_parts(args)
        parts = [generate_arm(runner, joint, root, regime, name, generator),
                 generate_arm(runner, drawn, root, regime, name, generator)]
        half = int(round(drawn.generated_multiple * n_real))
        return concatenate_pairs(runner, parts, [half, half], root / f"generated-{name}{sampling_variant(args)}")
    temperature = args.soft_label_temperature
    if args.calibrate_temperature:  # the segmentation pass samples as the generated pairs will
        temperature = calibrate_temperature(runner, generator, [*data, "--split", HELDOUT_SPLIT],
                                            calibration_path(root, generator), scheduler=args.scheduler,
                                            num_inference_steps=args.num_inference_steps, batch_size=16,
                                            seed=20_000 + args.data_seed)["temperature"]
    # channels-last kernels sample 1.3-1.5x faster on CPU (bench_generation_layout.py in BENCHMARKS.md)
    # (the joint stage's flags keep their order: a finished stage is reused only if its command line is the same)
    sampling = dict(scheduler=args.scheduler, num_inference_steps=args.num_inference_steps,
                    soft_label_temperature=temperature, batch_size=32, channels_last=True,
                    seed=10_000 + args.data_seed, dtype="bfloat16" if args.bf16 else None)
    return generate_pairs(runner, generator, root / f"generated-{name}{sampling_variant(args)}",
                          int(round(args.generated_multiple * n_real)), **sampling)


def label_with_generator(runner, args, labeller, generated):
    """The levers of the generated labels, through the segmentation pipeline of `labeller` (the generator that
    sampled `generated`, or with `--labeller per_modality` its per-modality twin, conditioned exactly; same sampler
    as the sampled pairs, `--labelling_steps` steps): the posterior-relabelled set (`--posterior_labels`), the scored
    copy the pair-quality students read (`--drop_worst_pairs` / `--pair_quality_weighting`), or the sampled set
    itself."""
    options = dict(scheduler=args.scheduler, num_inference_steps=labelling_steps(args), batch_size=32,
                   seed=20_000 + args.data_seed)
    if args.labeller == "per_modality":  # (the self labeller's flags stay as they were: its finished stages are reused)
        options["conditioning"] = "exact"
    suffix = labelling_variant(args)
    if args.posterior_labels:
        relabelled = generated.with_name(f"{generated.name}-post{args.posterior_labels}{suffix}")
        return label_pairs_with_generator(runner, labeller, generated, relabelled, num_samples=args.posterior_labels,
                                          **options)
    if uses_pair_quality(args):
        scored = generated.with_name(f"{generated.name}-scored{suffix}")
        return label_pairs_with_generator(runner, labeller, generated, scored, score_only=True, **options)
    return generated


def calibration_path(root, generator):
    """Where the soft-label temperature fitted for a generator is kept (the calibration stage's output)."""
    return root / f"calibration-{generator.name}.json"


def student_tasks(runner, args, root, regime, mode, generated, arm, steps, synthetic_only=False, own_labels=True):
    """One task per student seed (for `StageRunner.run_concurrently`): its student at a budget of `steps` (scored on
    the test split) plus, in a scarce regime, its `train_heldout` score; each returns the student's report.
    `synthetic_only`: `soft` students on generated pairs alone, a measure of the generator, so the student settings
    of a variant (--generated_ratio, --kd_temperature, the pair-quality levers) do not apply to them;
    `own_labels=False`: a set labelled by someone else (the control arm), without the pair-quality levers."""
    data = regime_args(args, regime)
    extra = {"augment": not args.no_augment, "mixed_precision": "bf16" if args.bf16 else None}
    if synthetic_only:
        extra["generated_ratio"] = 1.0
    else:
        if mode != "real" and args.generated_ratio != "auto":
            extra["generated_ratio"] = args.generated_ratio
        if mode == "soft" and args.kd_temperature != 1.0:
            extra["kd_temperature"] = args.kd_temperature
        if mode != "real" and own_labels:
            extra.update(drop_worst_pairs=args.drop_worst_pairs or None,
                         pair_quality_weighting=args.pair_quality_weighting)

    def task(seed):
        output_dir = root / "students" / student_name(args, arm, steps, seed)
        report = distill_student(
            runner, output_dir, data, mode, generated, student=args.student,
            resolution=args.resolution, train_batch_size=args.student_batch_size, learning_rate=args.student_lr,
            max_train_steps=steps, eval_steps=max(steps // 6, 1),
            checkpointing_steps=max(steps // 3, 1), checkpoints_total_limit=1, seed=seed, **extra)
        if regime != "full":
            heldout = output_dir / f"eval_{HELDOUT_SPLIT}.json"
            runner.run(f"validate-{output_dir.name}", COMMANDS["evaluate"],
                       [*data, "--model_name_or_path", output_dir / "final", "--split", HELDOUT_SPLIT,
                        "--output_json", heldout], heldout)
            report[HELDOUT_SPLIT] = json.loads(heldout.read_text())["metrics"]
        return report

    return [functools.partial(task, seed) for seed in args.student_seeds]


def run_student_arms(runner, arms, also=()):
    """Run the tasks `also` (first: the long ones, such as generators) and the students of every arm of `arms`
    ({table key: tasks of `student_tasks`}), `runner.jobs` at a time; returns {table key: reports} and the results of
    `also`."""
    also = list(also)
    tasks = [(key, task) for key, arm_tasks in arms.items() for task in arm_tasks]
    results = runner.run_concurrently(also + [task for _, task in tasks])
    reports = {key: [] for key in arms}
    for (key, _), report in zip(tasks, results[len(also):]):
        reports[key].append(report)
    return reports, results[:len(also)]


def intensity_distance(images_a, images_b):
    """Distance between the grey-level distributions of two image stacks (values 0..255), over 64 bins:
    Wasserstein-1 in grey levels and the L1 distance of the normalised histograms (0 = equal, 2 = disjoint)."""
    bins = np.linspace(0, 256, 65)
    h_a = np.histogram(images_a, bins=bins)[0] / np.size(images_a)
    h_b = np.histogram(images_b, bins=bins)[0] / np.size(images_b)
    w1 = float(np.abs(np.cumsum(h_a) - np.cumsum(h_b)).sum() * (bins[1] - bins[0]))
    return {"w1_grey_levels": w1, "histogram_l1": float(np.abs(h_a - h_b).sum())}


def real_reference(args, regime):
    """What every generator of a regime is compared with, loaded once per regime (at --resolution): the regime's
    real training pairs and, for scale, the real test split (its oil fraction and intensity distance to them)."""
    real = load_sos(args.data_dir, args.sensor, split="train", resolution=args.resolution,
                    num_samples=None if regime == "full" else int(regime), seed=args.data_seed)
    test = load_sos(args.data_dir, args.sensor, split="test", resolution=args.resolution)
    real_images, test_images = (np.stack([np.asarray(im, dtype=np.float64) for im in ds["image"]])
                                for ds in (real, test))
    test_shift = intensity_distance(real_images, test_images)
    return {"images": real_images, "oil_fraction": float(np.mean([np.asarray(m) == 1 for m in real["mask"]])),
            "test": {"test_oil_fraction": float(np.mean([np.asarray(m) == 1 for m in test["mask"]])),
                     "test_vs_train_intensity_w1_grey_levels": test_shift["w1_grey_levels"],
                     "test_vs_train_intensity_histogram_l1": test_shift["histogram_l1"]}}


def generator_diagnostics(reference, generated_dir):
    """Generated vs the regime's real training pairs (`real_reference`): oil-pixel fraction, intensity-histogram
    distance, and the share of generated pixels whose soft label is uncertain (top class probability below 0.9),
    with the real test split's figures beside them for scale."""
    fake = load_from_disk(str(generated_dir))
    fake_images = np.stack([np.asarray(im, dtype=np.float64) for im in fake["image"]])
    fake_oil = float(np.mean([np.asarray(m) == 1 for m in fake["label"]]))
    # Soft labels are stored as uint8 (q * 255) or floats, (num_classes, H, W) per pair.
    # Read in the stored type (the numpy format would widen uint8 to int64) and take the max before scaling.
    stored = fake.features["soft_label"].dtype
    soft = np.asarray(fake.with_format("numpy", dtype=stored)["soft_label"])
    top = soft.max(axis=1) / (255.0 if stored == "uint8" else 1.0)
    generated = intensity_distance(reference["images"], fake_images)
    return {"real_oil_fraction": reference["oil_fraction"], "generated_oil_fraction": fake_oil,
            "intensity_w1_grey_levels": generated["w1_grey_levels"],
            "intensity_histogram_l1": generated["histogram_l1"], **reference["test"],
            "real_mean_intensity": float(reference["images"].mean()),
            "generated_mean_intensity": float(fake_images.mean()),
            "uncertain_label_fraction": float(np.mean(top < 0.9))}


#: Generator ablations on the first regime: flag -> (generator name, student tag, table label, trainer overrides).
ABLATIONS = {
    "ablate_label_scale": ("dual-b1", "b1", "b = 1", {"label_scale": 1.0}),
    "ablate_architecture": ("concat-auto", "concat", "concat", {"architecture": "concat"}),
}


def run_regime(runner, args, root, regime, first):
    """Every generator arm, student and diagnostic of one regime, at every student budget; returns its entry of
    `results.json` (its tables are built by `merge_entry`)."""
    gen_suffix = generation_variant(args)
    # (generator name, student tag, label, overrides); the main arm's students are named after their mode alone.
    arms = [("dual-auto", None, None, {})] if set(args.modes) - {"real"} else []
    if first:
        arms += [ablation for flag, ablation in ABLATIONS.items() if getattr(args, flag)]
    diagnostics, reference, budgets, clock = {}, None, args.student_steps, time.perf_counter()
    phase_seconds = {}
    # Phase 1, side by side with --jobs: the real students (they depend on no generator) and the generators.
    groups = {}
    if "real" in args.modes:
        for steps in budgets:
            groups[with_parts("real", protocol_parts(args, steps))] = student_tasks(
                runner, args, root, regime, "real", None, "real", steps)
    # (with --labeller per_modality, each arm's per-modality labeller trains beside its generator)
    trainers = [functools.partial(train_generator_arm, runner, arm_args, root, regime, name, **overrides)
                for arm_args in filter(None, [args, labeller_args(args)]) for name, _, _, overrides in arms]
    reports, trained = run_student_arms(runner, groups, also=trainers)
    generators, labellers = trained[:len(arms)], trained[len(arms):] or trained[:len(arms)]
    phase_seconds["generators and real students"], clock = time.perf_counter() - clock, time.perf_counter()
    # Phase 2: generation, one set after the other (each split over --jobs processes), and the diagnostics.
    generated_sets, arm_sets = [], []  # the sampled sets; (what the hard / soft students read, its pairs) per arm
    for (name, _, _, _), generator, labeller in zip(arms, generators, labellers):
        generated_sets.append(generate_arm(runner, args, root, regime, name, generator))
        sampled = generated_sets[-1]
        training_set = label_with_generator(runner, args, labeller, sampled)  # what the hard / soft students read
        generated = training_set if args.posterior_labels else sampled  # its pairs (a scored copy adds columns only)
        arm_sets.append((training_set, generated))
        reference = reference or real_reference(args, regime)
        diagnostics[name + gen_suffix] = generator_diagnostics(reference, generated)
        if args.calibrate_temperature:
            fit = json.loads(calibration_path(root, generator).read_text())
            diagnostics[name + gen_suffix]["soft_label_calibration"] = {
                k: fit[k] for k in ("temperature", "nll_before", "nll_after", "ece_before", "ece_after", "argmax_ece",
                                    "num_images", "num_pixels", "at_bound", "split")}
    phase_seconds["generation and diagnostics"], clock = time.perf_counter() - clock, time.perf_counter()
    # Phase 3, side by side: every student of the generated sets.
    groups = {}
    for (name, tag, label, _), (training_set, generated) in zip(arms, arm_sets):
        for steps in budgets:
            for mode in [m for m in args.modes if m != "real"] if tag is None else ["soft"]:
                key = mode if tag is None else f"{mode}, {label}"
                arm, suffix = (mode if tag is None else f"{mode}-{tag}"), student_variant(args, mode)
                groups[with_parts(key, variant_parts(suffix) + protocol_parts(args, steps))] = student_tasks(
                    runner, args, root, regime, mode, training_set, arm + suffix, steps)
            if args.train_on_synthetic:
                # 'synthetic only (soft, b = 1, generator seed 1)': the ablation and the variant in one parenthesis.
                parts = ["soft", *([] if tag is None else [label]), *variant_parts(gen_suffix)]
                groups[with_parts("synthetic only", parts + protocol_parts(args, steps))] = student_tasks(
                    runner, args, root, regime, "soft", generated, f"tstr-{name}{gen_suffix}", steps,
                    synthetic_only=True)
    reports.update(run_student_arms(runner, groups)[0])
    phase_seconds["students of the generated sets"], clock = time.perf_counter() - clock, time.perf_counter()
    if args.relabelled_control:
        reports.update(run_relabelled_control(runner, args, root, regime, generated_sets[0]))
        phase_seconds["relabelled control"] = time.perf_counter() - clock
    summary = summarize(reports, METRICS)
    entry = {"num_real_pairs": num_real_pairs(args, regime), "summary": summary, "diagnostics": diagnostics,
             "phase_seconds_of_last_run": phase_seconds}
    protocol = "without augmentation" if args.no_augment else "students with random flips / 90-degree rotations"
    print(f"\n{args.sensor}, {regime} real pairs, {protocol} (test split, {seed_count_note(summary)} "
          f"{args.student_seeds}):\n{format_summary(summary, METRICS, LABELS)}")
    if regime != "full":
        entry["heldout_summary"] = summarize(reports, METRICS, which=HELDOUT_SPLIT)
        print(f"\nValidation ({HELDOUT_SPLIT}: the training pairs outside the subset):\n"
              f"{format_summary(entry['heldout_summary'], METRICS, LABELS)}")
    if diagnostics:
        print(json.dumps(diagnostics, indent=2))
    return entry


def run_relabelled_control(runner, args, root, regime, generated):
    """The control arm: the main generated set relabelled by the `real` student of the first seed at the largest
    budget (same protocol), then `hard` / `soft` students on it at every budget."""
    teacher = student_name(args, "real", max(args.student_steps), args.student_seeds[0])
    relabelled = relabel_pairs(runner, root / "students" / teacher / "final", generated,
                               root / f"{generated.name}-relabelled-by-{teacher}")
    groups = {}
    for steps in args.student_steps:
        for mode in [m for m in args.modes if m in ("hard", "soft")]:
            suffix = student_variant(args, mode, own_labels=False)
            parts = variant_parts(suffix) + protocol_parts(args, steps)
            key = with_parts(f"{mode}, labels by a real-data student", parts)
            groups[key] = student_tasks(runner, args, root, regime, mode, relabelled, f"{mode}-relabelled{suffix}",
                                        steps, own_labels=False)
    return run_student_arms(runner, groups)[0]


def upgrade_entry(entry):
    """A regime entry written before augmentation became the default (its `arguments` have no `no_augment`): every
    arm in it was trained without augmentation, and its labels now say so, so that the augmented arms of later runs
    are never mixed up with them."""
    if not entry or "no_augment" in entry.get("arguments", {"no_augment": None}):
        return entry
    steps = int(entry["arguments"].get("student_steps", DEFAULT_STUDENT_STEPS))
    parts = ([] if steps == DEFAULT_STUDENT_STEPS else [f"{steps} student steps"]) + ["no augmentation"]
    entry = dict(entry)
    for key in ("summary", "heldout_summary"):
        if key in entry:
            entry[key] = {with_parts(arm, parts): values for arm, values in entry[key].items()}
    return entry


def augmented_first(summary):
    """The arms of a summary with the augmented ones first (in their order), then those without augmentation."""
    return dict(sorted(summary.items(), key=lambda item: "no augmentation" in item[0]))


def merge_entry(previous, entry):
    """A regime's entry of `results.json` after a run: the arms, diagnostics and stage times of this run update
    those of earlier runs, which are kept (a run with fewer arms, e.g. `--modes real`, does not drop the others);
    the tables are rebuilt from the merged summaries, augmented arms first; `arguments` are those of the last run."""
    merged = {**previous, **entry}
    for key in ("summary", "heldout_summary", "diagnostics", "stage_seconds"):
        if key in previous or key in entry:
            merged[key] = {**previous.get(key, {}), **entry.get(key, {})}
    for key in ("summary", "heldout_summary"):
        if key in merged:
            merged[key] = augmented_first(merged[key])
    merged["table"] = format_summary(merged["summary"], METRICS, LABELS)
    if "heldout_summary" in merged:
        merged["heldout_table"] = format_summary(merged["heldout_summary"], METRICS, LABELS)
    return merged


def main(argv=None):
    args = parse_args(argv)
    out = args.output_dir / args.sensor
    out.mkdir(parents=True, exist_ok=True)
    seeds = args.generator_seed or [None]
    for seed in seeds:  # the real students are trained once, then skipped
        run_variant(argparse.Namespace(**{**vars(args), "generator_seed": seed}), out)
    if len(seeds) > 1:  # the seeds side by side, with every other results file of the sensor (sos_report.py)
        try:
            report = generator_seed_report(args.output_dir, args.sensor, args.regimes)
        except ReportError as err:
            print(f"\nNo table over generator seeds: {err}")
        else:
            print(f"\nOver generator seeds ({out}/results*.json):\n\n{format_report(report, args.sensor)}")


def run_variant(args, out):
    """Every regime of one variant (one generator seed); updates the variant's results file."""
    start = time.perf_counter()
    entries = {}
    for index, regime in enumerate(args.regimes):
        root = out / f"regime-{regime}"
        runner = StageRunner(root, num_threads=args.num_threads, jobs=args.jobs)  # logs: <root>/logs/<stage>.log
        entry = run_regime(runner, args, root, regime, first=index == 0)
        entry["stage_seconds"] = {k: v for k, v in runner.durations.items() if v}
        entry["arguments"] = {k: str(v) for k, v in vars(args).items()}
        entries[regime] = entry
    results_path = update_results(out / f"results{student_variant(args)}.json", entries,
                                  seconds=time.perf_counter() - start)
    print(f"\nResults: {results_path}")


def update_results(results_path, entries, seconds):
    """Merge this run's regime entries into a results file (one file per variant; a run updates the regimes and arms
    it ran and keeps the others). The file is read, merged and replaced under a lock at the end of the run, so that
    runs of one --output_dir side by side (e.g. `--modes hard` beside `--relabelled_control`) each keep the other's
    arms instead of writing back what they read hours earlier."""
    with FileLock(str(results_path) + ".lock"):
        results = json.loads(results_path.read_text()) if results_path.exists() else {}
        results.setdefault("regimes", {})
        for regime, entry in entries.items():
            results["regimes"][regime] = merge_entry(upgrade_entry(results["regimes"].get(regime, {})), entry)
        results["seconds_of_last_run"] = seconds
        write_json(results_path, results)
    return results_path

if __name__ == "__main__":
    try:
        main()
    except StageError as err:
        sys.exit(f"error: {err}")
