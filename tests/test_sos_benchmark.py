"""`benchmarks/sos_benchmark.py` end to end at toy scale on a tiny SOS-layout release: every arm (augmented by
default, the relabelled control, the generator levers, several budgets, the protocol without augmentation), the
held-out validation scores, the diagnostics and variants that reuse the generator and the real students.

The stages run in this process (`tests/in_process_stages.py`: a fresh interpreter per stage costs ~18 s of CPU in
imports for a toy stage), except in the `--jobs` run of the `--jobs` test, where every stage is a real subprocess as
in a benchmark run (train, distill and evaluate; generate under `accelerate launch`), and the calibration,
relabelling and concatenation stages named below, which keep one real subprocess run of each of those commands
(`test_demo.py` keeps the one-process subprocess run of generate)."""

import json
import threading

import pytest
import torch
from datasets import load_from_disk

from in_process_stages import InProcessStages
from repo_scripts import load_script
from sos_layout import write_sos_release


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmarks/sos_benchmark.py")


@pytest.fixture
def in_process_stages(monkeypatch):
    """Every stage of this test that runs a `dakter_hf.commands` module in one process runs in-process."""
    return InProcessStages(monkeypatch)


@pytest.fixture
def toy_sampling_steps(benchmark, monkeypatch):
    """3 sampling steps play the default's part (20): the generators' validation grids and the generated sets sample
    at 3 steps, under the default's stage names (sampling is the costly part of a toy stage, in bfloat16 on a CPU
    most of all); a test passing `--num_inference_steps 2` still gets the variant named `S2`."""
    build_parser = benchmark.sos_args.build_parser

    def toy_parser(description=None):
        parser = build_parser(description)
        parser.set_defaults(num_inference_steps=3)
        return parser

    monkeypatch.setattr(benchmark.sos_args, "build_parser", toy_parser)
    benchmark.flag_default.cache_clear()  # `flag_default` caches the parser's defaults: the toy one for this test only
    yield
    benchmark.flag_default.cache_clear()


def toy_args(data_dir, output_dir, *extra):
    return ["--data_dir", str(data_dir), "--sensor", "sentinel", "--output_dir", str(output_dir), "--regimes", "4",
            "--resolution", "32", "--crop_size", "16", "--model_size", "tiny", "--generator_steps", "2",
            "--generator_batch_size", "2",
            "--student", "tiny", "--student_steps", "2", "--student_batch_size", "2", "--student_seeds", "0",
            "--num_threads", "1", *extra]


def test_intensity_distance(benchmark):
    import numpy as np

    images = np.random.default_rng(0).integers(0, 200, size=(3, 8, 8)).astype(np.float64)
    assert benchmark.intensity_distance(images, images) == {"w1_grey_levels": 0.0, "histogram_l1": 0.0}
    shifted = benchmark.intensity_distance(images, images + 8)  # two bins of 4 grey levels to the right
    assert shifted["w1_grey_levels"] == pytest.approx(8.0)
    disjoint = benchmark.intensity_distance(np.zeros((2, 4, 4)), np.full((2, 4, 4), 255.0))
    assert disjoint["histogram_l1"] == pytest.approx(2.0) and disjoint["w1_grey_levels"] == pytest.approx(252.0)


def test_upgrade_entry_labels_arms_of_the_protocol_without_augmentation(benchmark):
    """An entry of results.json written before augmentation became the default holds unaugmented arms only."""
    cell = {"mean_iou": {"mean": 0.7, "std": 0.0, "n": 1, "values": [0.7]}}
    old = {"summary": {"real": cell, "soft (tau 2)": cell}, "heldout_summary": {"real": cell},
           "arguments": {"student_steps": "300", "modes": "['real', 'soft']"}}
    upgraded = benchmark.upgrade_entry(old)
    assert list(upgraded["summary"]) == ["real (300 student steps, no augmentation)",
                                         "soft (tau 2, 300 student steps, no augmentation)"]
    assert list(upgraded["heldout_summary"]) == ["real (300 student steps, no augmentation)"]
    current = {**old, "arguments": {**old["arguments"], "no_augment": "False"}}
    assert benchmark.upgrade_entry(current) == current and benchmark.upgrade_entry({}) == {}
    merged = benchmark.merge_entry(upgraded, {"summary": {"real": cell}})
    assert list(merged["summary"])[0] == "real" and merged["table"].index("| real |") < merged["table"].index(
        "| real (300 student steps, no augmentation) |")


