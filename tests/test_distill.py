"""Tests of the distillation run: mixed data stream, the distill command (`dakter_hf.commands.distill`, run by
examples/distill.py: modes, outputs, exact resume, bad input, Hub push) and the evaluate command
(`dakter_hf.commands.evaluate`, run by examples/evaluate_student.py). Tiny SegFormer, tiny simulated data at 32x32;
runs in-process (one thread)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import load_file

from dakter_hf.commands import distill as distill_command
from dakter_hf.commands import evaluate as evaluate_command
from dakter_hf.distill import create_student

from sos_layout import SOS_DIR, needs_sos


RESOLUTION = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_generated_dataset(path, num_rows: int = 12, num_classes: int = 5, size: int = RESOLUTION, seed: int = 0):
    """A generated dataset in the format of `dakter_hf.generation` (uint8 soft labels summing to 255 per pixel)."""
    from datasets import Dataset

    from dakter_hf.data import SIMULATED_ID2LABEL_5
    from dakter_hf.generation import encode_soft_labels, generated_features

    rng = np.random.default_rng(seed)
    probs = torch.from_numpy(2 * rng.normal(size=(num_rows, num_classes, size, size)).astype(np.float32)).softmax(1)
    names = SIMULATED_ID2LABEL_5 if num_classes == 5 else None
    Dataset.from_dict(
        {
            "image": [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(num_rows)],
            "soft_label": list(encode_soft_labels(probs)),
            "label": [p.argmax(0).numpy().astype(np.uint8) for p in probs],
            "seed": list(range(num_rows)),
        },
        features=generated_features(num_classes, size, size, id2label=names),
    ).save_to_disk(str(path))
    return str(path)


@pytest.fixture(scope="module")
def generated_dir(tmp_path_factory):
    return make_generated_dataset(tmp_path_factory.mktemp("generated") / "ds")


def base_args(output_dir, *extra) -> list[str]:
    return [
        "--dataset", "simulated", "--num_train_samples", "8", "--resolution", str(RESOLUTION), "--student", "tiny",
        "--train_batch_size", "4", "--max_eval_samples", "6", "--eval_batch_size", "8", "--output_dir", str(output_dir),
        *extra,
    ]


@pytest.fixture(scope="module")
def soft_run(tmp_path_factory, generated_dir):
    """A 4-step soft run with evaluations at steps 2 and 4."""
    output_dir = tmp_path_factory.mktemp("soft-run")
    previous = torch.get_num_threads()  # module fixtures run before the function-scoped `_one_thread`
    torch.set_num_threads(1)
    try:
        report = distill_command.main(base_args(
            output_dir, "--mode", "soft", "--generated_dataset", generated_dir, "--generated_ratio", "0.5",
            "--max_train_steps", "4", "--eval_steps", "2", "--checkpointing_steps", "2",
            "--checkpoints_total_limit", "1"))
    finally:
        torch.set_num_threads(previous)
    return output_dir, report


# ----------------------------------------------------------------------------------------------------------------------
# Library: the mixed stream
# ----------------------------------------------------------------------------------------------------------------------


def test_best_and_final_students_carry_their_cards(soft_run):
    output_dir, report = soft_run
    for name in ("best", "final"):
        card = ModelCard.load(output_dir / name / "README.md")
        scores = {r.metric_name: r.metric_value for r in card.data.eval_results}
        evaluation = report[name]
        assert scores["mIoU"] == pytest.approx(round(evaluation["mean_iou"], 4))
        per_class = {f"IoU {k[4:]}": v for k, v in evaluation.items() if k.startswith("iou_") and math.isfinite(v)}
        assert per_class and {k: scores[k] for k in per_class} == pytest.approx(
            {k: round(v, 4) for k, v in per_class.items()})
        assert card.data.pipeline_tag == "image-segmentation" and card.data.base_model is None  # a preset student
        assert f"this checkpoint: step {evaluation['step']}" in card.text


def test_batch_composition_and_ratio():
    from dakter_hf.distill.sampler import batch_composition, resolve_generated_ratio

    assert batch_composition(16, 0.8) == (3, 13)
    assert batch_composition(4, 0.0) == (4, 0)
    assert resolve_generated_ratio("auto", "soft", 100, 400) == pytest.approx(0.8)
    assert resolve_generated_ratio(0.3, "real", 100, 400) == 0.0
    with pytest.raises(ValueError, match="rounds to 0"):
        batch_composition(4, 0.05)
    with pytest.raises(ValueError, match="generated_ratio"):
        resolve_generated_ratio(1.5, "soft", 1, 1)


def test_mixed_batch_sampler_is_deterministic_balanced_and_shardable():
    from accelerate.data_loader import BatchSamplerShard

    from dakter_hf.distill import MixedBatchSampler

    sampler = MixedBatchSampler(num_real=6, num_generated=10, batch_size=4, generated_ratio=0.5, num_batches=9, seed=3)
    batches = list(sampler)
    assert len(batches) == 9 and all(len(b) == 4 for b in batches)
    assert all(sum(i >= 6 for i in b) == 2 for b in batches)  # 2 generated + 2 real in every batch
    assert batches == list(MixedBatchSampler(6, 10, 4, 0.5, 9, seed=3))  # a pure function of the seed
    assert batches != list(MixedBatchSampler(6, 10, 4, 0.5, 9, seed=4))
    real = [i for b in batches[:3] for i in b if i < 6]
    assert sorted(real) == list(range(6))  # one pass over the real set before any repetition
    assert sampler.batch(7) == batches[7]

    # Two processes with half the batch see, together, exactly the samples of the one-process batch of each step.
    single = list(MixedBatchSampler(6, 10, 8, 0.5, 5, seed=3))
    shards = [list(BatchSamplerShard(MixedBatchSampler(6, 10, 4, 0.5, 10, seed=3), num_processes=2, process_index=p))
              for p in range(2)]
    for step, batch in enumerate(single):
        assert sorted(shards[0][step] + shards[1][step]) == sorted(batch)


def test_distillation_dataset_decodes_resizes_and_matches_image_processor(generated_dir):
    import datasets

    from dakter_hf.data import load_dataset_by_name
    from dakter_hf.distill import create_image_processor
    from dakter_hf.distill.data import DistillationDataset, distillation_collate_fn
    from dakter_hf.generation import decode_soft_labels

    real = load_dataset_by_name("simulated", split="train", resolution=48, num_samples=3)
    generated = datasets.load_from_disk(generated_dir)
    dataset = DistillationDataset(real, generated, resolution=RESOLUTION)
    assert len(dataset) == 3 + len(generated)
    batch = distillation_collate_fn(dataset.__getitems__([0, 3, 4]))
    assert batch["is_generated"].tolist() == [False, True, True]
    assert batch["pixel_values"].shape == (3, 1, RESOLUTION, RESOLUTION)
    # real rows: the training transform equals the saved image processor (PIL bilinear resize, [-1, 1])
    processor = create_image_processor(RESOLUTION)
    expected = processor(images=[real[0]["image"]], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch["pixel_values"][:1], expected, rtol=0, atol=1e-6)
    assert batch["labels"][0].max() < 5
    # generated rows: decoded probabilities, labels ignored
    assert (batch["labels"][1:] == 255).all()
    stored = np.asarray(generated.with_format("numpy")[0]["soft_label"])
    torch.testing.assert_close(batch["soft_labels"][1], torch.from_numpy(decode_soft_labels(stored)))
    assert (batch["soft_labels"][0] == 0).all()
    # another training resolution: soft labels are resized and stay distributions
    upsampled = DistillationDataset(real, generated, resolution=64)[3]["soft_labels"]
    assert upsampled.shape == (5, 64, 64)
    torch.testing.assert_close(upsampled.sum(0), torch.ones(64, 64))


# ----------------------------------------------------------------------------------------------------------------------
# the distill command (examples/distill.py)
# ----------------------------------------------------------------------------------------------------------------------


def test_soft_run_writes_best_final_metrics_and_curves(soft_run):
    output_dir, report = soft_run
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["mode"] == "soft" and metrics["num_processes"] == 1 and metrics["global_step"] == 4
    assert metrics["batch_composition"] == {"real": 2, "generated": 2}
    assert [e["step"] for e in metrics["evaluations"]] == [2, 4]
    best = max(metrics["evaluations"], key=lambda e: e["mean_iou"])
    assert metrics["best"]["mean_iou"] == best["mean_iou"] and metrics["final"]["step"] == 4
    for key in ("mean_iou", "mean_f1", "pixel_accuracy", "iou_sea", "recall_oil_spill", "num_pixels"):
        assert key in metrics["final"]
    assert metrics["final"]["num_pixels"] == 6 * RESOLUTION * RESOLUTION
    assert set(metrics["final_train_losses"]) >= {"loss", "loss_real", "loss_generated"}
    assert (output_dir / "learning_curves.png").stat().st_size > 0
    assert [p.name for p in output_dir.glob("checkpoint-*")] == ["checkpoint-4"]  # checkpoints_total_limit 1
    for name in ("best", "final"):
        config = json.loads((output_dir / name / "config.json").read_text())
        assert config["id2label"]["1"] == "oil_spill" and config["num_channels"] == 1
        processor = json.loads((output_dir / name / "preprocessor_config.json").read_text())
        assert processor["size"] == {"height": RESOLUTION, "width": RESOLUTION}
        assert processor["image_mean"] == [0.5] and processor["image_std"] == [0.5]
    from transformers import SegformerForSemanticSegmentation

    final = SegformerForSemanticSegmentation.from_pretrained(output_dir / "final").state_dict()
    checkpoint = load_file(output_dir / "checkpoint-4" / "model.safetensors")  # accelerate: in-memory key names
    assert set(checkpoint) <= set(final) and all(torch.equal(final[k], checkpoint[k]) for k in checkpoint)


BLOCK_DAKTER = textwrap.dedent("""
    import importlib.abc, json, sys
    import numpy as np

    class BlockDakter(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "dakter_hf" or name.startswith("dakter_hf."):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockDakter())
    import PIL.Image
    import torch
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    model_dir, image_path, out_path = sys.argv[1:4]
    processor = AutoImageProcessor.from_pretrained(model_dir)
    model = AutoModelForSemanticSegmentation.from_pretrained(model_dir).eval()
    inputs = processor(images=PIL.Image.open(image_path), return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    try:
        import dakter_hf  # noqa: F401
        blocked = False
    except ImportError:
        blocked = True
    np.save(out_path, logits.numpy())
    print(json.dumps({"blocked": blocked, "loaded": sorted(m for m in sys.modules if m.startswith("dakter_hf"))}))
""")


def test_saved_student_predicts_identically_without_dakter_hf(soft_run, tmp_path):
    from transformers import SegformerForSemanticSegmentation

    from dakter_hf.data import load_dataset_by_name
    from dakter_hf.distill import DistillationDataset

    output_dir, _ = soft_run
    real = load_dataset_by_name("simulated", split="test", resolution=50, num_samples=1)  # native 50 -> resized to 32
    image_path = tmp_path / "image.png"
    real[0]["image"].save(image_path)
    # in-process: the training transform and the trained weights, no image processor involved
    model = SegformerForSemanticSegmentation.from_pretrained(output_dir / "best").eval()
    pixel_values = DistillationDataset(real, resolution=RESOLUTION)[0]["pixel_values"][None]
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits.numpy()

    script = tmp_path / "predict.py"
    script.write_text(BLOCK_DAKTER)
    result = subprocess.run(
        [sys.executable, str(script), str(output_dir / "best"), str(image_path), str(tmp_path / "logits.npy")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info == {"blocked": True, "loaded": []}
    logits = np.load(tmp_path / "logits.npy")
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)
    assert (logits.argmax(1) == expected.argmax(1)).all()


def test_evaluate_command_reproduces_training_evaluation(soft_run, capsys):
    output_dir, _ = soft_run
    out_json = output_dir / "eval.json"
    result = evaluate_command.main(["--model_name_or_path", str(output_dir / "final"), "--dataset", "simulated",
                                   "--split", "test", "--max_eval_samples", "6", "--output_json", str(out_json)])
    final = json.loads((output_dir / "metrics.json").read_text())["final"]
    for key, value in result["metrics"].items():
        assert value == pytest.approx(final[key], nan_ok=True), key
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "oil_spill" in printed and "precision" in printed
    assert json.loads(out_json.read_text())["metrics"]["mean_iou"] == pytest.approx(final["mean_iou"])


def test_evaluate_command_heldout_split_needs_a_training_subset(soft_run, capsys):
    output_dir, _ = soft_run
    with pytest.raises(SystemExit):
        evaluate_command.main(["--model_name_or_path", str(output_dir / "final"), "--dataset", "simulated",
                              "--split", "train_heldout"])
    assert "--split train_heldout needs a file dataset" in capsys.readouterr().err


def test_exact_resume(tmp_path, generated_dir):
    """N steps, stop, resume to 2N == 2N uninterrupted (data wraps around, augmentation and dropout active)."""
    common = ["--mode", "soft", "--generated_dataset", generated_dir, "--generated_ratio", "0.5", "--augment",
              "--lr_scheduler", "constant", "--num_train_samples", "4", "--eval_steps", "100",
              "--checkpointing_steps", "3"]
    distill_command.main(base_args(tmp_path / "full", *common, "--max_train_steps", "6"))
    distill_command.main(base_args(tmp_path / "resumed", *common, "--max_train_steps", "3"))
    distill_command.main(base_args(tmp_path / "resumed", *common, "--max_train_steps", "6",
                                  "--resume_from_checkpoint", "latest"))
    full = load_file(tmp_path / "full" / "final" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "final" / "model.safetensors")
    diff = max((full[k].float() - resumed[k].float()).abs().max().item() for k in full)
    assert diff <= 1e-6, diff
    full_log = [json.loads(line) for line in (tmp_path / "full" / "logs" / "train_log.jsonl").open()]
    resumed_log = [json.loads(line) for line in (tmp_path / "resumed" / "logs" / "train_log.jsonl").open()]
    assert [r["step"] for r in resumed_log] == list(range(1, 7))
    assert [r["loss"] for r in resumed_log] == pytest.approx([r["loss"] for r in full_log], abs=1e-6)


def test_real_and_hard_modes_share_the_budget(tmp_path, generated_dir):
    real = distill_command.main(base_args(tmp_path / "real", "--mode", "real", "--max_train_steps", "2",
                                         "--eval_steps", "2"))
    assert real["batch_composition"] == {"real": 4, "generated": 0} and real["global_step"] == 2
    hard = distill_command.main(base_args(tmp_path / "hard", "--mode", "hard", "--generated_dataset", generated_dir,
                                         "--max_train_steps", "2", "--eval_steps", "2"))
    # auto ratio: 12 generated / (8 real + 12 generated) = 0.6 -> round(2.4) = 2 of 4
    assert hard["generated_ratio"] == pytest.approx(0.6)
    assert hard["batch_composition"] == {"real": 2, "generated": 2} and hard["global_step"] == 2
    log = [json.loads(line) for line in (tmp_path / "hard" / "logs" / "train_log.jsonl").open()]
    assert all(r["num_generated"] == 2 and r["loss_generated"] > 0 for r in log)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mode", "soft"], "--mode soft needs --generated_dataset"),
        (["--mode", "real", "--student", "b9"], "--student 'b9'"),
        (["--mode", "real", "--resolution", "16"], "--resolution 16"),
        (["--mode", "real", "--resume_from_checkpoint", "checkpoint-7"], "--resume_from_checkpoint"),
        (["--mode", "hard", "--generated_dataset", "GEN", "--generated_ratio", "0.1"], "rounds to 0"),
        (["--mode", "hard", "--generated_dataset", "GEN", "--generated_ratio", "2"], "--generated_ratio"),
        (["--mode", "real", "--max_train_steps", "0"], "--max_train_steps"),
        (["--mode", "real", "--dataset", "sos"], "--data_dir"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, generated_dir, extra, message):
    extra = [generated_dir if e == "GEN" else e for e in extra]
    with pytest.raises(SystemExit) as error:
        distill_command.parse_args(base_args(tmp_path / "out", *extra))
    assert error.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_generated_dataset_with_other_classes_is_rejected_before_training(tmp_path, capsys):
    generated = make_generated_dataset(tmp_path / "gen-k2", num_rows=2, num_classes=2)
    with pytest.raises(SystemExit) as error:  # one line on stderr, exit code 2
        distill_command.main(base_args(tmp_path / "out", "--mode", "soft", "--generated_dataset", generated,
                                       "--max_train_steps", "2"))
    assert error.value.code == 2 and "K=2 classes but the real data has K=5" in capsys.readouterr().err
    assert not (tmp_path / "out" / "logs").exists()
    with pytest.raises(SystemExit) as error:
        distill_command.main(base_args(tmp_path / "out", "--mode", "soft", "--generated_dataset",
                                       str(tmp_path / "missing"), "--max_train_steps", "2"))
    assert error.value.code == 2 and "could not be loaded" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------------
# Hub
# ----------------------------------------------------------------------------------------------------------------------


def test_push_to_hub_then_from_pretrained_predicts_identically(tmp_path, generated_dir, hub_server, hub_repo_id):
    """Generated pairs read from a Hub dataset id, best student pushed with its image processor."""
    import datasets
    from transformers import AutoImageProcessor, SegformerForSemanticSegmentation

    generated_repo = f"{hub_repo_id}-generated"
    datasets.load_from_disk(generated_dir).push_to_hub(generated_repo)
    output_dir = tmp_path / "pushed"
    distill_command.main(base_args(output_dir, "--mode", "soft", "--generated_dataset", generated_repo,
                                  "--max_train_steps", "2", "--eval_steps", "2", "--push_to_hub",
                                  "--hub_model_id", hub_repo_id))
    files = set(hub_server.repo_files(hub_repo_id, "model"))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "metrics.json", "README.md"} <= files
    assert ".dakter_hf_owner.json" not in files  # save_student's marker stays local
    assert len(HfApi().list_repo_commits(hub_repo_id)) == 2  # created, then one commit with everything
    card = ModelCard.load(hub_repo_id)
    assert card.data.datasets == ["dakter-simulated", generated_repo] and hub_repo_id in card.text
    remote = SegformerForSemanticSegmentation.from_pretrained(hub_repo_id).eval()
    local = SegformerForSemanticSegmentation.from_pretrained(output_dir / "best").eval()
    processor = AutoImageProcessor.from_pretrained(hub_repo_id)
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8))
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        torch.testing.assert_close(remote(pixel_values=pixel_values).logits, local(pixel_values=pixel_values).logits,
                                   rtol=0, atol=0)
    assert remote.config.id2label == local.config.id2label

    # A pushed student is a starting point (`--student <Hub id>`) and can be scored by its Hub id.
    student = create_student(hub_repo_id, id2label=local.config.id2label, image_size=RESOLUTION)
    assert all(torch.equal(p, q) for p, q in zip(student.state_dict().values(), local.state_dict().values()))
    data = ["--dataset", "simulated", "--split", "test", "--max_eval_samples", "4", "--resolution", str(RESOLUTION)]
    by_id = evaluate_command.main(["--model_name_or_path", hub_repo_id, *data,
                                  "--output_json", str(tmp_path / "by_id.json")])
    by_path = evaluate_command.main(["--model_name_or_path", str(output_dir / "best"), *data,
                                    "--output_json", str(tmp_path / "by_path.json")])
    assert by_id["metrics"] == pytest.approx(by_path["metrics"], nan_ok=True)


def test_failed_push_reports_error_and_keeps_local_output(tmp_path, generated_dir, hub_server, hub_repo_id):
    from dakter_hf.hub import HubPushError

    hub_server.refuse_writes = True
    output_dir = tmp_path / "refused"
    with pytest.raises(HubPushError, match=rf"{hub_repo_id}.*local copy in {output_dir}/best is complete"):
        distill_command.main(base_args(output_dir, "--mode", "real", "--max_train_steps", "2", "--eval_steps", "2",
                                      "--push_to_hub", "--hub_model_id", hub_repo_id))
    for name in ("best/model.safetensors", "best/preprocessor_config.json", "final/config.json", "metrics.json",
                 "learning_curves.png"):
        assert (output_dir / name).is_file(), name


@needs_sos
def test_real_sos_is_scored_at_native_mask_size_by_both_scripts(tmp_path):
    """Training at 32x32, the 256x256 SOS masks are scored at 256x256 (logits upsampled), in distill.py and
    evaluate_student.py alike, even when --resolution is given."""
    data = ["--dataset", "sos", "--data_dir", str(SOS_DIR), "--sensor", "palsar"]
    report = distill_command.main([*data, "--num_train_samples", "8", "--resolution", str(RESOLUTION), "--student",
                                  "tiny", "--mode", "real", "--train_batch_size", "4", "--max_train_steps", "2",
                                  "--eval_steps", "2", "--max_eval_samples", "4", "--output_dir", str(tmp_path)])
    assert report["final"]["num_pixels"] == 4 * 256 * 256
    result = evaluate_command.main(["--model_name_or_path", str(tmp_path / "final"), *data, "--resolution",
                                   str(RESOLUTION), "--max_eval_samples", "4", "--output_json",
                                   str(tmp_path / "eval.json")])
    for key, value in result["metrics"].items():
        assert value == pytest.approx(report["final"][key], nan_ok=True), key
