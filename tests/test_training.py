"""Tests of joint diffusion training: library helpers, and the `examples/train_joint_diffusion.py` command
(`dakter_hf.commands.train`) run in-process."""

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from accelerate.utils import is_tensorboard_available
from safetensors import safe_open
from safetensors.torch import load_file

from dakter_hf import DAKTerPipeline, JointUNet2DModel, estimate_balancing_factor
from dakter_hf.commands import train as train_command
from dakter_hf.data import dataset_to_tensors, load_dataset_by_name
from dakter_hf.seeding import step_generator
from dakter_hf.training import (
    JOINT_UNET_PRESETS,
    JsonlLossLog,
    augment_batch,
    joint_unet_config,
    list_checkpoints,
    parse_label_scale,
    prune_checkpoints,
    resolve_resume_checkpoint,
    trainer,
)

from repo_scripts import load_script
from sos_layout import SOS_DIR, needs_sos


# A tiny model on a tiny simulated split: 12 scenes of 16x16, batches of 4 (3 batches per epoch).
TINY_ARGS = ["--dataset", "simulated", "--num_train_samples", "12", "--resolution", "16", "--model_size", "tiny",
             "--train_batch_size", "4", "--validation_inference_steps", "2", "--num_validation_samples", "2",
             "--seed", "0"]


