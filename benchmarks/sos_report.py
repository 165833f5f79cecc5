#!/usr/bin/env python
"""The SOS benchmark's results over generator seeds: one table per regime from every results file of a sensor.

`sos_benchmark.py` writes one results file per variant in `<output_dir>/<sensor>/`: `results.json` for the default
generator seed (`--data_seed` unless `--generator_seed` says otherwise), `results-g1.json` for generator seed 1,
`results-pmt.json` / `results-g1-pmt.json` for a generator setting and its seed 1, ... This script groups the files
by generator setting (the variant without its `-gN` part) and gives, per regime and arm: the metric's mean ± std over
student seeds for each generator seed, the mean over generator seeds ± their spread (std of the per-generator-seed
means; `n = 1` for one seed) and the difference to the `real` students of the same budget and protocol (shared by
every variant of an output directory: taken from whichever file holds the most seeds of them). `-`: no such arm.
Under each table, the CPUs its stages ran on (model, instruction set, bf16 support; from the files' `stage_machines`),
so that a directory resumed on another machine says so.

    python benchmarks/sos_report.py --output_dir outputs/sos-augmented --sensor sentinel --regimes 150 \
        --output_md outputs/sos-augmented/sentinel/generator-seeds.md \
        --output_png outputs/sos-augmented/sentinel/generator-seeds.png
"""

import argparse
import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path

from dakter_hf.experiments import LABELS, METRICS
from dakter_hf.visualization import save_seed_comparison


#: The generator-seed part of a results file's variant ('-g1' in 'results-g1-pmt.json'; not '-gaug').
_SEED_SUFFIX = re.compile(r"-g(\d+)(?=-|$)")
#: The generator-seed part of an arm's label ('generator seed 1' in 'soft (generator seed 1, tau 2)').
_SEED_PART = re.compile(r"generator seed \d+")
#: Label parts of a student budget or protocol, which pick the `real` students an arm is compared with.
_PROTOCOL_PART = re.compile(r"\d+ student steps|no augmentation")
#: Summary of each split in a regime's entry.
SPLITS = {"test": "summary", "train_heldout": "heldout_summary"}


class ReportError(ValueError):
    """A results directory or file that cannot be reported (missing, empty or malformed)."""


def load_results(sensor_dir):
    """Every results file of a sensor's directory as {path: results}, the default variant first."""
    sensor_dir = Path(sensor_dir)
    if not sensor_dir.is_dir():
        raise ReportError(f"no directory {sensor_dir} (--output_dir / --sensor of a sos_benchmark.py run)")
    paths = sorted([*sensor_dir.glob("results.json"), *sensor_dir.glob("results-*.json")], key=_file_order)
    if not paths:
        raise ReportError(f"no results.json or results-*.json in {sensor_dir}")
    results = {}
    for path in paths:
        try:
            results[path] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ReportError(f"cannot read {path}: {err}") from None
        if not isinstance(results[path], dict) or not isinstance(results[path].get("regimes"), dict):
            raise ReportError(f"{path} is not a sos_benchmark.py results file (no 'regimes' mapping)")
    return results


def file_variant(path):
    """'results-g1-pmt.json' -> ('-pmt', 1): the generator setting and the seed the name gives (None: default)."""
    suffix = Path(path).stem[len("results"):]
    match = _SEED_SUFFIX.search(suffix)
    return _SEED_SUFFIX.sub("", suffix, count=1), None if match is None else int(match.group(1))


def _file_order(path):
    setting, seed = file_variant(path)
    return setting, -1 if seed is None else seed


def entry_generator_seed(entry, path):
    """The generator seed of a regime's entry: the file name's, else its arguments' (--generator_seed, else
    --data_seed, else 0)."""
    seed = file_variant(path)[1]
    if seed is not None:
        return seed
    arguments = entry.get("arguments", {})
    given = arguments.get("generator_seed", "None")
    return int(arguments.get("data_seed", 0) if given == "None" else given)


def split_label(label):
    """'synthetic only (soft, tau 2)' -> ('synthetic only', ['soft', 'tau 2']); 'real' -> ('real', [])."""
    if label.endswith(")") and " (" in label:
        base, _, parts = label[:-1].rpartition(" (")
        return base, parts.split(", ")
    return label, []


def join_label(base, parts):
    return f"{base} ({', '.join(parts)})" if parts else base


def without_generator_seed(label):
    """An arm's label without its generator seed: 'hard (generator seed 1, per-modality timesteps)' ->
    'hard (per-modality timesteps)'."""
    base, parts = split_label(label)
    return join_label(base, [p for p in parts if not _SEED_PART.fullmatch(p)])