def test_a_run_over_more_student_seeds_adds_to_the_arm(benchmark):
    """`--student_seeds 3 4` after seeds 0-2: the merged entry's arm and table hold the five seeds."""
    def entry(values, seeds):
        reports = [{"final": {"mean_iou": v}, "train_heldout": {"mean_iou": v + 0.02}, "seed": s}
                   for v, s in zip(values, seeds)]
        return {"summary": benchmark.summarize({"real": reports}, ["mean_iou"]),
                "heldout_summary": benchmark.summarize({"real": reports}, ["mean_iou"], which="train_heldout")}

    merged = benchmark.merge_entry(entry([0.70, 0.72, 0.74], [0, 1, 2]), entry([0.76, 0.78], [3, 4]))
    assert merged["summary"]["real"]["mean_iou"]["n"] == 5 and merged["heldout_summary"]["real"]["mean_iou"]["n"] == 5
    assert merged["summary"]["real"]["mean_iou"]["mean"] == pytest.approx(0.74)
    assert "| real | 74.00 ±" in merged["table"]


def test_runs_side_by_side_keep_each_others_arms(benchmark, tmp_path, monkeypatch):
    """Two runs of one --output_dir at once (e.g. `--modes hard` in one shell, `--relabelled_control` in another):
    the one finishing last merges into the results file as it is then, not as it was when the run started."""
    cell = {"mean_iou": {"mean": 0.7, "std": 0.0, "n": 1, "values": [0.7]}}
    out = tmp_path / "sentinel"
    results_path = out / "results.json"
    benchmark.update_results(results_path, {"4": {"summary": {"real": cell}}}, seconds=1.0)

    def run_regime(runner, args, root, regime, first):
        # The other run finishes while this one trains.
        benchmark.update_results(results_path, {regime: {"summary": {"hard": cell}}}, seconds=2.0)
        return {"summary": {"soft, labels by a real-data student": cell}}

    monkeypatch.setattr(benchmark, "run_regime", run_regime)
    args = benchmark.parse_args(toy_args(tmp_path / "unused", tmp_path))
    args.generator_seed = None
    out.mkdir(parents=True, exist_ok=True)
    benchmark.run_variant(args, out)
    summary = json.loads(results_path.read_text())["regimes"]["4"]["summary"]
    assert sorted(summary) == ["hard", "real", "soft, labels by a real-data student"]


def test_generators_of_several_seeds_train_side_by_side_with_jobs(benchmark, tmp_path, monkeypatch):
    """`--generator_seed 0 1 --jobs 2`: both seeds' generators (and with `--labeller per_modality` their labellers)
    train together before the first seed's run; with `--jobs 1` each seed's run trains its own, as before."""
    started, barrier = [], threading.Barrier(2, timeout=20)

    def train_generator_arm(runner, args, root, regime, name, **overrides):
        started.append((args.generator_seed, args.per_modality_timesteps))
        barrier.wait()  # raises BrokenBarrierError unless the two seeds' trainers run at the same time
        return root / f"generator-{name}-g{args.generator_seed}"

    variants = []
    monkeypatch.setattr(benchmark, "train_generator_arm", train_generator_arm)
    monkeypatch.setattr(benchmark, "run_variant",
                        lambda args, out: variants.append((args.generator_seed, len(started))))
    benchmark.main(toy_args(tmp_path / "unused", tmp_path, "--modes", "real", "soft", "--generator_seed", "0", "1",
                            "--num_threads", "2", "--jobs", "2"))
    assert sorted(started) == [(0, False), (1, False)]
    assert variants == [(0, 2), (1, 2)]  # both generators were trained before the first seed's run

    started.clear(), variants.clear()
    monkeypatch.setattr(benchmark, "train_generator_arm",
                        lambda runner, args, root, regime, name, **kw: started.append(
                            (args.generator_seed, args.per_modality_timesteps)))
    benchmark.main(toy_args(tmp_path / "unused", tmp_path, "--modes", "real", "soft", "--generator_seed", "0", "1",
                            "--labeller", "per_modality", "--posterior_labels", "1", "--num_threads", "2",
                            "--jobs", "2"))
    assert sorted(started) == [(0, False), (0, True), (1, False), (1, True)]

    started.clear(), variants.clear()
    benchmark.main(toy_args(tmp_path / "unused", tmp_path, "--modes", "real", "soft", "--generator_seed", "0", "1"))
    assert started == [] and variants == [(0, 0), (1, 0)]


