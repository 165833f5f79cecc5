"""`benchmarks/sos_benchmark.py` end to end at toy scale on a tiny SOS-layout release: every arm, the held-out
validation scores, the diagnostics and a variant that reuses the generator and the real students."""

import json

import pytest
from datasets import load_from_disk

from repo_scripts import load_script
from sos_layout import write_sos_release


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmarks/sos_benchmark.py")


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


def test_every_arm_then_a_variant(benchmark, tmp_path, capsys):
    data_dir = write_sos_release(tmp_path / "sos", sensor="sentinel", num_train=6, num_test=2)
    out = tmp_path / "bench"
    benchmark.main(toy_args(data_dir, out, "--modes", "real", "soft", "--train_on_synthetic", "--ablate_label_scale"))
    results = json.loads((out / "sentinel" / "results.json").read_text())["regimes"]["4"]
    arms = {"real", "soft", "synthetic only (soft)", "soft, b = 1", "synthetic only (soft, b = 1)"}
    assert set(results["summary"]) == arms and set(results["heldout_summary"]) == arms
    for arm in arms:
        assert 0.0 <= results["summary"][arm]["mean_iou"]["mean"] <= 1.0
    students = out / "sentinel" / "regime-4" / "students"
    assert sorted(p.name for p in students.iterdir()) == [
        "real-seed0", "soft-b1-seed0", "soft-seed0", "tstr-dual-auto-seed0", "tstr-dual-b1-seed0"]
    heldout = json.loads((students / "real-seed0" / "eval_train_heldout.json").read_text())
    assert heldout["split"] == "train_heldout" and heldout["num_samples"] == 2  # the 6 - 4 pairs outside the subset
    assert set(results["diagnostics"]) == {"dual-auto", "dual-b1"}
    assert 0.0 <= results["diagnostics"]["dual-b1"]["generated_oil_fraction"] <= 1.0
    assert 0.0 <= results["diagnostics"]["dual-b1"]["uncertain_label_fraction"] <= 1.0
    assert results["diagnostics"]["dual-b1"]["test_vs_train_intensity_w1_grey_levels"] > 0.0
    b1 = json.loads((out / "sentinel" / "regime-4" / "generator-dual-b1" / "unet" / "config.json").read_text())
    assert b1["label_scale"] == 1.0
    capsys.readouterr()

    benchmark.main(toy_args(data_dir, out, "--modes", "real", "soft", "--generated_ratio", "0.5",
                            "--soft_label_temperature", "2", "--num_inference_steps", "2", "--generated_multiple", "2"))
    printed = capsys.readouterr().out
    assert "[run ] generate-generated-dual-auto-T2-S2-k2" in printed
    assert "[run ] student-soft-T2-S2-k2-ratio0.5-seed0" in printed
    assert "[skip] student-real-seed0" in printed and "[skip] generator-generator-dual-auto" in printed
    variant = json.loads((out / "sentinel" / "results-T2-S2-k2-ratio0.5.json").read_text())["regimes"]["4"]
    assert set(variant["summary"]) == {"real", "soft (T 2, sampling steps 2, k 2, ratio 0.5)"}
    command = (out / "sentinel" / "regime-4" / "logs" / "student-soft-T2-S2-k2-ratio0.5-seed0.log").read_text()
    assert "--generated_ratio 0.5" in command and "generated-dual-auto-T2-S2-k2" in command
    generation = (out / "sentinel" / "regime-4" / "logs" / "generate-generated-dual-auto-T2-S2-k2.log").read_text()
    assert "--num_inference_steps 2" in generation and "--channels_last" in generation
    card = (out / "sentinel" / "regime-4" / "generated-dual-auto-T2-S2-k2" / "README.md").read_text()
    assert '"unet_memory_format": "channels_last"' in card
    regime_dir = out / "sentinel" / "regime-4"
    assert len(load_from_disk(str(regime_dir / "generated-dual-auto"))) == 16  # k = 4 (default) x 4 real pairs
    assert len(load_from_disk(str(regime_dir / "generated-dual-auto-T2-S2-k2"))) == 8

    # A generator seed trains its own generators; a KD temperature names soft students of its own, and the hard
    # students, which do not use it, are named after the generator alone.
    benchmark.main(toy_args(data_dir, out, "--modes", "real", "hard", "soft", "--generator_seed", "1",
                            "--kd_temperature", "2", "--train_on_synthetic"))
    printed = capsys.readouterr().out
    assert "[run ] generator-generator-dual-auto-g1" in printed and "[run ] student-soft-g1-tau2-seed0" in printed
    assert "[run ] student-hard-g1-seed0" in printed and "[skip] student-real-seed0" in printed
    reseeded = json.loads((out / "sentinel" / "results-g1-tau2.json").read_text())["regimes"]["4"]
    assert set(reseeded["summary"]) == {"real", "hard (generator seed 1)", "soft (generator seed 1, tau 2)",
                                        "synthetic only (soft, generator seed 1)"}
    logs = out / "sentinel" / "regime-4" / "logs"
    assert "--seed 1" in (logs / "generator-generator-dual-auto-g1.log").read_text()
    assert "--kd_temperature 2" in (logs / "student-soft-g1-tau2-seed0.log").read_text()
    assert "--kd_temperature" not in (logs / "student-hard-g1-seed0.log").read_text()

    benchmark.main(toy_args(data_dir, out, "--modes", "real", "--regimes", "full"))  # adds a regime, keeps "4"
    regimes = json.loads((out / "sentinel" / "results.json").read_text())["regimes"]
    assert set(regimes) == {"4", "full"} and set(regimes["full"]["summary"]) == {"real"}
    assert "heldout_summary" not in regimes["full"] and regimes["4"] == results

    benchmark.main(toy_args(data_dir, out, "--modes", "real"))  # fewer arms: the others stay in results.json
    rerun = json.loads((out / "sentinel" / "results.json").read_text())["regimes"]["4"]
    assert set(rerun["summary"]) == arms and set(rerun["diagnostics"]) == {"dual-auto", "dual-b1"}
    assert rerun["summary"]["real"] == results["summary"]["real"] and "soft, b = 1" in rerun["table"]
    assert rerun["arguments"]["modes"] == "['real']"

    # Another generator budget in the same output directory: an error, not the 2-step generator passed off as 3-step.
    with pytest.raises(benchmark.StageError, match=r"generator-dual-auto.*--max_train_steps 2 -> --max_train_steps 3"):
        benchmark.main(toy_args(data_dir, out, "--modes", "real", "soft", "--generator_steps", "3"))
    # Another generator width too; the channels reach the training script as one flag with a value per level.
    with pytest.raises(benchmark.StageError, match=r"generator-dual-auto.*\(nothing\) -> --block_out_channels 8 16"):
        benchmark.main(toy_args(data_dir, out, "--modes", "soft", "--generator_channels", "8", "16"))
    assert (out / "sentinel" / "regime-full" / "logs" / "student-real-seed0.log").is_file()
    assert regimes["full"]["stage_seconds"]["student-real-seed0"] > 0