@pytest.fixture(scope="module")
def script():
    """The command that `examples/train_joint_diffusion.py` runs."""
    assert load_script("examples/train_joint_diffusion.py").main is train_command.main
    return train_command


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(script, output_dir, *extra):
    """Run the training command's `main` in-process, with a fresh Accelerate state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    return script.main([*TINY_ARGS, "--output_dir", str(output_dir), *map(str, extra)])


def read_log(output_dir):
    with open(Path(output_dir) / "logs" / "train_log.jsonl") as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------------------------------------------------
# Library helpers
# ----------------------------------------------------------------------------------------------------------------------


def test_parse_label_scale():
    assert parse_label_scale("auto") == "auto"
    assert parse_label_scale("0.53") == pytest.approx(0.53)
    for bad in ("abc", "0", "-1", "nan", "inf"):
        with pytest.raises(Exception, match="--label_scale must be 'auto' or a positive float"):
            parse_label_scale(bad)


@pytest.mark.parametrize("architecture", ["dual", "concat"])
def test_presets(architecture):
    tiny = joint_unet_config("tiny", resolution=16, num_classes=2, label_scale=0.5, architecture=architecture)
    assert tiny["block_out_channels"] == (16, 32) and tiny["layers_per_block"] == 1
    assert tiny["norm_num_groups"] == 8
    assert not any("Attn" in t for t in tiny["down_block_types"] + tiny["up_block_types"])
    small = JointUNet2DModel(**joint_unet_config("small", resolution=64, num_classes=2, label_scale=0.5,
                                                 architecture=architecture))
    assert 1e6 <= sum(p.numel() for p in small.parameters()) <= 3e6
    override = joint_unet_config("small", resolution=64, num_classes=5, label_scale=0.5, block_out_channels=[32, 64])
    assert override["block_out_channels"] == (32, 64)
    assert override["down_block_types"] == ("DownBlock2D", "AttnDownBlock2D")
    assert override["up_block_types"] == ("AttnUpBlock2D", "UpBlock2D")
    with pytest.raises(ValueError, match="model_size"):
        joint_unet_config("huge", resolution=64, num_classes=2, label_scale=1.0)
    assert set(JOINT_UNET_PRESETS) == {"tiny", "small", "base"}


def test_checkpoint_helpers(tmp_path):
    for step in (5, 20, 10, 15):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-x").mkdir()
    assert [os.path.basename(p) for p in list_checkpoints(tmp_path)] == [f"checkpoint-{s}" for s in (5, 10, 15, 20)]
    assert resolve_resume_checkpoint(tmp_path, "latest").endswith("checkpoint-20")
    assert resolve_resume_checkpoint(tmp_path, "checkpoint-10").endswith("checkpoint-10")
    assert resolve_resume_checkpoint(tmp_path / "empty", "latest") is None
    assert resolve_resume_checkpoint(tmp_path, None) is None
    with pytest.raises(FileNotFoundError, match="--resume_from_checkpoint"):
        resolve_resume_checkpoint(tmp_path, "checkpoint-99")
    removed = prune_checkpoints(tmp_path, total_limit=2)  # keeps room for the next save
    assert [os.path.basename(p) for p in removed] == ["checkpoint-5", "checkpoint-10", "checkpoint-15"]
    assert [os.path.basename(p) for p in list_checkpoints(tmp_path)] == ["checkpoint-20"]
    assert prune_checkpoints(tmp_path, total_limit=None) == []


def test_loss_log_truncates_on_resume(tmp_path):
    path = tmp_path / "logs" / "log.jsonl"
    log = JsonlLossLog.start(path)
    for step in range(1, 6):
        log.append(step, loss=float(step), image_loss=1.0, label_loss=float(step) - 1)
    # Opening a log to read it leaves it as it is.
    assert [r["step"] for r in JsonlLossLog(path).read()] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in JsonlLossLog(path).read()] == [1, 2, 3, 4, 5]
    resumed = JsonlLossLog.start(path, resume_step=3)
    assert [r["step"] for r in resumed.read()] == [1, 2, 3]
    assert resumed.history()["loss"] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert resumed.final_means(last=2) == {"loss": 2.5, "image_loss": 1.0, "label_loss": 1.5, "num_steps_averaged": 2}
    assert JsonlLossLog.start(path).read() == [] and not list(path.parent.glob("*.tmp"))  # a new run starts empty


def test_step_generator_and_augmentation():
    images = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16)
    masks = torch.arange(2 * 16 * 16).reshape(2, 16, 16)
    first = augment_batch(images, masks, step_generator(3, 5, 1), crop_size=8, dihedral=True)
    second = augment_batch(images, masks, step_generator(3, 5, 1), crop_size=8, dihedral=True)
    others = [augment_batch(images, masks, g, crop_size=8, dihedral=True)[0]
              for g in (step_generator(3, 6, 1), step_generator(3, 5, 0), step_generator(4, 5, 1))]
    assert all(not torch.equal(first[0], other) for other in others)  # steps, processes and seeds draw apart
    assert first[0].shape == (2, 1, 8, 8) and first[1].shape == (2, 8, 8)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert torch.equal(first[0][:, 0].long(), first[1])  # image and mask cropped / transformed identically
    with pytest.raises(ValueError, match="crop_size"):
        augment_batch(images, masks, crop_size=32)


# ----------------------------------------------------------------------------------------------------------------------
# The training script
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--label_scale", "abc"], "--label_scale must be 'auto' or a positive float"),
        (["--label_scale", "-0.5"], "--label_scale must be 'auto' or a positive float"),
        (["--model_size", "small", "--resolution", "18"], "--resolution=18 must be a positive multiple of 4"),
        (["--crop_size", "7"], "--crop_size=7 must be a positive multiple of 2"),
        (["--dataset", "sos"], "--dataset sos needs --data_dir"),
        (["--dataset", "sos", "--data_dir", "/nonexistent/sos", "--sensor", "palsar"], "is not a directory"),
        (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit must be a positive integer"),
        pytest.param(["--report_to", "tensorboard"], "--report_to tensorboard: the package is not installed",
                     marks=pytest.mark.skipif(bool(is_tensorboard_available()), reason="tensorboard is installed")),
    ],
)
def test_bad_arguments(script, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        script.parse_args([*TINY_ARGS, "--output_dir", str(tmp_path), *extra])
    assert message in capsys.readouterr().err


def test_missing_resume_checkpoint(script, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # one line on stderr, exit code 2
        run(script, tmp_path, "--resume_from_checkpoint", str(tmp_path / "checkpoint-7"))
    assert exit_info.value.code == 2 and "--resume_from_checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()  # failed before any work


@pytest.fixture(scope="module")
def trained(script, tmp_path_factory):
    """One 40-step run: falling loss, 'auto' label scale, checkpoint pruning, saved pipeline, card."""
    output_dir = tmp_path_factory.mktemp("joint-diffusion")
    run(script, output_dir, "--max_train_steps", 40, "--learning_rate", 2e-3, "--lr_scheduler", "constant",
        "--checkpointing_steps", 10, "--checkpoints_total_limit", 2, "--validation_steps", 20,
        "--prediction_type", "epsilon", "--num_train_timesteps", 200, "--architecture", "concat")
    return output_dir


def test_loss_falls(trained):
    losses = [r["loss"] for r in read_log(trained)]
    assert len(losses) == 40
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.8 * first, (first, last)


def test_auto_label_scale_is_stored(trained):
    dataset = load_dataset_by_name("simulated", split="train", resolution=16, num_samples=12, seed=0)
    expected = estimate_balancing_factor(dataset_to_tensors(dataset, 16)[0])
    config = json.loads((trained / "unet" / "config.json").read_text())
    assert config["label_scale"] == pytest.approx(expected, rel=1e-6)
    assert f"{expected:.6f}" in (trained / "README.md").read_text()


def test_checkpoints_pruned(trained):
    assert [os.path.basename(p) for p in list_checkpoints(trained)] == ["checkpoint-30", "checkpoint-40"]
    assert not (trained / "checkpoint-10").exists() and not (trained / "checkpoint-20").exists()


def test_outputs_and_card(trained):
    assert sorted(os.listdir(trained / "validation")) == ["step-000020.png", "step-000040.png"]
    assert (trained / "loss_curve.png").stat().st_size > 0
    card = (trained / "README.md").read_text()
    for needle in ("Resolution: 16x16", "`concat`", "Steps: 40", "mean over the last 40 steps",
                   "DAKTerPipeline.from_pretrained", "No generation quality",
                   "- Data: `simulated`, training split: 12 examples (synthetic scenes"):
        assert needle in card
    final = sum(r["loss"] for r in read_log(trained)) / 40
    assert f"total {final:.4f}" in card


def test_saved_pipeline_generates(trained):
    pipe = DAKTerPipeline.from_pretrained(trained)
    assert pipe.scheduler.config.num_train_timesteps == 200
    assert pipe.scheduler.config.prediction_type == pipe.unet.config.prediction_type == "epsilon"
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (2, 16, 16, 1) and out.soft_labels.shape == (2, 16, 16, 5)
    assert out.labels.shape == (2, 16, 16)
    assert torch.allclose(torch.from_numpy(out.soft_labels).sum(-1), torch.ones(2, 16, 16), atol=1e-5)


def test_saved_pipeline_carries_the_class_names(trained, tmp_path):
    """The trainer saves the dataset's class names with the pipeline, so a generated dataset is named like it."""
    from dakter_hf.data import SIMULATED_ID2LABEL_5
    from dakter_hf.generation import generate_dataset, get_generated_id2label

    index = json.loads((trained / "model_index.json").read_text())
    assert index["id2label"] == {str(k): v for k, v in SIMULATED_ID2LABEL_5.items()}
    pipe = DAKTerPipeline.from_pretrained(trained)
    assert pipe.id2label == SIMULATED_ID2LABEL_5
    generated = generate_dataset(pipe, 1, batch_size=1, num_inference_steps=2)
    assert get_generated_id2label(generated) == SIMULATED_ID2LABEL_5