def test_every_arm_then_a_variant(benchmark, tmp_path, capsys, monkeypatch, toy_sampling_steps):
    # The relabelling and calibration stages stay real subprocesses: the end-to-end runs of those commands.
    stages = InProcessStages(monkeypatch, subprocess_commands={"relabel", "calibrate"})
    # The toy budget of 2 steps plays the default budget's part (it names no students of its own).
    monkeypatch.setattr(benchmark.sos_args, "DEFAULT_STUDENT_STEPS", 2)
    data_dir = write_sos_release(tmp_path / "sos", sensor="sentinel", num_train=6, num_test=2)
    out = tmp_path / "bench"
    benchmark.main(toy_args(data_dir, out, "--modes", "real", "soft", "--ablate_label_scale", "--relabelled_control"))
    results = json.loads((out / "sentinel" / "results.json").read_text())["regimes"]["4"]
    arms = {"real", "soft", "soft, b = 1", "soft, labels by a real-data student"}
    assert set(results["summary"]) == arms and set(results["heldout_summary"]) == arms
    for arm in arms:
        assert 0.0 <= results["summary"][arm]["mean_iou"]["mean"] <= 1.0
    students = out / "sentinel" / "regime-4" / "students"
    assert sorted(p.name for p in students.iterdir()) == [
        "real-aug-seed0", "soft-aug-seed0", "soft-b1-aug-seed0", "soft-relabelled-aug-seed0"]
    logs = out / "sentinel" / "regime-4" / "logs"
    # Every student trains with random flips / rotations by default, the generators on untransformed pairs.
    assert all("--augment" in (logs / f"student-{p.name}.log").read_text() for p in students.iterdir())
    assert "--augment" not in (logs / "generator-generator-dual-auto.log").read_text()
    # Half of every soft batch generated by default; real students have no generated rows to mix in.
    assert "--generated_ratio 0.5" in (logs / "student-soft-aug-seed0.log").read_text()
    assert "--generated_ratio" not in (logs / "student-real-aug-seed0.log").read_text()
    heldout = json.loads((students / "real-aug-seed0" / "eval_train_heldout.json").read_text())
    assert heldout["split"] == "train_heldout" and heldout["num_samples"] == 2  # the 6 - 4 pairs outside the subset
    # The control arm: the generated images, labelled by the real student of the first seed.
    relabel_log = (logs / "relabel-generated-dual-auto-relabelled-by-real-aug-seed0.log").read_text()
    assert "students/real-aug-seed0/final" in relabel_log
    relabelled = load_from_disk(str(out / "sentinel" / "regime-4" / "generated-dual-auto-relabelled-by-real-aug-seed0"))
    assert relabelled["seed"] == load_from_disk(str(out / "sentinel" / "regime-4" / "generated-dual-auto"))["seed"]
    assert "generated-dual-auto-relabelled-by-real-aug-seed0" in (
        logs / "student-soft-relabelled-aug-seed0.log").read_text()
    assert set(results["diagnostics"]) == {"dual-auto", "dual-b1"}
    assert 0.0 <= results["diagnostics"]["dual-b1"]["generated_oil_fraction"] <= 1.0
    assert 0.0 <= results["diagnostics"]["dual-b1"]["uncertain_label_fraction"] <= 1.0
    assert results["diagnostics"]["dual-b1"]["test_vs_train_intensity_w1_grey_levels"] > 0.0
    b1 = json.loads((out / "sentinel" / "regime-4" / "generator-dual-b1" / "unet" / "config.json").read_text())
    assert b1["label_scale"] == 1.0
    assert "±" not in results["table"]  # one student seed: the numbers alone
    capsys.readouterr()

    benchmark.main(toy_args(data_dir, out, "--modes", "real", "soft", "--generated_ratio", "auto",
                            "--soft_label_temperature", "2", "--num_inference_steps", "2", "--generated_multiple", "2"))
    printed = capsys.readouterr().out
    assert "[run ] generate-generated-dual-auto-T2-S2-k2" in printed
    assert "[run ] student-soft-T2-S2-k2-ratioauto-aug-seed0" in printed
    assert "[skip] student-real-aug-seed0" in printed and "[skip] generator-generator-dual-auto" in printed
    variant = json.loads((out / "sentinel" / "results-T2-S2-k2-ratioauto.json").read_text())["regimes"]["4"]
    assert set(variant["summary"]) == {"real", "soft (T 2, sampling steps 2, k 2, ratio auto)"}
    command = (logs / "student-soft-T2-S2-k2-ratioauto-aug-seed0.log").read_text()
    assert "--generated_ratio auto" in command and "generated-dual-auto-T2-S2-k2" in command
    generation = (logs / "generate-generated-dual-auto-T2-S2-k2.log").read_text()
    assert "--num_inference_steps 2" in generation and "--channels_last" in generation
    card = (out / "sentinel" / "regime-4" / "generated-dual-auto-T2-S2-k2" / "README.md").read_text()
    assert '"unet_memory_format": "channels_last"' in card
    regime_dir = out / "sentinel" / "regime-4"
    assert len(load_from_disk(str(regime_dir / "generated-dual-auto"))) == 16  # k = 4 (default) x 4 real pairs
    assert len(load_from_disk(str(regime_dir / "generated-dual-auto-T2-S2-k2"))) == 8

    # A generator seed or a lever of the generator's data trains its own generators; a KD temperature names soft
    # students of its own, and the hard students, which do not use it, are named after the generator alone.
    benchmark.main(toy_args(data_dir, out, "--modes", "real", "hard", "soft", "--generator_seed", "1",
                            "--generator_augment", "--soft_label_targets", "--kd_temperature", "2",
                            "--train_on_synthetic"))
    printed = capsys.readouterr().out
    lever = "g1-gaug-softtargets"
    assert f"[run ] generator-generator-dual-auto-{lever}" in printed
    assert f"[run ] student-soft-{lever}-tau2-aug-seed0" in printed
    assert f"[run ] student-hard-{lever}-aug-seed0" in printed and "[skip] student-real-aug-seed0" in printed
    reseeded = json.loads((out / "sentinel" / f"results-{lever}-tau2.json").read_text())["regimes"]["4"]
    generator = "generator seed 1, generator augmentation, soft-label targets"
    assert set(reseeded["summary"]) == {"real", f"hard ({generator})", f"soft ({generator}, tau 2)",
                                        f"synthetic only (soft, {generator})"}
    trained = (logs / f"generator-generator-dual-auto-{lever}.log").read_text()
    assert "--seed 1" in trained and "--augment" in trained and "--soft_label_targets" in trained
    assert "--kd_temperature 2" in (logs / f"student-soft-{lever}-tau2-aug-seed0.log").read_text()
    assert "--kd_temperature" not in (logs / f"student-hard-{lever}-aug-seed0.log").read_text()

    # A new regime, two student budgets: each budget trains its own students.
    benchmark.main(toy_args(data_dir, out, "--modes", "real", "--regimes", "full", "--student_steps", "3", "2"))
    regimes = json.loads((out / "sentinel" / "results.json").read_text())["regimes"]
    assert set(regimes) == {"4", "full"} and list(regimes["full"]["summary"]) == ["real", "real (3 student steps)"]
    assert "heldout_summary" not in regimes["full"] and regimes["4"] == results
    full_logs = out / "sentinel" / "regime-full" / "logs"
    assert "--max_train_steps 3" in (full_logs / "student-real-steps3-aug-seed0.log").read_text()

    # Today's protocol without augmentation: its own students, beside the augmented ones, which stay first.
    benchmark.main(toy_args(data_dir, out, "--modes", "real", "--no_augment"))
    rerun = json.loads((out / "sentinel" / "results.json").read_text())["regimes"]["4"]
    assert list(rerun["summary"]) == [*results["summary"], "real (no augmentation)"]
    assert set(rerun["diagnostics"]) == {"dual-auto", "dual-b1"}
    assert rerun["summary"]["real"] == results["summary"]["real"] and "soft, b = 1" in rerun["table"]
    assert rerun["arguments"]["modes"] == "['real']"
    assert "--augment" not in (logs / "student-real-seed0.log").read_text()

    # Another generator budget in the same output directory: an error, not the 2-step generator passed off as 3-step.
    with pytest.raises(benchmark.StageError, match=r"generator-dual-auto.*--max_train_steps 2 -> --max_train_steps 3"):
        benchmark.main(toy_args(data_dir, out, "--modes", "real", "soft", "--generator_steps", "3"))
    # Another generator width too; the channels reach the training script as one flag with a value per level.
    with pytest.raises(benchmark.StageError, match=r"generator-dual-auto.*\(nothing\) -> --block_out_channels 8 16"):
        benchmark.main(toy_args(data_dir, out, "--modes", "soft", "--generator_channels", "8", "16"))
    assert (full_logs / "student-real-aug-seed0.log").is_file()
    assert regimes["full"]["stage_seconds"]["student-real-aug-seed0"] > 0
    machine = regimes["full"]["stage_machines"]["student-real-aug-seed0"]  # which CPU produced each arm
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and "cpu_bf16_instructions" in machine

    # A fitted soft-label temperature: T from the held-out training pairs (never the test split), saved in the
    # generator's model_index.json, then its own generated set and soft students, the fit in the diagnostics.
    benchmark.main(toy_args(data_dir, out, "--modes", "real", "soft", "--calibrate_temperature"))
    printed = capsys.readouterr().out
    assert "[skip] generator-generator-dual-auto" in printed and "[run ] calibrate-generator-dual-auto" in printed
    assert "[run ] generate-generated-dual-auto-Tfit" in printed and "[run ] student-soft-Tfit-aug-seed0" in printed
    calibration = (logs / "calibrate-generator-dual-auto.log").read_text()
    assert "--split train_heldout" in calibration and "--save" in calibration and "--split test" not in calibration
    fitted = json.loads((out / "sentinel" / "results-Tfit.json").read_text())["regimes"]["4"]
    assert set(fitted["summary"]) == {"real", "soft (fitted T)"}
    fit = fitted["diagnostics"]["dual-auto-Tfit"]["soft_label_calibration"]
    assert fit["num_images"] == 2 and fit["split"].startswith("sos sentinel train_heldout")
    stored = json.loads((regime_dir / "generator-dual-auto" / "model_index.json").read_text())
    assert stored["soft_label_temperature"] == fit["temperature"]
    assert f"--soft_label_temperature {fit['temperature']}" in (
        logs / "generate-generated-dual-auto-Tfit.log").read_text()
    assert f"soft_label_temperature={fit['temperature']}" in (
        regime_dir / "generated-dual-auto-Tfit" / "README.md").read_text()
    with pytest.raises(SystemExit):
        benchmark.parse_args(toy_args(data_dir, out, "--calibrate_temperature", "--regimes", "full"))
    assert stages.subprocesses == ["dakter_hf.commands.relabel", "dakter_hf.commands.calibrate"]

