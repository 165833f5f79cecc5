#!/usr/bin/env python
"""The SOS benchmark: does DAKTer help a SegFormer student on real SAR oil-spill data?

For one SOS sensor, per real-data regime (the full train split and/or a scarce seeded subset):

1. train the joint diffusion on that regime's real pairs only (`dual`, b estimated from the data);
2. generate k x as many pairs (soft labels stored as uint8);
3. distil students with identical budgets in the `real`, `hard` and `soft` modes, one per student seed;
4. score everything on the real test split (final step of a fixed budget: no model selection on the test split)
   and, in a scarce regime, on the training pairs outside the subset (`train_heldout`): the validation score on
   which settings such as `--generated_ratio` or `--soft_label_temperature` are compared.

Optional ablations on the first regime: b = 1 instead of the estimated b (`--ablate_label_scale`), `concat` instead
of `dual` (`--ablate_architecture`), each with its own generator, `soft` students and diagnostics. Generator
diagnostics, offline (no Inception weights here, so no FID), per generator: train-on-synthetic / test-on-real (a
student trained only on generated pairs, `--train_on_synthetic`), the generated vs real oil-pixel fraction and the
intensity-histogram distance.

Every stage is resumable: rerun the same command after an interruption and finished stages are skipped. Variants
reuse what they do not change, and name what they do (and their `results-<variant>.json`): a non-default
`--soft_label_temperature`, `--num_inference_steps` (sampling steps) or `--generated_multiple` (k) its own generated
set and students, `--generated_ratio` or `--kd_temperature` its own students (`--kd_temperature` only `soft` ones),
`--generator_seed` also its own generators; the `real` students are shared by all. Any other setting changed against
a finished stage in the same --output_dir (say --generator_steps or --generator_channels) stops the run with an error
naming the changed arguments: use another --output_dir for it.

    python benchmarks/sos_benchmark.py --data_dir ../shared/data/sos --sensor palsar --regimes 150 \
        --output_dir outputs/sos-benchmark
"""

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
from datasets import load_from_disk

from dakter_hf.data import HELDOUT_SPLIT, load_sos
from dakter_hf.distill.sampler import parse_generated_ratio
from dakter_hf.experiments import (
    COMMANDS,
    LABELS,
    METRICS,
    MODES,
    StageError,
    StageRunner,
    distill_student,
    format_summary,
    generate_pairs,
    summarize,
    train_generator,
    write_json,
)


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
    p.add_argument("--generator_seed", type=int, default=None,
                   help="training seed of the generators (default: --data_seed); another value trains its own "
                        "generators, sampled with the same seeds: the generator's run-to-run spread")
    # k = 4 is the paper's amount (0 / 1x / 2x / 4x gave 73.38 / 73.81 / 74.65 / 74.86 mIoU on OSD).
    p.add_argument("--generated_multiple", type=float, default=4.0,
                   help="k: generated pairs = k x real pairs (the paper's 4; another k names its own generated set)")
    p.add_argument("--scheduler", default="dpmsolver")
    p.add_argument("--num_inference_steps", type=int, default=20,
                   help="sampling steps of the generated pairs (another number names its own generated set)")
    p.add_argument("--soft_label_temperature", type=float, default=1.0,
                   help="softens the generated soft labels, softmax(logits / T)")
    # Students.
    p.add_argument("--student", default="b0")
    p.add_argument("--student_steps", type=int, default=600)
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
    p.add_argument("--num_threads", type=int, default=None, help="torch threads per stage")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


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
    """Name suffix of a generator trained with a non-default seed ('' for the default)."""
    return "" if generator_seed(args) == args.data_seed else f"-g{generator_seed(args)}"


def generation_variant(args):
    """Name suffix of a generated set from a non-default generator, sampled with a non-default soft-label temperature
    or number of sampling steps, or of another size than the default k."""
    return (generator_variant(args) + _variant_part(args, "soft_label_temperature", "T")
            + _variant_part(args, "num_inference_steps", "S") + _variant_part(args, "generated_multiple", "k"))


def student_variant(args, mode="soft"):
    """Name suffix of `mode` students trained with non-default settings ('' for the defaults); `soft` (the default)
    is also the suffix of the variant's results file."""
    suffix = generation_variant(args) + _variant_part(args, "generated_ratio", "ratio")
    return suffix + ("" if mode != "soft" else _variant_part(args, "kd_temperature", "tau"))