def real_reference(label):
    """The `real` arm an arm is compared with: same student budget and protocol."""
    return join_label("real", [p for p in split_label(label)[1] if _PROTOCOL_PART.fullmatch(p)])


def is_real(label):
    return split_label(label)[0] == "real"


def collect(results, regime, metric="mean_iou", split="test"):
    """{arm: {generator seed: {'mean', 'std', 'n'}}} of one regime over all files (arms without the seed in their
    label); `real` arms under the key None, from the file with the most seeds of them. Regimes absent from a file,
    or arms without the metric, are skipped."""
    arms, sources = {}, {}
    for path, data in results.items():
        entry = data["regimes"].get(regime)
        if not isinstance(entry, dict) or SPLITS[split] not in entry:
            continue
        seed = entry_generator_seed(entry, path)
        for label, metrics in entry[SPLITS[split]].items():
            if metric not in metrics:
                continue
            cell = {k: metrics[metric][k] for k in ("mean", "std", "n")}
            arm, key = without_generator_seed(label), None if is_real(label) else seed
            cells = arms.setdefault(arm, {})
            if key is None and key in cells and cells[key]["n"] >= cell["n"]:
                continue
            if key is not None and key in cells:
                raise ReportError(f"{sources[arm, key]} and {path} both hold '{arm}' at generator seed {key} "
                                  f"(regime {regime}): one file per generator seed")
            cells[key], sources[arm, key] = cell, path
    return dict(sorted(arms.items(), key=lambda item: not is_real(item[0])))


def combine(arms):
    """Per arm: its cells, the mean over generator seeds, their spread (None for one seed) and the difference to
    its `real` arm (None without one); `real` arms are shared by every generator seed."""
    rows = {}
    for arm, cells in arms.items():
        means = [cell["mean"] for cell in cells.values()]
        rows[arm] = {"generator_seeds": cells, "mean": statistics.fmean(means),
                     "spread": statistics.stdev(means) if len(means) > 1 else None, "num_generator_seeds": len(means)}
    for arm, row in rows.items():
        real = rows.get(real_reference(arm))
        row["difference_to_real"] = None if real is None else row["mean"] - real["mean"]
    return rows


def _cell(cell):
    spread = f" ± {100 * cell['std']:.2f}" if cell["n"] > 1 else " (n = 1)"
    return f"{100 * cell['mean']:.2f}{spread}"


def format_table(rows, metric="mean_iou"):
    """A Markdown table of `combine` output, in percent (the difference in percentage points)."""
    seeds = sorted({seed for row in rows.values() for seed in row["generator_seeds"] if seed is not None})
    label = LABELS.get(metric, metric)
    lines = ["| arm | " + " | ".join(f"{label}, generator seed {s}" for s in seeds)
             + f" | mean over generator seeds | Δ {label} vs real |", "|---" * (len(seeds) + 3) + "|"]
    for arm, row in rows.items():
        cells = row["generator_seeds"]
        if None in cells:  # the real students: the same for every generator seed
            values, mean = [_cell(cells[None])] * len(seeds), f"{100 * row['mean']:.2f} (shared)"
        else:
            values = [_cell(cells[s]) if s in cells else "-" for s in seeds]
            spread = " (n = 1)" if row["spread"] is None else f" ± {100 * row['spread']:.2f}"
            mean = f"{100 * row['mean']:.2f}{spread}"
        delta = row["difference_to_real"]
        lines.append(f"| {arm} | " + " | ".join([*values, mean, "-" if delta is None else f"{100 * delta:+.2f}"])
                     + " |")
    return "\n".join(lines)


def describe_machine(machine):
    """One line for a stage's machine record (`stage_machines` of a results entry): 'AMD EPYC 7B13 (AVX2, no bf16
    instructions)'."""
    bf16 = {True: "bf16 instructions", False: "no bf16 instructions"}.get(machine.get("cpu_bf16_instructions"),
                                                                           "bf16 instructions unknown")
    return f"{machine.get('cpu_model', 'unknown CPU')} ({machine.get('cpu_capability', '?')}, {bf16})"


def stage_machines(results, regime):
    """{machine description: number of stages} over every results file's `stage_machines` of `regime`: which CPUs
    produced the arms of a table (a directory resumed on another machine mixes them). Stages run before the record
    existed are not counted."""
    stages = {}
    for data in results.values():
        for stage, machine in data["regimes"].get(regime, {}).get("stage_machines", {}).items():
            stages[stage] = describe_machine(machine)
    return dict(Counter(stages.values()))


def format_machines(counts):
    """The 'Stages ran on' sentence of a regime's table ('' without records)."""
    if not counts:
        return ""
    parts = "; ".join(f"{description}: {n} stage{'s' * (n != 1)}" for description, n in counts.items())
    mixed = " Several machines: compare speeds within one machine only." if len(counts) > 1 else ""
    return f"Stages ran on {parts}.{mixed}"


