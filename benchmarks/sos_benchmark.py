#!/usr/bin/env python
"""The SOS benchmark: does DAKTer help a SegFormer student on real SAR oil-spill data?

For one SOS sensor, per real-data regime (the full train split and/or a scarce seeded subset):

1. train the joint diffusion on that regime's real pairs only (`dual`, b estimated from the data);
2. generate k x as many pairs (soft labels stored as uint8);
3. distil students with identical budgets in the `real`, `hard` and `soft` modes, one per student seed, every one
   trained with random flips and 90-degree rotations (applied alike to images, masks and soft labels: the baseline
   practitioners train; `--no_augment` gives the protocol without them), at each budget of `--student_steps`; half of
   every `hard` / `soft` batch generated (`--generated_ratio 0.5`: it beat the uniform draw 'auto', 0.8 generated at
   k = 4, on Sentinel's 150 pairs at three generator seeds and tied it on PALSAR's);
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
sampling steps (default: `--num_inference_steps`). `--balance_generated_classes` weights each generated pair's loss
in the `hard` / `soft` students so that the generated pairs hold the classes in the real pairs' proportions
(class-balance lever; its own students, '-cb').

Optional ablations on the first regime: b = 1 instead of the estimated b (`--ablate_label_scale`), `concat` instead
of `dual` (`--ablate_architecture`), each with its own generator, `soft` students and diagnostics. Generator
diagnostics, offline (no Inception weights here, so no FID), per generator: train-on-synthetic / test-on-real (a
student trained only on generated pairs, `--train_on_synthetic`), the generated vs real oil-pixel fraction and the
intensity-histogram distance.

Every stage is resumable: rerun the same command after an interruption and finished stages are skipped. Variants
reuse what they do not change, and name what they do (and their `results-<variant>.json`): a non-default
`--soft_label_temperature`, `--num_inference_steps` (sampling steps) or `--generated_multiple` (k) its own generated
set and students, `--generated_ratio` or `--kd_temperature` its own students (`--kd_temperature` only `soft` ones),
`--pairs` and `--perturb_masks` its own generated set and students, `--generator_seed`, whole scenes ('-whole'),
`--generator_augment`, `--soft_label_targets` or `--per_modality_timesteps` also its own generators,
`--posterior_labels` its own generated set (relabelled) and students, `--drop_worst_pairs` /
`--pair_quality_weighting` their own `hard` / `soft` students (on a scored copy of the generated set), and with any
of these `--labeller per_modality` ('-pmtlabels') and another
`--labelling_steps` ('-lsteps10') their own relabelled / scored set and students; the `real` students are shared by
all. Every budget of `--student_steps` other than 600 and `--no_augment` name their own students, and the results
file holds them beside the others (augmented arms first). Any other setting changed against a finished stage in
the same --output_dir (say --generator_steps or --generator_channels) stops the run with an error naming the changed
arguments: use another --output_dir for it.

Beside this file: `sos_args.py` (the flags and their checks), `sos_variants.py` (how each variant names its stages,
sets, students and table labels), `sos_report.py` (several generator seeds' results side by side).

    python benchmarks/sos_benchmark.py --data_dir ../shared/data/sos --sensor palsar --regimes 150 \
        --output_dir outputs/sos-benchmark

`--jobs N` runs independent stages N at a time (the generators beside the `real` students, then the other students
with their evaluations) and generation as N processes, each with max(1, num_threads // N) threads; at the same
threads per stage the results equal a sequential run's bit for bit. `--bf16`: bf16 autocast in every training and
generation stage (off by default: it pays only on CPUs with bf16 instructions or on GPUs).
"""

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import sos_args
import torch
from datasets import load_from_disk
from filelock import FileLock
from sos_args import flag_default, uses_pair_quality
from sos_variants import (
    generation_variant,
    generator_seed,
    generator_variant,
    labelling_steps,
    labelling_variant,
    pairs_parts,
    protocol_parts,
    sampling_variant,
    student_name,
    student_variant,
    trained_generator_args,
    variant_parts,
    with_parts,
)

from dakter_hf.data import HELDOUT_SPLIT, load_sos
from dakter_hf.experiments import (
    COMMANDS,
    LABELS,
    METRICS,
    StageError,
    StageRunner,
    calibrate_temperature,
    concatenate_pairs,
    distill_student,
    format_summary,
    generate_mask_pairs,
    generate_pairs,
    label_pairs_with_generator,
    merge_summaries,
    relabel_pairs,
    seed_count_note,
    summarize,
    train_generator,
    write_json,
)
from dakter_hf.precision import warn_if_emulated_bf16

from sos_report import ReportError, format_report, generator_seed_report


def build_parser():
    """The benchmark's parser (its flags and their checks: `sos_args.py`), described by this module's docstring."""
    return sos_args.build_parser(__doc__)


