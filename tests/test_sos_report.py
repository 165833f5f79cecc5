"""`benchmarks/sos_report.py`: the SOS benchmark's results files of one sensor side by side over generator seeds, on
results files written as `sos_benchmark.py` writes them (its file names, arm labels, summaries and merged entries)."""

import json
import statistics

import pytest
from PIL import Image

from dakter_hf.experiments import METRICS, summarize, write_json

from repo_scripts import load_script


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmarks/sos_benchmark.py")


@pytest.fixture(scope="module")
def report_script():
    return load_script("benchmarks/sos_report.py")


def variant_args(benchmark, *flags):
    """The arguments of one variant of a run, as `sos_benchmark.main` hands them to `run_variant` (one seed)."""
    args = benchmark.parse_args(["--data_dir", "unused", "--sensor", "sentinel", *flags])
    args.generator_seed = args.generator_seed[0] if args.generator_seed else None
    return args


def write_results(benchmark, sensor_dir, args, values, regime="150", steps=600, machines=None):
    """Add a regime's students to the variant's results file: `values` gives each arm ('real', 'hard', 'soft',
    'synthetic only') the metric of each student seed; labels, summary and merged entry are the benchmark's."""
    protocol = benchmark.protocol_parts(args, steps)
    labels = {"real": benchmark.with_parts("real", protocol), "synthetic only": benchmark.with_parts(
        "synthetic only", ["soft", *benchmark.variant_parts(benchmark.generation_variant(args)), *protocol])}
    for mode in ("hard", "soft"):
        labels[mode] = benchmark.with_parts(mode, benchmark.variant_parts(benchmark.student_variant(args, mode))
                                            + protocol)
    reports = {labels[arm]: [{"final": dict.fromkeys(METRICS, v)} for v in seeds] for arm, seeds in values.items()}
    entry = {"summary": summarize(reports, METRICS), "arguments": {k: str(v) for k, v in vars(args).items()}}
    if machines is not None:  # {stage: machine record}, as `StageRunner.machines` gives them
        entry["stage_machines"] = machines
    path = sensor_dir / f"results{benchmark.student_variant(args)}.json"
    results = json.loads(path.read_text()) if path.exists() else {"regimes": {}}
    results["regimes"][regime] = benchmark.merge_entry(results["regimes"].get(regime, {}), entry)
    sensor_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, results)
    return path.name


def test_generator_seeds_side_by_side(benchmark, report_script, tmp_path):
    out = tmp_path / "sentinel"
    names = [
        write_results(benchmark, out, variant_args(benchmark), {
            "real": [0.70, 0.72], "hard": [0.70, 0.74], "soft": [0.72, 0.76], "synthetic only": [0.50]}),
        write_results(benchmark, out, variant_args(benchmark, "--generator_seed", "1"), {
            "real": [0.70], "hard": [0.74, 0.78], "soft": [0.70, 0.72], "synthetic only": [0.54]}),
        write_results(benchmark, out, variant_args(benchmark, "--per_modality_timesteps"), {"soft": [0.73, 0.75]}),
        write_results(benchmark, out, variant_args(benchmark, "--generator_seed", "2", "--per_modality_timesteps"),
                      {"soft": [0.77]}),
        write_results(benchmark, out, variant_args(benchmark, "--generator_seed", "1", "--generator_augment"),
                      {"soft": [0.80, 0.80]}),
    ]
    assert names == ["results.json", "results-g1.json", "results-pmt.json", "results-g2-pmt.json",
                     "results-g1-gaug.json"]
    rows = report_script.generator_seed_report(tmp_path, "sentinel")["150"]["rows"]
    # Real arms first, then by generator setting (file names in order), each in its file's order.
    assert list(rows) == ["real", "hard", "soft", "synthetic only (soft)", "soft (generator augmentation)",
                          "soft (per-modality timesteps)"]
    # The real students are shared: those of the file with the most seeds, under no generator seed.
    real = {"mean": pytest.approx(0.71), "std": pytest.approx(statistics.stdev([0.70, 0.72])), "n": 2}
    assert rows["real"]["generator_seeds"] == {None: real}
    hard = rows["hard"]
    assert sorted(hard["generator_seeds"]) == [0, 1]
    assert hard["mean"] == pytest.approx(0.74) and hard["spread"] == pytest.approx(statistics.stdev([0.72, 0.76]))
    assert hard["difference_to_real"] == pytest.approx(0.03) and hard["num_generator_seeds"] == 2
    pmt = rows["soft (per-modality timesteps)"]
    assert sorted(pmt["generator_seeds"]) == [0, 2] and pmt["mean"] == pytest.approx((0.74 + 0.77) / 2)
    gaug = rows["soft (generator augmentation)"]
    assert gaug["spread"] is None and gaug["difference_to_real"] == pytest.approx(0.09)

    table = report_script.generator_seed_report(tmp_path, "sentinel")["150"]["table"].splitlines()
    assert table[0] == ("| arm | mIoU, generator seed 0 | mIoU, generator seed 1 | mIoU, generator seed 2 "
                        "| mean over generator seeds | Δ mIoU vs real |")
    assert table[2] == "| real | 71.00 ± 1.41 | 71.00 ± 1.41 | 71.00 ± 1.41 | 71.00 (shared) | +0.00 |"
    assert table[3] == "| hard | 72.00 ± 2.83 | 76.00 ± 2.83 | - | 74.00 ± 2.83 | +3.00 |"
    assert table[5] == "| synthetic only (soft) | 50.00 (n = 1) | 54.00 (n = 1) | - | 52.00 ± 2.83 | -19.00 |"
    assert table[6] == "| soft (generator augmentation) | - | 80.00 ± 0.00 | - | 80.00 (n = 1) | +9.00 |"


