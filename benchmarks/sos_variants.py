"""The names of `benchmarks/sos_benchmark.py`'s stages, sets and students: each variant of a run names what it
changes (the suffixes of its directories and results file) and how its table labels read."""

import argparse

import sos_args
from sos_args import flag_default, uses_pair_quality


def _variant_part(args, name, tag):
    """'-<tag><value>' if the setting `name` differs from its default, '' otherwise (numbers as `:g` writes them,
    words such as 'auto' as they are)."""
    value = getattr(args, name)
    if value == flag_default(name):
        return ""
    return f"-{tag}{value}" if isinstance(value, str) else f"-{tag}{value:g}"


def generator_seed(args):
    """The generators' training seed: --generator_seed, else --data_seed."""
    return args.data_seed if args.generator_seed is None else args.generator_seed


def generator_variant(args):
    """Name suffix of a generator trained with a non-default seed, on whole scenes (`--crop_size` = `--resolution`)
    or with a lever of its own data ('' for the default)."""
    seed = "" if generator_seed(args) == args.data_seed else f"-g{generator_seed(args)}"
    whole = "-whole" if args.crop_size >= args.resolution else ""
    return (seed + whole + ("-gaug" if args.generator_augment else "")
            + ("-softtargets" if args.soft_label_targets else "") + ("-pmt" if args.per_modality_timesteps else ""))


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
                                  "soft_label_temperature": flag_default("soft_label_temperature"),
                                  "calibrate_temperature": False})
    return joint, drawn


def generation_variant(args):
    """Name suffix of the generated set the students see: the sampled set's, and its posterior relabelling (with
    its labeller's part)."""
    if not args.posterior_labels:
        return sampling_variant(args)
    return sampling_variant(args) + _variant_part(args, "posterior_labels", "post") + labelling_variant(args)


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


def trained_generator_args(args):
    """The arguments of every generator a variant trains: its own, then with `--labeller per_modality` its
    labeller's ([`labeller_args`])."""
    return [arm_args for arm_args in (args, labeller_args(args)) if arm_args is not None]


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
    if own_labels and mode != "real" and getattr(args, "balance_generated_classes", False):
        suffix += "-cb"
    return suffix


_VARIANT_NAMES = {"g": "generator seed", "gaug": "generator augmentation", "softtargets": "soft-label targets",
                  "pmt": "per-modality timesteps", "whole": "whole scenes", "T": "T", "Tfit": "fitted T",
                  "S": "sampling steps", "k": "k",
                  "maskpairs": "mask-conditioned pairs", "mixedpairs": "joint + mask-conditioned pairs",
                  "perturbed": "perturbed masks", "ratio": "ratio", "ratioauto": "ratio auto", "tau": "tau",
                  "post": "posterior labels", "drop": "drop worst", "qw": "pair-quality weighting",
                  "pmtlabels": "labels by the per-modality generator", "lsteps": "labelling steps",
                  "cb": "class-balanced"}


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
    return ([] if steps == sos_args.DEFAULT_STUDENT_STEPS else [f"{steps} student steps"]) + (
        ["no augmentation"] if args.no_augment else [])


def student_name(args, arm, steps, seed):
    """The directory (and stage) name of one student. Augmented students end in '-aug': students trained before
    augmentation became the default keep their names, so an old output directory's are never taken for them."""
    budget = "" if steps == sos_args.DEFAULT_STUDENT_STEPS else f"-steps{steps}"
    return f"{arm}{budget}{'' if args.no_augment else '-aug'}-seed{seed}"