def test_pairs_arguments_and_names(benchmark, capsys):
    base = ["--data_dir", "d", "--sensor", "sentinel"]
    for extra, match in [
        (["--perturb_masks"], "--perturb_masks perturbs the masks images are drawn for: it needs --pairs mask"),
        (["--pairs", "mask", "--generated_multiple", "2.5"], "--generated_multiple must be a positive integer"),
        (["--pairs", "mixed", "--generated_multiple", "3"], "--generated_multiple must be an even integer"),
        (["--pairs", "mask", "--soft_label_temperature", "2"], "--soft_label_temperature applies to joint samples"),
        (["--pairs", "both"], "argument --pairs: invalid choice"),
    ]:
        with pytest.raises(SystemExit):
            benchmark.parse_args(base + extra)
        assert match in capsys.readouterr().err
    args = benchmark.parse_args(base + ["--pairs", "mixed", "--perturb_masks", "--per_modality_timesteps",
                                        "--soft_label_temperature", "2"])
    assert benchmark.generator_variant(args) == "-pmt"
    assert benchmark.generation_variant(args) == "-pmt-T2-mixedpairs-perturbed"
    joint, drawn = benchmark.pairs_parts(args)  # the mixed set's parts: the joint set, k/2 images per mask
    assert benchmark.generation_variant(joint) == "-pmt-T2"
    assert benchmark.generation_variant(drawn) == "-pmt-k2-maskpairs-perturbed"
    assert benchmark.with_parts("soft", benchmark.variant_parts(benchmark.student_variant(args))) == (
        "soft (per-modality timesteps, T 2, joint + mask-conditioned pairs, perturbed masks)")
    assert benchmark.variant_parts("-maskpairs") == ["mask-conditioned pairs"]
    default = benchmark.parse_args(base)
    assert default.pairs == "joint" and benchmark.student_variant(default) == ""
    whole = benchmark.parse_args(base + ["--crop_size", "64", "--per_modality_timesteps"])
    whole.generator_seed = 1  # as the run sets it for each seed of --generator_seed
    assert benchmark.generator_variant(whole) == "-g1-whole-pmt"  # its own generators beside the 32-pixel ones
    assert benchmark.variant_parts(benchmark.student_variant(whole)) == [
        "generator seed 1", "whole scenes", "per-modality timesteps"]
    for crop in ("0", "65"):
        with pytest.raises(SystemExit):
            benchmark.parse_args(base + ["--crop_size", crop])
        assert "--crop_size must lie in 1 .. --resolution (64), got " + crop in capsys.readouterr().err