@pytest.mark.parametrize("accumulation", [1, 2])
def test_resume_is_exact(script, tmp_path, accumulation):
    """8 steps uninterrupted == 4 steps, interruption, resume from checkpoint-4 to 8 (EMA, crops, augmentation,
    warm-up + cosine learning rate, a resume in the middle of an epoch, gradient accumulation)."""
    extra = ["--max_train_steps", 8, "--checkpointing_steps", 4, "--validation_steps", 100, "--use_ema",
             "--augment", "--crop_size", 8, "--lr_warmup_steps", 2, "--learning_rate", 1e-3,
             "--gradient_accumulation_steps", accumulation]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run(script, full, *extra)
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-4", resumed / "checkpoint-4")  # everything an interrupted run had left
    run(script, resumed, *extra, "--resume_from_checkpoint", "latest")
    for weights in ("unet/diffusion_pytorch_model.safetensors", "checkpoint-8/model.safetensors"):
        a, b = load_file(full / weights), load_file(resumed / weights)
        assert a.keys() == b.keys()
        assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6, weights
    ema_full, ema_resumed = (load_file(d / "checkpoint-8" / "ema.safetensors") for d in (full, resumed))  # no pickle
    for run_dir in (full, resumed):
        with safe_open(run_dir / "checkpoint-8" / "ema.safetensors", framework="pt") as f:
            assert json.loads(f.metadata()["ema_state"])["optimization_step"] == 8
    assert ema_full.keys() == ema_resumed.keys() and len(ema_full) == len(list(JointUNet2DModel.from_pretrained(
        full / "unet").parameters()))
    assert all(torch.allclose(ema_full[k], ema_resumed[k], atol=1e-6) for k in ema_full)
    # The EMA weights (not the raw ones) were saved in the pipeline.
    raw = load_file(full / "checkpoint-8" / "model.safetensors")
    saved = load_file(full / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(raw[k], saved[k]) for k in raw)
    assert [r["step"] for r in read_log(resumed)] == [5, 6, 7, 8]
    assert [r["loss"] for r in read_log(resumed)] == pytest.approx([r["loss"] for r in read_log(full)][4:], abs=1e-6)