_VARIANT_NAMES = {"g": "generator seed", "T": "T", "S": "sampling steps", "k": "k", "ratio": "ratio", "tau": "tau"}


def variant_parts(suffix):
    """'-g1-S50-tau2' -> ['generator seed 1', 'sampling steps 50', 'tau 2']."""
    parts = []
    for part in filter(None, suffix.split("-")):
        key = part.rstrip("0123456789.")
        parts.append(f"{_VARIANT_NAMES[key]} {part[len(key):]}")
    return parts


def variant_label(suffix):
    """'-g1-T2-S50-k8-ratio0.5-tau2' -> ' (generator seed 1, T 2, sampling steps 50, k 8, ratio 0.5, tau 2)'."""
    parts = variant_parts(suffix)
    return f" ({', '.join(parts)})" if parts else ""


def run_generator_arm(runner, args, root, regime, name, **overrides):
    """Train one generator on the regime's real pairs and sample k x as many pairs; returns the generated set."""
    data, n_real = regime_args(args, regime), num_real_pairs(args, regime)
    # The validation grid always takes the default number of sampling steps, so a sampling-steps variant reuses the
    # generator.
    options = dict(resolution=args.resolution, model_size=args.model_size, block_out_channels=args.generator_channels,
                   label_scale="auto",
                   architecture="dual", train_batch_size=args.generator_batch_size,
                   max_train_steps=args.generator_steps, learning_rate=args.generator_lr, lr_warmup_steps=100,
                   use_ema=True, ce_weight=args.ce_weight, crop_size=args.crop_size, checkpointing_steps=250,
                   checkpoints_total_limit=1, validation_steps=args.generator_steps, num_validation_samples=8,
                   validation_inference_steps=_default("num_inference_steps"), seed=generator_seed(args))
    options.update(overrides)
    generator = train_generator(runner, root / f"generator-{name}{generator_variant(args)}", data, **options)
    # channels-last kernels sample 1.3-1.5x faster on CPU (bench_generation_layout.py in BENCHMARKS.md)
    generated = generate_pairs(runner, generator, root / f"generated-{name}{generation_variant(args)}",
                               int(round(args.generated_multiple * n_real)),
                               scheduler=args.scheduler, num_inference_steps=args.num_inference_steps,
                               soft_label_temperature=args.soft_label_temperature, batch_size=32,
                               channels_last=True, seed=10_000 + args.data_seed)
    return generated