def test_mask_conditioned_and_mixed_pairs(benchmark, tmp_path, capsys, monkeypatch, toy_sampling_steps):
    stages = InProcessStages(monkeypatch, subprocess_commands={"concatenate"})  # its end-to-end subprocess run
    monkeypatch.setattr(benchmark.sos_args, "DEFAULT_STUDENT_STEPS", 2)
    data_dir = write_sos_release(tmp_path / "sos", sensor="sentinel", num_train=6, num_test=2)
    out = tmp_path / "bench"
    benchmark.main(toy_args(data_dir, out, "--modes", "soft", "--pairs", "mixed", "--perturb_masks",
                            "--per_modality_timesteps"))
    regime = out / "sentinel" / "regime-4"
    logs = regime / "logs"
    assert "--per_modality_timesteps" in (logs / "generator-generator-dual-auto-pmt.log").read_text()
    drawing = (logs / "generate-generated-dual-auto-pmt-k2-maskpairs-perturbed.log").read_text()
    for flag in ("--masks_from_dataset", "--num_train_samples 4", "--images_per_mask 2", "--augment_masks",
                 "--perturb_masks", "--conditioning exact"):
        assert flag in drawing
    mixed = load_from_disk(str(regime / "generated-dual-auto-pmt-mixedpairs-perturbed"))
    assert len(mixed) == 16  # k = 4: the first 2 x 4 joint samples, then 2 images for each of the 4 masks
    assert list(mixed["generated_set"]) == ["generated-dual-auto-pmt"] * 8 + [
        "generated-dual-auto-pmt-k2-maskpairs-perturbed"] * 8
    assert None not in list(mixed["mask_perturbation"])[8:]
    results = json.loads((out / "sentinel" / "results-pmt-mixedpairs-perturbed.json").read_text())["regimes"]["4"]
    assert set(results["summary"]) == {"soft (per-modality timesteps, joint + mask-conditioned pairs, perturbed masks)"}
    assert "generated-dual-auto-pmt-mixedpairs-perturbed" in (
        logs / "student-soft-pmt-mixedpairs-perturbed-aug-seed0.log").read_text()
    capsys.readouterr()

    # Mask-conditioned pairs alone at k = 2 are the mixed set's second part: drawn once, then reused.
    benchmark.main(toy_args(data_dir, out, "--modes", "soft", "--pairs", "mask", "--perturb_masks",
                            "--per_modality_timesteps", "--generated_multiple", "2"))
    printed = capsys.readouterr().out
    assert "[skip] generate-generated-dual-auto-pmt-k2-maskpairs-perturbed" in printed
    assert "[run ] student-soft-pmt-k2-maskpairs-perturbed-aug-seed0" in printed
    masked = json.loads((out / "sentinel" / "results-pmt-k2-maskpairs-perturbed.json").read_text())["regimes"]["4"]
    assert set(masked["summary"]) == {"soft (per-modality timesteps, k 2, mask-conditioned pairs, perturbed masks)"}
    assert masked["diagnostics"]["dual-auto-pmt-k2-maskpairs-perturbed"]["uncertain_label_fraction"] == 0.0
    assert stages.subprocesses == ["dakter_hf.commands.concatenate"]