def test_default_seed_regimes_and_budgets(benchmark, report_script, tmp_path):
    out = tmp_path / "palsar"
    # --data_seed 3: results.json holds generator seed 3, results-g0.json seed 0.
    write_results(benchmark, out, variant_args(benchmark, "--data_seed", "3"), {"real": [0.6], "soft": [0.62]})
    write_results(benchmark, out, variant_args(benchmark, "--data_seed", "3"), {"soft": [0.5]}, regime="full")
    write_results(benchmark, out, variant_args(benchmark, "--data_seed", "3", "--generator_seed", "0"),
                  {"soft": [0.64]})
    write_results(benchmark, out, variant_args(benchmark, "--data_seed", "3", "--generator_seed", "0",
                                               "--student_steps", "1200"), {"soft": [0.7]}, steps=1200)
    report = report_script.generator_seed_report(tmp_path, "palsar")
    assert list(report) == ["150", "full"]  # the regimes of any file, in their order
    rows = report["150"]["rows"]
    assert sorted(rows["soft"]["generator_seeds"]) == [0, 3] and rows["soft"]["mean"] == pytest.approx(0.63)
    # A budget is compared with the real students of that budget: none here.
    assert rows["soft (1200 student steps)"]["difference_to_real"] is None
    budget = "| soft (1200 student steps) | 70.00 (n = 1) | - | 70.00 (n = 1) | - |"
    assert report["150"]["table"].splitlines()[-1] == budget
    # The full regime is in results.json only.
    assert report["full"]["table"].splitlines()[2] == "| soft | 50.00 (n = 1) | 50.00 (n = 1) | - |"
    assert list(report_script.generator_seed_report(tmp_path, "palsar", regimes=["full"])) == ["full"]
    with pytest.raises(report_script.ReportError, match="regime '40'.*regimes there: 150, full"):
        report_script.generator_seed_report(tmp_path, "palsar", regimes=["40"])
    with pytest.raises(report_script.ReportError, match="no train_heldout mean_iou of regime 'full'"):
        report_script.generator_seed_report(tmp_path, "palsar", regimes=["full"], split="train_heldout")


def test_report_says_which_machines_ran_the_stages(benchmark, report_script, tmp_path, capsys):
    """A directory resumed on another CPU mixes arms of both; the report names each machine and its stage count."""
    avx2 = {"cpu_model": "EPYC", "cpu_capability": "AVX2", "cpu_bf16_instructions": False, "threads": 1}
    amx = {"cpu_model": "Xeon", "cpu_capability": "AVX512", "cpu_bf16_instructions": True, "threads": 1}
    out = tmp_path / "sentinel"
    write_results(benchmark, out, variant_args(benchmark), {"real": [0.7], "soft": [0.72]},
                  machines={"student-real-aug-seed0": avx2, "generator-generator-dual-auto": amx})
    write_results(benchmark, out, variant_args(benchmark, "--generator_seed", "1"), {"soft": [0.74]},
                  machines={"generator-generator-dual-auto-g1": amx, "student-soft-g1-aug-seed0": amx})
    report = report_script.generator_seed_report(tmp_path, "sentinel")["150"]
    assert report["machines"] == {"EPYC (AVX2, no bf16 instructions)": 1, "Xeon (AVX512, bf16 instructions)": 3}
    report_script.main(["--output_dir", str(tmp_path), "--sensor", "sentinel"])
    printed = capsys.readouterr().out
    assert ("Stages ran on EPYC (AVX2, no bf16 instructions): 1 stage; Xeon (AVX512, bf16 instructions): 3 stages. "
            "Several machines") in printed
    # Files written before the record existed: no sentence, no error.
    plain = tmp_path / "plain"
    write_results(benchmark, plain / "sentinel", variant_args(benchmark), {"real": [0.7]})
    assert report_script.generator_seed_report(plain, "sentinel")["150"]["machines"] == {}
    report_script.main(["--output_dir", str(plain), "--sensor", "sentinel"])
    assert "Stages ran on" not in capsys.readouterr().out