def run_students(runner, args, root, regime, mode, generated, arm, synthetic_only=False):
    """One student per seed (scored on the test split) plus, in a scarce regime, its `train_heldout` score.
    `synthetic_only`: `soft` students on generated pairs alone, a measure of the generator, so the student settings
    of a variant (--generated_ratio, --kd_temperature) do not apply to them."""
    data = regime_args(args, regime)
    extra = {}
    if synthetic_only:
        extra["generated_ratio"] = 1.0
    else:
        if mode != "real" and args.generated_ratio != "auto":
            extra["generated_ratio"] = args.generated_ratio
        if mode == "soft" and args.kd_temperature != 1.0:
            extra["kd_temperature"] = args.kd_temperature
    reports = []
    for seed in args.student_seeds:
        output_dir = root / "students" / f"{arm}-seed{seed}"
        report = distill_student(
            runner, output_dir, data, mode, generated, student=args.student,
            resolution=args.resolution, train_batch_size=args.student_batch_size, learning_rate=args.student_lr,
            max_train_steps=args.student_steps, eval_steps=max(args.student_steps // 6, 1),
            checkpointing_steps=max(args.student_steps // 3, 1), checkpoints_total_limit=1, seed=seed, **extra)
        if regime != "full":
            heldout = output_dir / f"eval_{HELDOUT_SPLIT}.json"
            runner.run(f"validate-{output_dir.name}", COMMANDS["evaluate"],
                       [*data, "--model_name_or_path", output_dir / "final", "--split", HELDOUT_SPLIT,
                        "--output_json", heldout], heldout)
            report[HELDOUT_SPLIT] = json.loads(heldout.read_text())["metrics"]
        reports.append(report)
    return reports


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
    """Every generator arm, student and diagnostic of one regime; returns its entry of `results.json` (its tables are
    built by `merge_entry`)."""
    gen_suffix = generation_variant(args)
    # (generator name, student tag, label, overrides); the main arm's students are named after their mode alone.
    arms = [("dual-auto", None, None, {})] if set(args.modes) - {"real"} else []
    if first:
        arms += [ablation for flag, ablation in ABLATIONS.items() if getattr(args, flag)]
    reports, diagnostics, reference = {}, {}, None
    if "real" in args.modes:  # the real students do not depend on the generator or the variant
        reports["real"] = run_students(runner, args, root, regime, "real", None, "real")
    for name, tag, label, overrides in arms:
        generated = run_generator_arm(runner, args, root, regime, name, **overrides)
        reference = reference or real_reference(args, regime)
        diagnostics[name + gen_suffix] = generator_diagnostics(reference, generated)
        for mode in [m for m in args.modes if m != "real"] if tag is None else ["soft"]:
            key = mode if tag is None else f"{mode}, {label}"
            arm, suffix = (mode if tag is None else f"{mode}-{tag}"), student_variant(args, mode)
            reports[key + variant_label(suffix)] = run_students(runner, args, root, regime, mode, generated,
                                                                arm + suffix)
        if args.train_on_synthetic:
            # 'synthetic only (soft, b = 1, generator seed 1)': the ablation and the variant in one parenthesis.
            parts = ["soft", *([] if tag is None else [label]), *variant_parts(gen_suffix)]
            reports[f"synthetic only ({', '.join(parts)})"] = run_students(
                runner, args, root, regime, "soft", generated, f"tstr-{name}{gen_suffix}", synthetic_only=True)
    summary = summarize(reports, METRICS)
    entry = {"num_real_pairs": num_real_pairs(args, regime), "summary": summary, "diagnostics": diagnostics}
    print(f"\n{args.sensor}, {regime} real pairs (test split, mean ± std over seeds {args.student_seeds}):\n"
          f"{format_summary(summary, METRICS, LABELS)}")
    if regime != "full":
        entry["heldout_summary"] = summarize(reports, METRICS, which=HELDOUT_SPLIT)
        print(f"\nValidation ({HELDOUT_SPLIT}: the training pairs outside the subset):\n"
              f"{format_summary(entry['heldout_summary'], METRICS, LABELS)}")
    if diagnostics:
        print(json.dumps(diagnostics, indent=2))
    return entry


def merge_entry(previous, entry):
    """A regime's entry of `results.json` after a run: the arms, diagnostics and stage times of this run update
    those of earlier runs, which are kept (a run with fewer arms, e.g. `--modes real`, does not drop the others);
    the tables are rebuilt from the merged summaries; `arguments` are those of the last run."""
    merged = {**previous, **entry}
    for key in ("summary", "heldout_summary", "diagnostics", "stage_seconds"):
        if key in previous or key in entry:
            merged[key] = {**previous.get(key, {}), **entry.get(key, {})}
    merged["table"] = format_summary(merged["summary"], METRICS, LABELS)
    if "heldout_summary" in merged:
        merged["heldout_table"] = format_summary(merged["heldout_summary"], METRICS, LABELS)
    return merged


def main(argv=None):
    args = parse_args(argv)
    out = args.output_dir / args.sensor
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # One results file per variant; a run updates the regimes it ran and keeps the others.
    results_path = out / f"results{student_variant(args)}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results.setdefault("regimes", {})
    for index, regime in enumerate(args.regimes):
        root = out / f"regime-{regime}"
        runner = StageRunner(root, num_threads=args.num_threads)  # logs in <root>/logs/<stage>.log
        entry = run_regime(runner, args, root, regime, first=index == 0)
        entry["stage_seconds"] = {k: v for k, v in runner.durations.items() if v}
        entry["arguments"] = {k: str(v) for k, v in vars(args).items()}
        results["regimes"][regime] = merge_entry(results["regimes"].get(regime, {}), entry)
    results["seconds_of_last_run"] = time.perf_counter() - start
    write_json(results_path, results)
    print(f"\nResults: {results_path}")


if __name__ == "__main__":
    try:
        main()
    except StageError as err:
        sys.exit(f"error: {err}")