def test_levers_of_the_generated_labels(benchmark, tmp_path, capsys, monkeypatch, in_process_stages):
    """--posterior_labels N relabels the sampled pairs with N segmentation draws of their generator; the pair-quality
    levers score them with it and drop / weight pairs in the hard and soft students; each names its own students and
    results file, and the generator, the sampled set and the real students are reused."""
    monkeypatch.setattr(benchmark.sos_args, "DEFAULT_STUDENT_STEPS", 2)
    data_dir = write_sos_release(tmp_path / "sos", sensor="sentinel", num_train=6, num_test=2)
    out = tmp_path / "bench"
    regime = out / "sentinel" / "regime-4"
    benchmark.main(toy_args(data_dir, out, "--modes", "real", "soft", "--posterior_labels", "2",
                            "--num_inference_steps", "2"))
    printed = capsys.readouterr().out
    assert "[run ] relabel-generated-dual-auto-S2-post2" in printed
    relabel_log = (regime / "logs" / "relabel-generated-dual-auto-S2-post2.log").read_text()
    assert "--labeller" in relabel_log and "generator-dual-auto" in relabel_log and "--num_samples 2" in relabel_log
    posterior = load_from_disk(str(regime / "generated-dual-auto-S2-post2"))
    assert posterior["seed"] == load_from_disk(str(regime / "generated-dual-auto-S2"))["seed"]
    results = json.loads((out / "sentinel" / "results-S2-post2.json").read_text())["regimes"]["4"]
    assert set(results["summary"]) == {"real", "soft (sampling steps 2, posterior labels 2)"}
    assert "generated-dual-auto-S2-post2" in (regime / "logs" / "student-soft-S2-post2-aug-seed0.log").read_text()
    assert set(results["diagnostics"]) == {"dual-auto-S2-post2"}

    benchmark.main(toy_args(data_dir, out, "--modes", "real", "hard", "soft", "--num_inference_steps", "2",
                            "--drop_worst_pairs", "0.25", "--pair_quality_weighting", "--relabelled_control"))
    printed = capsys.readouterr().out
    assert "[skip] generate-generated-dual-auto-S2" in printed and "[skip] student-real-aug-seed0" in printed
    assert "[run ] score-generated-dual-auto-S2-scored" in printed
    scored = load_from_disk(str(regime / "generated-dual-auto-S2-scored"))
    assert all(0.0 <= q <= 1.0 for q in scored["pair_quality"])
    for mode in ("hard", "soft"):
        student = regime / "students" / f"{mode}-S2-drop0.25-qw-aug-seed0"
        metrics = json.loads((student / "metrics.json").read_text())
        assert metrics["pair_quality"]["num_dropped"] == 4 and metrics["pair_quality"]["weighting"]  # 25% of 16
    variant = json.loads((out / "sentinel" / "results-S2-drop0.25-qw.json").read_text())["regimes"]["4"]
    assert set(variant["summary"]) == {
        "real", "hard (sampling steps 2, drop worst 0.25, pair-quality weighting)",
        "soft (sampling steps 2, drop worst 0.25, pair-quality weighting)",
        "hard, labels by a real-data student (sampling steps 2)",
        "soft, labels by a real-data student (sampling steps 2)"}
    # the control arm relabels the sampled images and takes no pair-quality lever
    control = (regime / "logs" / "student-soft-relabelled-S2-aug-seed0.log").read_text()
    assert "--drop_worst_pairs" not in control and "generated-dual-auto-S2-relabelled-by" in control
    with pytest.raises(SystemExit):
        benchmark.parse_args(toy_args(data_dir, out, "--posterior_labels", "2", "--pair_quality_weighting"))

    # --balance_generated_classes reaches the students' command ('-cb'); the toy generator's labels are near uniform
    # in every pair, so no weighting reaches the real masks' 22% of class 1: the student stage stops and says so
    unreachable = r"--balance_generated_classes, --generated_dataset .*-dual-auto-S2: No weighting .* span class 0"
    with pytest.raises(benchmark.StageError, match=unreachable):
        benchmark.main(toy_args(data_dir, out, "--modes", "soft", "--num_inference_steps", "2",
                                "--balance_generated_classes"))
    assert "[run ] student-soft-S2-cb-aug-seed0" in capsys.readouterr().out

    # --labeller per_modality: the --per_modality_timesteps generator of the same seed segments (exactly) the pairs
    # the default generator sampled, at --labelling_steps; its own relabelled set, students and results file.
    benchmark.main(toy_args(data_dir, out, "--modes", "real", "soft", "--num_inference_steps", "2",
                            "--posterior_labels", "1", "--labeller", "per_modality", "--labelling_steps", "3"))
    printed = capsys.readouterr().out
    assert "[skip] generate-generated-dual-auto-S2" in printed and "[skip] student-real-aug-seed0" in printed
    assert "[run ] generator-generator-dual-auto-pmt" in printed and "[run ] generate-" not in printed
    name = "generated-dual-auto-S2-post1-pmtlabels-lsteps3"
    relabel_log = (regime / "logs" / f"relabel-{name}.log").read_text()
    assert f"--labeller {regime / 'generator-dual-auto-pmt'} " in relabel_log
    assert f"--generated_dataset {regime / 'generated-dual-auto-S2'} " in relabel_log
    assert "--num_samples 1" in relabel_log and "--num_inference_steps 3" in relabel_log
    assert "--conditioning exact" in relabel_log
    student_log = (regime / "logs" / "student-soft-S2-post1-pmtlabels-lsteps3-aug-seed0.log").read_text()
    assert f"--generated_dataset {regime / name}\n" in student_log
    results = json.loads((out / "sentinel" / "results-S2-post1-pmtlabels-lsteps3.json").read_text())["regimes"]["4"]
    assert set(results["summary"]) == {"real", "soft (sampling steps 2, posterior labels 1, labels by the per-modality "
                                               "generator, labelling steps 3)"}
    # The labeller is the generator --per_modality_timesteps trains (same directory and command): reused by it.
    pmt = benchmark.parse_args(toy_args(data_dir, out, "--per_modality_timesteps"))
    runner = benchmark.StageRunner(regime, num_threads=1)
    assert benchmark.train_generator_arm(runner, pmt, regime, "4", "dual-auto") == regime / "generator-dual-auto-pmt"
    assert "[skip] generator-generator-dual-auto-pmt" in capsys.readouterr().out
    # The generator's own labels at the sampling steps keep their names and commands (finished stages reused).
    benchmark.main(toy_args(data_dir, out, "--modes", "soft", "--num_inference_steps", "2", "--posterior_labels", "2",
                            "--labelling_steps", "2"))
    assert "[run ]" not in capsys.readouterr().out