def test_stop_and_continue_is_exact(script, tmp_path):
    """A finished 4-step run continued to 8 steps (constant learning rate after warm-up) == 8 steps at once."""
    extra = ["--checkpointing_steps", 100, "--validation_steps", 100, "--lr_scheduler", "constant_with_warmup",
             "--lr_warmup_steps", 2, "--learning_rate", 1e-3, "--augment"]
    full, continued = tmp_path / "full", tmp_path / "continued"
    run(script, full, "--max_train_steps", 8, *extra)
    run(script, continued, "--max_train_steps", 4, *extra)
    assert [os.path.basename(p) for p in list_checkpoints(continued)] == ["checkpoint-4"]  # saved at the end
    run(script, continued, "--max_train_steps", 8, "--resume_from_checkpoint", "latest", *extra)
    weights = "unet/diffusion_pytorch_model.safetensors"
    a, b = load_file(full / weights), load_file(continued / weights)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert [r["step"] for r in read_log(continued)] == list(range(1, 9))


def test_push_to_hub(script, tmp_path, hub_server, hub_repo_id):
    run(script, tmp_path, "--max_train_steps", 2, "--checkpointing_steps", 1, "--validation_steps", 100,
        "--push_to_hub", "--hub_model_id", hub_repo_id)
    files = set(hub_server.repo_files(hub_repo_id, "model"))
    assert {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "scheduler/scheduler_config.json", "README.md"} <= files
    assert not any(f.startswith("checkpoint-") for f in files)
    assert ".dakter_hf.lock" not in files  # the run's lock (held during the push) is not uploaded
    assert hub_repo_id in (tmp_path / "README.md").read_text()


@pytest.mark.parametrize("failure", ["refused", "down"])
def test_unreachable_hub_fails_before_training(script, tmp_path, hub_server, hub_repo_id, failure):
    from dakter_hf.hub import HubPushError

    if failure == "refused":
        hub_server.refuse_writes = True
    else:
        hub_server.stop()
    with pytest.raises(HubPushError, match=rf"{hub_repo_id}.*nothing was run"):
        run(script, tmp_path, "--max_train_steps", 2, "--push_to_hub", "--hub_model_id", hub_repo_id)
    assert not list_checkpoints(tmp_path) and not (tmp_path / "model_index.json").exists()


def test_failed_final_push_keeps_the_local_output(script, tmp_path, hub_server, hub_repo_id, monkeypatch):
    """The repository exists, the upload at the end is refused: a clear error, and the saved pipeline is complete."""
    from dakter_hf.hub import HubPushError

    original = trainer.create_hub_repo

    def create_then_refuse(*args, **kwargs):
        repo_id = original(*args, **kwargs)
        hub_server.refuse_writes = True
        return repo_id

    monkeypatch.setattr(trainer, "create_hub_repo", create_then_refuse)
    with pytest.raises(HubPushError, match=rf"{hub_repo_id}.*local copy in {tmp_path} is complete"):
        run(script, tmp_path, "--max_train_steps", 2, "--validation_steps", 100, "--push_to_hub",
            "--hub_model_id", hub_repo_id)
    pipe = DAKTerPipeline.from_pretrained(tmp_path)
    assert pipe(batch_size=1, num_inference_steps=2, output_type="np").images.shape == (1, 16, 16, 1)
    assert (tmp_path / "README.md").is_file() and list_checkpoints(tmp_path)


@needs_sos
def test_sos_smoke(script, tmp_path):
    run(script, tmp_path, "--dataset", "sos", "--data_dir", SOS_DIR, "--sensor", "palsar", "--resolution", 32,
        "--num_train_samples", 8, "--max_train_steps", 4, "--checkpointing_steps", 4, "--validation_steps", 100)
    losses = [r["loss"] for r in read_log(tmp_path)]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    assert config["num_classes"] == 2 and config["sample_size"] == 32