def test_main_writes_markdown_and_json(benchmark, report_script, tmp_path, capsys):
    write_results(benchmark, tmp_path / "sentinel", variant_args(benchmark), {"real": [0.7, 0.8], "soft": [0.9]})
    md, numbers = tmp_path / "report.md", tmp_path / "report.json"
    report_script.main(["--output_dir", str(tmp_path), "--sensor", "sentinel", "--output_md", str(md),
                        "--output_json", str(numbers)])
    printed = capsys.readouterr().out
    assert printed == md.read_text() and "### sentinel, regime 150: mIoU on the test split" in printed
    written = json.loads(numbers.read_text())
    assert written["regimes"]["150"]["real"]["generator_seeds"]["shared"]["n"] == 2
    soft = written["regimes"]["150"]["soft"]
    assert soft["generator_seeds"]["0"]["mean"] == pytest.approx(0.9) and soft["spread"] is None
    assert soft["difference_to_real"] == pytest.approx(0.15)


def test_main_draws_one_figure_per_regime(benchmark, report_script, tmp_path):
    out = tmp_path / "sentinel"
    write_results(benchmark, out, variant_args(benchmark), {"real": [0.7, 0.8], "soft": [0.9]})
    write_results(benchmark, out, variant_args(benchmark, "--generator_seed", "1"), {"soft": [0.74, 0.76]})
    write_results(benchmark, out, variant_args(benchmark), {"soft": [0.5]}, regime="full")
    report = report_script.main(["--output_dir", str(tmp_path), "--sensor", "sentinel",
                                 "--output_png", str(tmp_path / "arms.png")])
    for regime in ("150", "full"):
        with Image.open(tmp_path / f"arms-{regime}.png") as image:
            assert image.format == "PNG" and min(image.size) > 100
    arms = report_script.figure_arms(report["150"]["rows"])
    # Percent; the real students shared, one student seed drawn without a spread.
    assert arms["real"] == {"shared": (pytest.approx(75.0), pytest.approx(100 * statistics.stdev([0.7, 0.8])))}
    assert arms["soft"] == {"generator seed 0": (pytest.approx(90.0), 0.0),
                            "generator seed 1": (pytest.approx(75.0),
                                                 pytest.approx(100 * statistics.stdev([0.74, 0.76])))}
    report_script.main(["--output_dir", str(tmp_path), "--sensor", "sentinel", "--regimes", "150",
                        "--output_png", str(tmp_path / "one.png")])
    assert (tmp_path / "one.png").is_file()  # one regime: the path itself


def test_errors_name_the_directory_or_file(benchmark, report_script, tmp_path):
    def error(*extra):
        with pytest.raises(SystemExit) as exc:
            report_script.main(["--output_dir", str(tmp_path), "--sensor", "sentinel", *extra])
        return str(exc.value)

    assert error() == f"error: no directory {tmp_path / 'sentinel'} (--output_dir / --sensor of a sos_benchmark.py run)"
    (tmp_path / "sentinel").mkdir()
    assert error() == f"error: no results.json or results-*.json in {tmp_path / 'sentinel'}"
    broken = tmp_path / "sentinel" / "results-pmt.json"
    broken.write_text('{"regimes": {')
    assert error().startswith(f"error: cannot read {broken}: ")
    broken.write_text('{"summary": {}}')
    assert error() == f"error: {broken} is not a sos_benchmark.py results file (no 'regimes' mapping)"
    broken.unlink()
    # Two files at one generator seed (--data_seed 1 makes results.json seed 1).
    write_results(benchmark, tmp_path / "sentinel", variant_args(benchmark, "--data_seed", "1"), {"soft": [0.7]})
    write_results(benchmark, tmp_path / "sentinel", variant_args(benchmark, "--generator_seed", "1"), {"soft": [0.7]})
    assert "results.json and " in error() and "both hold 'soft' at generator seed 1" in error()


def test_the_benchmark_prints_the_table_over_several_generator_seeds(benchmark, tmp_path, capsys, monkeypatch):
    values = {None: {"real": [0.7], "soft": [0.72]}, 1: {"real": [0.7], "soft": [0.76]}}
    monkeypatch.setattr(benchmark, "run_variant", lambda args, out: write_results(
        benchmark, out, args, values[args.generator_seed]))
    command = ["--data_dir", "unused", "--sensor", "sentinel", "--regimes", "150", "--output_dir", str(tmp_path)]
    benchmark.main(command)
    assert "Over generator seeds" not in capsys.readouterr().out
    values[0] = values[None]
    benchmark.main([*command, "--generator_seed", "0", "1"])
    printed = capsys.readouterr().out
    assert "Over generator seeds" in printed
    assert "| soft | 72.00 (n = 1) | 76.00 (n = 1) | 74.00 ± 2.83 | +4.00 |" in printed