def test_labeller_arguments(benchmark):
    """--labeller / --labelling_steps set how the label levers segment: refused without one, or where the
    per-modality labeller is the generator itself."""
    base = ["--data_dir", "d", "--sensor", "sentinel"]
    for extra in (["--labeller", "per_modality"], ["--labelling_steps", "10"],
                  ["--labeller", "per_modality", "--posterior_labels", "1", "--per_modality_timesteps"],
                  ["--posterior_labels", "1", "--labelling_steps", "0"]):
        with pytest.raises(SystemExit):
            benchmark.parse_args(base + extra)
    args = benchmark.parse_args(base + ["--labeller", "per_modality", "--drop_worst_pairs", "0.1",
                                        "--labelling_steps", "10"])
    assert benchmark.student_variant(args, "hard") == "-drop0.1-pmtlabels-lsteps10"
    balanced = benchmark.parse_args(base + ["--balance_generated_classes"])
    assert [benchmark.student_variant(balanced, mode) for mode in ("real", "hard", "soft")] == ["", "-cb", "-cb"]
    assert benchmark.variant_parts("-cb") == ["class-balanced"]
    assert benchmark.generation_variant(args) == ""
    # the generator itself, then its per-modality labeller
    assert [a.per_modality_timesteps for a in benchmark.trained_generator_args(args)] == [False, True]
    yesterday = benchmark.parse_args(base + ["--labeller", "per_modality", "--posterior_labels", "1",
                                             "--labelling_steps", "10"])
    assert benchmark.generation_variant(yesterday) == "-post1-pmtlabels-lsteps10"
    assert benchmark.variant_parts(benchmark.student_variant(yesterday)) == [
        "posterior labels 1", "labels by the per-modality generator", "labelling steps 10"]