def generator_seed_report(output_dir, sensor, regimes=None, metric="mean_iou", split="test"):
    """{regime: {'rows': `combine` output, 'table': Markdown, 'machines': `stage_machines`}} for `regimes` (default:
    every regime of any file)."""
    results = load_results(Path(output_dir) / sensor)
    found = list(dict.fromkeys(regime for data in results.values() for regime in data["regimes"]))
    report = {}
    for regime in regimes or found:
        rows = combine(collect(results, regime, metric, split))
        if not rows:
            raise ReportError(f"no {split} {metric} of regime '{regime}' in {', '.join(map(str, results))} "
                              f"(regimes there: {', '.join(found)})")
        report[regime] = {"rows": rows, "table": format_table(rows, metric),
                          "machines": stage_machines(results, regime)}
    return report


def format_report(report, sensor, metric="mean_iou", split="test"):
    """The tables of `generator_seed_report` under one heading each."""
    label = LABELS.get(metric, metric)
    return "\n\n".join(
        f"### {sensor}, regime {regime}: {label} on the {split} split\n\nPer generator seed, mean ± std over student "
        f"seeds (the real students are shared by all); then the mean over generator seeds ± the std of their means; "
        f"Δ: that mean minus the real students' of the same budget, in percentage points.\n\n"
        f"{entry['table']}" + (f"\n\n{format_machines(entry['machines'])}" if entry.get("machines") else "")
        for regime, entry in report.items())


def figure_arms(rows):
    """`combine` output as `save_seed_comparison` input, in percent: arm -> generator seed (or 'real, shared') ->
    (mean, std over student seeds; 0 for one student seed)."""
    def group(seed):
        return "shared" if seed is None else f"generator seed {seed}"

    def by_seed(item):
        return -1 if item[0] is None else item[0]

    return {arm: {group(seed): (100 * cell["mean"], 100 * cell["std"] if cell["n"] > 1 else 0.0)
                  for seed, cell in sorted(row["generator_seeds"].items(), key=by_seed)}
            for arm, row in rows.items()}


def save_report_figures(report, path, sensor, metric="mean_iou", split="test"):
    """One dot plot per regime (`path` itself for one regime, else `<stem>-<regime><suffix>`): every arm's
    per-generator-seed means with their student-seed spread, beside the `real` students; returns the paths."""
    path, label = Path(path), LABELS.get(metric, metric)
    written = []
    for regime, entry in report.items():
        target = path if len(report) == 1 else path.with_name(f"{path.stem}-{regime}{path.suffix}")
        arms = figure_arms(entry["rows"])
        written.append(save_seed_comparison(
            arms, target, reference="real" if "real" in arms else None, xlabel=f"{label} (%), {split} split",
            title=f"{sensor}, regime {regime}: mean ± std over student seeds, per generator seed"))
    return written


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, required=True, help="the --output_dir of sos_benchmark.py")
    parser.add_argument("--sensor", required=True, choices=("palsar", "sentinel"))
    parser.add_argument("--regimes", nargs="+", default=None, help="default: every regime of any results file")
    parser.add_argument("--metric", default="mean_iou", choices=METRICS)
    parser.add_argument("--split", default="test", choices=tuple(SPLITS),
                        help="train_heldout: the validation scores of the scarce regimes")
    parser.add_argument("--output_md", type=Path, default=None, help="also write the tables to this Markdown file")
    parser.add_argument("--output_json", type=Path, default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--output_png", type=Path, default=None,
                        help="also draw the arms as a PNG dot plot (one file per regime: <stem>-<regime>.png when "
                             "there are several)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        report = generator_seed_report(args.output_dir, args.sensor, args.regimes, args.metric, args.split)
    except ReportError as err:
        sys.exit(f"error: {err}")
    text = format_report(report, args.sensor, args.metric, args.split)
    print(text)
    if args.output_md:
        args.output_md.write_text(text + "\n", encoding="utf-8")
    if args.output_json:
        numbers = {regime: {arm: {**row, "generator_seeds": {"shared" if seed is None else str(seed): cell
                                                             for seed, cell in row["generator_seeds"].items()}}
                            for arm, row in entry["rows"].items()} for regime, entry in report.items()}
        args.output_json.write_text(json.dumps({"sensor": args.sensor, "metric": args.metric, "split": args.split,
                                                "regimes": numbers}, indent=2) + "\n", encoding="utf-8")
    if args.output_png:
        save_report_figures(report, args.output_png, args.sensor, args.metric, args.split)
    return report


if __name__ == "__main__":
    main()