def parse_args(argv=None):
    return sos_args.parse_args(argv, __doc__)


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
                   validation_inference_steps=flag_default("num_inference_steps"), seed=generator_seed(args),
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
            seed=10_000 + args.data_seed, dtype="bfloat16" if args.bf16 else None)
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
        if mode != "real":
            extra["generated_ratio"] = args.generated_ratio
        if mode == "soft" and args.kd_temperature != 1.0:
            extra["kd_temperature"] = args.kd_temperature
        if mode != "real" and own_labels:
            extra.update(drop_worst_pairs=args.drop_worst_pairs or None,
                         pair_quality_weighting=args.pair_quality_weighting,
                         balance_generated_classes=args.balance_generated_classes)

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
        report["seed"] = seed  # the summary names its seeds: runs over other seeds merge into one arm
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
                for arm_args in trained_generator_args(args) for name, _, _, overrides in arms]
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
    steps = int(entry["arguments"].get("student_steps", sos_args.DEFAULT_STUDENT_STEPS))
    parts = ([] if steps == sos_args.DEFAULT_STUDENT_STEPS else [f"{steps} student steps"]) + ["no augmentation"]
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
    an arm's students of other seeds are added to its earlier ones (summaries that name their seeds; a seed run
    again takes the new score); the tables are rebuilt from the merged summaries, augmented arms first; `arguments`
    are those of the last run.
    `stage_machines` names the CPU each stage ran on (a results file can hold arms measured on other machines)."""
    merged = {**previous, **entry}
    for key in ("diagnostics", "stage_seconds", "stage_machines"):
        if key in previous or key in entry:
            merged[key] = {**previous.get(key, {}), **entry.get(key, {})}
    for key in ("summary", "heldout_summary"):  # per arm and seed: `--student_seeds 3 4` adds to seeds 0-2
        if key in previous or key in entry:
            merged[key] = merge_summaries(previous.get(key, {}), entry.get(key, {}))
    for key in ("summary", "heldout_summary"):
        if key in merged:
            merged[key] = augmented_first(merged[key])
    merged["table"] = format_summary(merged["summary"], METRICS, LABELS)
    if "heldout_summary" in merged:
        merged["heldout_table"] = format_summary(merged["heldout_summary"], METRICS, LABELS)
    return merged


def main(argv=None):
    args = parse_args(argv)
    if args.bf16:  # every stage would warn in its log; say it here, before the first stage
        warn_if_emulated_bf16("cuda" if torch.cuda.is_available() else "cpu", "bf16", "--bf16")
    out = args.output_dir / args.sensor
    out.mkdir(parents=True, exist_ok=True)
    seeds = args.generator_seed or [None]
    train_seed_generators_side_by_side(args, out, seeds)
    for seed in seeds:  # the real students are trained once, then skipped
        run_variant(argparse.Namespace(**{**vars(args), "generator_seed": seed}), out)
    if len(seeds) > 1:  # the seeds side by side, with every other results file of the sensor (sos_report.py)
        try:
            report = generator_seed_report(args.output_dir, args.sensor, args.regimes)
        except ReportError as err:
            print(f"\nNo table over generator seeds: {err}")
        else:
            print(f"\nOver generator seeds ({out}/results*.json):\n\n{format_report(report, args.sensor)}")


def train_seed_generators_side_by_side(args, out, seeds):
    """With `--jobs` > 1 and several generator seeds, first train every seed's generator (and its per-modality
    labeller) of each regime, `--jobs` at a time. Each seed's run then finds them complete. The stages, their
    arguments and their threads are those of a run seed after seed, so the weights are the same. Without this step
    each seed's generator trained at `max(1, num_threads // jobs)` threads with nothing beside it once the `real`
    students existed."""
    if args.jobs < 2 or len(seeds) < 2 or not set(args.modes) - {"real"}:
        return
    for regime in args.regimes:
        root = out / f"regime-{regime}"
        runner = StageRunner(root, num_threads=args.num_threads, jobs=args.jobs)
        trainers = {}  # one task per generator directory (a seed's generator may be its own labeller)
        for seed in seeds:
            seed_args = argparse.Namespace(**{**vars(args), "generator_seed": seed})
            for arm_args in trained_generator_args(seed_args):
                trainers.setdefault(generator_variant(arm_args), functools.partial(
                    train_generator_arm, runner, arm_args, root, regime, "dual-auto"))
        runner.run_concurrently(list(trainers.values()))


def run_variant(args, out):
    """Every regime of one variant (one generator seed); updates the variant's results file."""
    start = time.perf_counter()
    entries = {}
    for index, regime in enumerate(args.regimes):
        root = out / f"regime-{regime}"
        runner = StageRunner(root, num_threads=args.num_threads, jobs=args.jobs)  # logs: <root>/logs/<stage>.log
        entry = run_regime(runner, args, root, regime, first=index == 0)
        entry["stage_seconds"] = {k: v for k, v in runner.durations.items() if v}
        entry["stage_machines"] = dict(runner.machines)  # the CPU each stage ran on: results may mix machines
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