def test_jobs_give_the_results_of_a_sequential_run_at_the_same_threads_per_stage(benchmark, tmp_path, capsys,
                                                                                 monkeypatch, toy_sampling_steps):
    """--jobs 2 --num_threads 2 runs every stage at one thread (the generator and the real student side by side,
    generation as two processes, the soft and synthetic-only students side by side): the generated set and every
    student's metrics are bit-identical to a sequential run at one thread.

    The sequential reference runs its stages in-process at one thread (the same results as one-thread subprocesses,
    without ~18 s of imports per stage); the run with --jobs starts every stage as a real subprocess."""
    data_dir = write_sos_release(tmp_path / "sos", sensor="sentinel", num_train=6, num_test=2)
    extra = ["--modes", "real", "soft", "--train_on_synthetic"]
    sequential, parallel = tmp_path / "sequential", tmp_path / "parallel"
    with monkeypatch.context() as patch:
        reference = InProcessStages(patch)
        benchmark.main(toy_args(data_dir, sequential, *extra))
    assert reference.subprocesses == [] and "generate" in reference.in_process
    capsys.readouterr()
    # The last --num_threads counts.
    with monkeypatch.context() as patch:
        jobs = InProcessStages(patch)  # records the stages only: with --jobs, each one is a real subprocess
        benchmark.main(toy_args(data_dir, parallel, *extra, "--num_threads", "2", "--jobs", "2"))
    assert jobs.in_process == [] and "accelerate.commands.launch" in jobs.subprocesses
    printed = capsys.readouterr().out
    assert "[run ] generate-generated-dual-auto (2 processes x 1 threads" in printed
    assert "[run ] student-soft-steps2-aug-seed0 (1 threads" in printed
    results = [json.loads((out / "sentinel" / "results.json").read_text())["regimes"]["4"]
               for out in (sequential, parallel)]
    assert results[0]["summary"] == results[1]["summary"] and results[0]["heldout_summary"] == results[1][
        "heldout_summary"]
    assert set(results[1]["summary"]) == {"real (2 student steps)", "soft (2 student steps)",
                                          "synthetic only (soft, 2 student steps)"}
    assert set(results[1]["phase_seconds_of_last_run"]) == {
        "generators and real students", "generation and diagnostics", "students of the generated sets"}
    assert results[0]["diagnostics"] == results[1]["diagnostics"]
    generated = [load_from_disk(str(out / "sentinel" / "regime-4" / "generated-dual-auto"))
                 for out in (sequential, parallel)]
    assert generated[0].data.table.equals(generated[1].data.table)
    logs = parallel / "sentinel" / "regime-4" / "logs"
    assert "accelerate.commands.launch" in (logs / "generate-generated-dual-auto.log").read_text()
    # A rerun with --jobs resumes: every stage is complete and skipped (the launcher is no argument of the stage).
    benchmark.main(toy_args(data_dir, sequential, *extra, "--num_threads", "2", "--jobs", "2"))
    assert "[run ]" not in capsys.readouterr().out


def test_bf16_reaches_every_training_and_generation_stage(benchmark, tmp_path, in_process_stages, toy_sampling_steps):
    data_dir = write_sos_release(tmp_path / "sos", sensor="sentinel", num_train=6, num_test=2)
    out = tmp_path / "bench"
    benchmark.main(toy_args(data_dir, out, "--modes", "soft", "--bf16"))
    logs = out / "sentinel" / "regime-4" / "logs"
    generator = (logs / "generator-generator-dual-auto.log").read_text()
    assert "--mixed_precision bf16" in generator and "--validation_inference_steps 3" in generator
    generation = (logs / "generate-generated-dual-auto.log").read_text()
    assert "--dtype bfloat16" in generation and "--num_inference_steps 3" in generation
    assert "--mixed_precision bf16" in (logs / "student-soft-steps2-aug-seed0.log").read_text()
    summary = json.loads((out / "sentinel" / "results.json").read_text())["regimes"]["4"]["summary"]
    assert 0.0 <= summary["soft (2 student steps)"]["mean_iou"]["mean"] <= 1.0
    # images drawn for the real masks sample in bf16 too
    benchmark.main(toy_args(data_dir, out, "--modes", "soft", "--bf16", "--pairs", "mask", "--per_modality_timesteps",
                            "--generated_multiple", "1"))
    drawing = (logs / "generate-generated-dual-auto-pmt-k1-maskpairs.log").read_text()
    assert "--masks_from_dataset" in drawing and "--dtype bfloat16" in drawing
    card = (out / "sentinel" / "regime-4" / "generated-dual-auto-pmt-k1-maskpairs" / "README.md").read_text()
    assert '"compute_dtype": "bfloat16"' in card
