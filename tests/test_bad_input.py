"""The bad-input corpus: what a new user can get wrong, and interruptions, corruption and concurrent runs.

Every case builds its data on the fly (tiny image / mask folders, tiny models, tiny generated datasets), runs a
command the way a user would (the example scripts' and `dakter-generate`'s `main(argv)`; one case in a real
subprocess) and checks three things: the exit code (2, as argparse uses), a one-line message on stderr that names the
file or argument and what was expected (no traceback), and that nothing the user had was lost or overwritten.
"""

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from dakter_hf import DAKTerPipeline
from dakter_hf.commands.generate import main as generate_main
from dakter_hf.data.generated import generated_features
from dakter_hf.errors import NonFiniteError, OutputLockedError
from dakter_hf.filesystem import OWNER_MARKER, OutputDirLock, commit_directory, remove_owned, start_staging
from dakter_hf.generation import GenerationProgress, generate_to_disk
from dakter_hf.labels import encode_soft_labels
from dakter_hf.training import list_checkpoints, resolve_resume_checkpoint

from repo_scripts import REPO_ROOT, load_script
from tiny_models import make_unet_output_nan, tiny_pipeline


train_script = load_script("examples/train_joint_diffusion.py")
distill_script = load_script("examples/distill.py")

TRAIN_ARGS = ["--dataset", "simulated", "--num_train_samples", "8", "--resolution", "16", "--model_size", "tiny",
              "--train_batch_size", "4", "--validation_inference_steps", "2", "--num_validation_samples", "2",
              "--validation_steps", "1000", "--seed", "0"]
DISTILL_ARGS = ["--dataset", "simulated", "--num_train_samples", "8", "--resolution", "32", "--student", "tiny",
                "--train_batch_size", "4", "--max_eval_samples", "4", "--eval_batch_size", "4"]


@pytest.fixture(autouse=True)
def fresh_log_handlers():
    """The commands call `logging.basicConfig`, which binds stderr once: give each test's captured stderr its own."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []
    yield
    root.handlers = saved


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reset_accelerate():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def train(output_dir, *extra):
    _reset_accelerate()
    return train_script.main([*TRAIN_ARGS, "--output_dir", str(output_dir), *map(str, extra)])


def train_on_files(output_dir, *extra):
    """The training script on a file dataset given in `extra` (`--dataset ... --data_dir ...`), every pair."""
    _reset_accelerate()
    return train_script.main([*TRAIN_ARGS[4:], "--output_dir", str(output_dir), *map(str, extra)])


def distill(output_dir, *extra):
    _reset_accelerate()
    return distill_script.main([*DISTILL_ARGS, "--output_dir", str(output_dir), *map(str, extra)])


def generate(pipeline_dir, output_dir, *extra):
    _reset_accelerate()
    return generate_main(["--pipeline", str(pipeline_dir), "--num_samples", "2", "--batch_size", "2",
                          "--num_inference_steps", "2", "--output_dir", str(output_dir), *map(str, extra)])


def expect_error(capsys, run, *args) -> str:
    """Run a command that must fail: exit code 2 and ONE line on stderr (its last), no traceback. Returns it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def snapshot(path) -> dict:
    """Every file under `path` with its bytes: to check that nothing was lost or overwritten."""
    path = Path(path)
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipeline") / "joint"
    tiny_pipeline().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def nan_pipeline_dir(tmp_path_factory):
    """A pipeline whose weights diverged (what a run with --learning_rate 1e8 used to save)."""
    pipe = tiny_pipeline()
    with torch.no_grad():
        next(pipe.unet.parameters()).fill_(float("nan"))
    path = tmp_path_factory.mktemp("nan-pipeline") / "joint"
    pipe.save_pretrained(path)
    return path


def generated_dataset(path, num_rows=4, num_classes=5, size=32, nan=False):
    """A generated dataset (float32 soft labels), all NaN with `nan=True` (what a NaN generator used to produce)."""
    from datasets import Dataset

    rng = np.random.default_rng(0)
    probs = torch.from_numpy(rng.normal(size=(num_rows, num_classes, size, size)).astype(np.float32)).softmax(1)
    if nan:
        probs[:] = float("nan")
    Dataset.from_dict(
        {"image": [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(num_rows)],
         "soft_label": list(encode_soft_labels(probs, "float32")),
         "label": [np.zeros((size, size), np.uint8) for _ in range(num_rows)],
         "seed": list(range(num_rows))},
        features=generated_features(num_classes, size, size, soft_label_dtype="float32"),
    ).save_to_disk(str(path))
    return str(path)


# ----------------------------------------------------------------------------------------------------------------------
# Arguments that used to run silently (or crash late): refused before any work
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lr_warmup_steps", "-5"], "--lr_warmup_steps must be >= 0, got -5"),
        (["--num_train_samples", "0"], "--num_train_samples must be a positive integer, got 0"),
        (["--dataset", "simulated", "--data_dir", "DATA", "--sensor", "palsar"], "--data_dir is read by --dataset"),
        (["--max_grad_norm", "-1"], "--max_grad_norm must be >= 0"),
    ],
)
def test_training_arguments(tmp_path, capsys, extra, message):
    (tmp_path / "data").mkdir()
    extra = [str(tmp_path / "data") if e == "DATA" else e for e in extra]
    line = expect_error(capsys, train, tmp_path / "out", *extra)
    assert message in line
    assert not (tmp_path / "out").exists()


def test_data_dir_without_dataset_is_refused_in_distillation(tmp_path, capsys):
    (tmp_path / "sos").mkdir()
    line = expect_error(capsys, distill, tmp_path / "out", "--mode", "real", "--data_dir", tmp_path / "sos")
    assert "--data_dir is read by --dataset sos / osd / folder" in line and "simulated" in line


def test_unknown_eval_split_of_simulated_data(tmp_path, capsys):
    line = expect_error(capsys, distill, tmp_path / "out", "--mode", "real", "--eval_split", "nosuch")
    assert "split 'nosuch' does not exist for --dataset simulated" in line
    assert not (tmp_path / "out").exists()


def test_evaluation_output_json_that_is_a_directory(tmp_path, capsys):
    from dakter_hf.commands.evaluate import main as evaluate_main

    (tmp_path / "results").mkdir()
    line = expect_error(capsys, evaluate_main, ["--model_name_or_path", str(tmp_path / "student"),
                                                "--output_json", str(tmp_path / "results")])
    assert f"--output_json '{tmp_path / 'results'}' is a directory" in line
    assert os.listdir(tmp_path / "results") == []


def test_unloadable_student_and_evaluated_model(tmp_path, capsys):
    from dakter_hf.commands.evaluate import main as evaluate_main

    student = tmp_path / "student"
    student.mkdir()
    (student / "config.json").write_text('{"model_type": "segformer", ')  # truncated
    line = expect_error(capsys, distill, tmp_path / "out", "--mode", "real", "--student", student)
    assert f"--student {student}" in line and "loadable pretrained directory" in line
    line = expect_error(capsys, evaluate_main, ["--model_name_or_path", str(student), "--dataset", "simulated"])
    assert f"--model_name_or_path '{student}' could not be loaded" in line
    assert sorted(os.listdir(student)) == ["config.json"]


def test_missing_checkpoint_fails_before_work(tmp_path, capsys):
    line = expect_error(capsys, train, tmp_path / "out", "--resume_from_checkpoint", tmp_path / "checkpoint-7")
    assert "--resume_from_checkpoint" in line and "checkpoint-7" in line
    assert not (tmp_path / "out").exists()  # the lock's directory is removed again when nothing was written


def test_output_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "results.txt"
    path.write_text("my results")
    line = expect_error(capsys, train, path, "--max_train_steps", 1)
    assert f"--output_dir {path}" in line and "is not a directory" in line
    assert path.read_text() == "my results"


def test_resume_with_another_model_is_one_clear_line(tmp_path, capsys):
    train(tmp_path / "out", "--max_train_steps", 1, "--checkpointing_steps", 1)
    line = expect_error(capsys, train, tmp_path / "out", "--max_train_steps", 2, "--block_out_channels", 8, 16,
                        "--resume_from_checkpoint", "latest")
    assert "checkpoint-1 cannot be resumed" in line and "settings of the run that wrote it" in line


# ----------------------------------------------------------------------------------------------------------------------
# The class set: explicit or checked, never inferred from a stray value
# ----------------------------------------------------------------------------------------------------------------------


def mask_folder(root, masks: dict) -> Path:
    """`<root>/train/images/<name>.png` (random grey) + `<root>/train/masks/<name>.png` (the given arrays)."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / "train" / sub).mkdir(parents=True)
    for name, mask in masks.items():
        PIL.Image.fromarray(rng.integers(0, 256, mask.shape, dtype=np.uint8)).save(root / "train" / "images" / name)
        PIL.Image.fromarray(mask.astype(np.uint8)).save(root / "train" / "masks" / name)
    return root


def test_stray_mask_value_does_not_add_classes(tmp_path, capsys):
    clean = np.arange(16 * 16).reshape(16, 16) % 5  # classes 0..4
    stray = clean.copy()
    stray[3, 3] = 7  # one pixel
    data = mask_folder(tmp_path / "data", {"a.png": clean, "b.png": stray})
    line = expect_error(capsys, train_on_files, tmp_path / "out", "--dataset", "folder", "--data_dir", data)
    assert "values 5..6 occur in no mask" in line and "b.png" in line and "a.png" not in line
    assert "--num_classes" in line
    line = expect_error(capsys, train_on_files, tmp_path / "out", "--dataset", "folder", "--data_dir", data,
                        "--num_classes", 5)
    assert "b.png has value(s) [7] outside 0..4" in line
    assert not (tmp_path / "out" / "checkpoint-1").exists() and not (tmp_path / "out" / "logs").exists()


def test_binary_0_255_masks_need_a_threshold(tmp_path, capsys):
    mask = np.zeros((16, 16))
    mask[4:12, 4:12] = 255
    data = mask_folder(tmp_path / "data", {"a.png": mask, "b.png": mask})
    line = expect_error(capsys, train_on_files, tmp_path / "out", "--dataset", "folder", "--data_dir", data)
    assert "--mask_threshold 127" in line and "a.png" in line


def test_sos_masks_stored_as_0_1_are_refused(tmp_path, capsys):
    from sos_layout import write_sos_release

    root = write_sos_release(tmp_path / "sos")
    bad = root / "train" / "palsar" / "10001_mask.png"
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 1
    PIL.Image.fromarray(mask).save(bad)
    line = expect_error(capsys, train_on_files, tmp_path / "out", "--dataset", "sos", "--data_dir", root,
                        "--sensor", "palsar")
    assert str(bad) in line and "0/1 values" in line


# ----------------------------------------------------------------------------------------------------------------------
# Non-finite values: a diverged run stops, and nothing non-finite is saved, generated or reported
# ----------------------------------------------------------------------------------------------------------------------


def test_diverging_training_stops_and_saves_nothing_non_finite(tmp_path, capsys):
    output_dir = tmp_path / "out"
    line = expect_error(capsys, train, output_dir, "--max_train_steps", 6, "--checkpointing_steps", 1,
                        "--learning_rate", 1e30, "--lr_scheduler", "constant", "--lr_warmup_steps", 0)
    assert "non-finite" in line and "step" in line
    assert not (output_dir / "model_index.json").exists()  # no pipeline of a diverged model
    from safetensors.torch import load_file

    for checkpoint in list_checkpoints(output_dir):  # every checkpoint written holds finite weights
        weights = load_file(os.path.join(checkpoint, "model.safetensors"))
        assert all(torch.isfinite(t).all() for t in weights.values()), checkpoint
    assert not list(output_dir.glob("*.incomplete"))


def test_nan_pipeline_generates_nothing(nan_pipeline_dir, tmp_path, capsys):
    line = expect_error(capsys, generate, nan_pipeline_dir, tmp_path / "generated")
    assert "non-finite weights" in line and str(nan_pipeline_dir) in line
    assert sorted(os.listdir(tmp_path)) == []  # no dataset, no shards, no lock left behind


def test_nan_model_outputs_are_refused(pipeline_dir, tmp_path):
    pipe = make_unet_output_nan(DAKTerPipeline.from_pretrained(pipeline_dir))
    with pytest.raises(NonFiniteError, match="non-finite images"):
        generate_to_disk(pipe, tmp_path / "generated", 2, batch_size=2, num_inference_steps=2)
    assert not (tmp_path / "generated").exists()
    assert [n for n in os.listdir(tmp_path / "generated.partial") if n.startswith("shard-")] == []


def test_distillation_on_nan_soft_labels_reports_nothing(tmp_path, capsys):
    generated = generated_dataset(tmp_path / "gen", nan=True)
    line = expect_error(capsys, distill, tmp_path / "out", "--mode", "soft", "--generated_dataset", generated,
                        "--max_train_steps", 2, "--eval_steps", 2)
    assert "non-finite loss at step 1" in line
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert not (tmp_path / "out" / "best").exists() and not (tmp_path / "out" / "final").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints: crash-safe saves, unreadable checkpoints, no pickle
# ----------------------------------------------------------------------------------------------------------------------


class Killed(BaseException):
    """Stands for a kill in the middle of a save (a BaseException, like KeyboardInterrupt)."""


def test_interrupted_checkpoint_save_resumes_from_the_previous_one(tmp_path, monkeypatch):
    from accelerate import Accelerator

    reference = tmp_path / "reference"
    train(reference, "--max_train_steps", 4, "--checkpointing_steps", 2, "--checkpoints_total_limit", 1)

    output_dir = tmp_path / "out"
    save_state = Accelerator.save_state

    def killed_during_save(self, output_dir=None, **kwargs):
        result = save_state(self, output_dir, **kwargs)
        if "checkpoint-4" in str(output_dir):  # half-written: an empty optimizer file, then the kill
            open(os.path.join(output_dir, "optimizer.bin"), "wb").close()
            raise Killed
        return result

    monkeypatch.setattr(Accelerator, "save_state", killed_during_save)
    with pytest.raises(Killed):
        train(output_dir, "--max_train_steps", 4, "--checkpointing_steps", 2, "--checkpoints_total_limit", 1)
    monkeypatch.undo()
    # the limit of 1 did not delete checkpoint-2 before checkpoint-4 was complete; `latest` is the complete one
    assert [os.path.basename(p) for p in list_checkpoints(output_dir)] == ["checkpoint-2"]
    assert resolve_resume_checkpoint(output_dir, "latest").endswith("checkpoint-2")
    train(output_dir, "--max_train_steps", 4, "--checkpointing_steps", 2, "--checkpoints_total_limit", 1,
          "--resume_from_checkpoint", "latest")
    assert [os.path.basename(p) for p in list_checkpoints(output_dir)] == ["checkpoint-4"]
    assert not (output_dir / "checkpoint-4.incomplete").exists()
    assert (snapshot(output_dir / "checkpoint-4")["model.safetensors"]
            == snapshot(reference / "checkpoint-4")["model.safetensors"])  # the resume is exact


def test_truncated_checkpoint_is_one_clear_line(tmp_path, capsys):
    output_dir = tmp_path / "out"
    train(output_dir, "--max_train_steps", 2, "--checkpointing_steps", 2)
    open(output_dir / "checkpoint-2" / "optimizer.bin", "wb").close()  # a checkpoint of an older, unsafe version
    line = expect_error(capsys, train, output_dir, "--max_train_steps", 4, "--resume_from_checkpoint", "latest")
    assert "checkpoint-2 cannot be resumed" in line


class _Exploit:
    """Unpickling this creates a file: the proof that a pickle was loaded."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_ema_is_saved_as_safetensors_and_no_pickle_is_loaded(tmp_path, capsys):
    output_dir = tmp_path / "out"
    train(output_dir, "--max_train_steps", 2, "--checkpointing_steps", 2, "--use_ema")
    checkpoint = output_dir / "checkpoint-2"
    names = sorted(os.listdir(checkpoint))
    assert "ema.safetensors" in names and not [n for n in names if n.startswith("custom_checkpoint")]
    # a crafted checkpoint with Accelerate's pickled custom-object file: resuming never unpickles it
    marker = tmp_path / "pwned"
    with open(checkpoint / "custom_checkpoint_0.pkl", "wb") as f:
        pickle.dump(_Exploit(str(marker)), f)
    line = expect_error(capsys, train, output_dir, "--max_train_steps", 3, "--use_ema", "--resume_from_checkpoint",
                        "latest")
    assert "custom_checkpoint_0.pkl" in line and "never loaded" in line
    assert not marker.exists()
    os.remove(checkpoint / "custom_checkpoint_0.pkl")
    train(output_dir, "--max_train_steps", 3, "--checkpointing_steps", 3, "--use_ema",
          "--resume_from_checkpoint", "latest")
    assert not marker.exists()
    assert (output_dir / "checkpoint-3" / "ema.safetensors").is_file()


def test_interrupted_student_save_keeps_the_previous_student(tmp_path, monkeypatch):
    from dakter_hf.distill import create_image_processor, create_student, save_student

    best = tmp_path / "best"
    processor = create_image_processor(32)
    save_student(create_student("tiny", id2label={0: "sea", 1: "oil"}, image_size=32, num_channels=1), processor, best)
    before = snapshot(best)

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(type(processor), "save_pretrained", killed)
    torch.manual_seed(1)
    with pytest.raises(Killed):  # a kill while the new best student is written
        save_student(create_student("tiny", id2label={0: "sea", 1: "oil"}, image_size=32, num_channels=1),
                     processor, best)
    assert snapshot(best) == before  # the previous best student is complete and untouched
    monkeypatch.undo()
    save_student(create_student("tiny", id2label={0: "sea", 1: "oil"}, image_size=32, num_channels=1), processor, best)
    assert snapshot(best) != before and sorted(os.listdir(tmp_path)) == ["best"]


def test_atomic_directory_commit_and_ownership(tmp_path):
    target = tmp_path / "checkpoint-1"
    staging = start_staging(target, "tester")
    (Path(staging) / "weights").write_text("new")
    commit_directory(staging, target, "tester")
    assert (target / "weights").read_text() == "new" and not Path(staging).exists()
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "notes.txt").write_text("keep me")
    with pytest.raises(Exception, match="was not created by tester"):
        remove_owned(user_dir, "tester")
    with pytest.raises(Exception, match="was not created by tester"):
        commit_directory(start_staging(user_dir, "tester"), user_dir, "tester")
    assert (user_dir / "notes.txt").read_text() == "keep me"
    assert remove_owned(target, "tester") and not target.exists()


# ----------------------------------------------------------------------------------------------------------------------
# Generation never deletes what it did not create
# ----------------------------------------------------------------------------------------------------------------------


def test_generation_leaves_a_foreign_partial_directory_alone(pipeline_dir, tmp_path, capsys):
    partial = tmp_path / "generated.partial"
    partial.mkdir()
    (partial / "notes.txt").write_text("my notes")
    line = expect_error(capsys, generate, pipeline_dir, tmp_path / "generated")
    assert str(partial) in line and "was not created by dakter-generate" in line
    assert (partial / "notes.txt").read_text() == "my notes"


def test_overwrite_refuses_a_directory_that_is_not_a_dataset(pipeline_dir, tmp_path, capsys):
    output_dir = tmp_path / "generated"
    output_dir.mkdir()
    (output_dir / "thesis.tex").write_text("three years of work")
    line = expect_error(capsys, generate, pipeline_dir, output_dir, "--overwrite")
    assert "--overwrite replaces a dataset only" in line and str(output_dir) in line
    assert snapshot(output_dir) == {"thesis.tex": b"three years of work"}
    assert not (tmp_path / "generated.partial").exists()  # refused before generating anything


def test_overwrite_replaces_a_dataset_but_not_a_foreign_old_directory(pipeline_dir, tmp_path, capsys):
    output_dir = tmp_path / "generated"
    generate(pipeline_dir, output_dir)
    before = snapshot(output_dir)
    old = tmp_path / "generated.old"
    old.mkdir()
    (old / "notes.txt").write_text("my notes")
    line = expect_error(capsys, generate, pipeline_dir, output_dir, "--overwrite", "--seed", 1)
    assert str(old) in line
    assert (old / "notes.txt").read_text() == "my notes" and snapshot(output_dir) == before
    (old / "notes.txt").unlink()
    old.rmdir()
    assert generate(pipeline_dir, output_dir, "--overwrite", "--seed", 1) == 0
    assert snapshot(output_dir) != before and not old.exists() and not (tmp_path / "generated.partial").exists()
    assert OWNER_MARKER not in os.listdir(output_dir)


def test_truncated_shard_is_one_clear_line(pipeline_dir, tmp_path, capsys):
    pipe = DAKTerPipeline.from_pretrained(pipeline_dir)
    output_dir = tmp_path / "generated"

    def interrupt(progress: GenerationProgress):
        raise Killed

    with pytest.raises(Killed):
        generate_to_disk(pipe, output_dir, 4, batch_size=2, num_inference_steps=2, callback=interrupt,
                         pipeline_name=str(pipeline_dir))
    shard = next((tmp_path / "generated.partial").glob("shard-*"))
    for arrow in shard.glob("*.arrow"):
        arrow.write_bytes(arrow.read_bytes()[:20])
    line = expect_error(capsys, generate, pipeline_dir, output_dir, "--num_samples", 4)
    assert f"shard {shard} cannot be read" in line


@pytest.mark.parametrize("damage", ["missing", "corrupt_json", "wrong_class", "truncated_weights"])
def test_unloadable_pipeline_is_one_clear_line(pipeline_dir, tmp_path, capsys, damage):
    import shutil

    broken = tmp_path / "joint"
    if damage != "missing":
        shutil.copytree(pipeline_dir, broken)
        index = broken / "model_index.json"
        if damage == "corrupt_json":
            index.write_text('{"_class_name": "DAKTerPipeline", ')
        elif damage == "truncated_weights":
            weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        else:
            config = json.loads(index.read_text())
            config["unet"] = ["diffusers", "UNet2DConditionModel"]
            index.write_text(json.dumps(config))
    line = expect_error(capsys, generate, broken, tmp_path / "generated")
    assert f"--pipeline {broken} cannot be loaded" in line
    assert not (tmp_path / "generated").exists()


# ----------------------------------------------------------------------------------------------------------------------
# One run per output directory
# ----------------------------------------------------------------------------------------------------------------------


def test_second_training_in_the_same_directory_stops_at_once(tmp_path, capsys):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    with OutputDirLock.inside(output_dir):  # the first run
        line = expect_error(capsys, train, output_dir, "--max_train_steps", 2)
    assert f"lock {output_dir / '.dakter_hf.lock'} is held by pid {os.getpid()}" in line
    assert os.listdir(output_dir) == []  # the second run wrote nothing


def test_second_distillation_and_generation_stop_at_once(pipeline_dir, tmp_path, capsys):
    (tmp_path / "student").mkdir()
    with OutputDirLock.inside(tmp_path / "student"):
        line = expect_error(capsys, distill, tmp_path / "student", "--mode", "real", "--max_train_steps", 2)
    assert "is in use by another run" in line and ".dakter_hf.lock" in line
    with OutputDirLock.beside(tmp_path / "generated"):
        line = expect_error(capsys, generate, pipeline_dir, tmp_path / "generated")
    assert f"lock {tmp_path / 'generated.lock'} is held by pid {os.getpid()}" in line
    assert sorted(os.listdir(tmp_path)) == ["student"] and os.listdir(tmp_path / "student") == []


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path):
    lock_path = tmp_path / "out" / ".dakter_hf.lock"
    lock_path.parent.mkdir()
    lock_path.write_text(json.dumps({"pid": 999999, "host": "gone", "command": "killed", "started": "then"}))
    with OutputDirLock(lock_path):
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
        with pytest.raises(OutputLockedError, match=f"held by pid {os.getpid()}"):
            OutputDirLock(lock_path).acquire()
    assert not lock_path.exists()


# ----------------------------------------------------------------------------------------------------------------------
# --debug and a real process
# ----------------------------------------------------------------------------------------------------------------------


def test_debug_keeps_the_traceback(tmp_path, monkeypatch):
    from dakter_hf.errors import DAKTerError

    with pytest.raises(DAKTerError, match="cannot be loaded"):
        generate(tmp_path / "missing", tmp_path / "generated", "--debug")
    monkeypatch.setenv("DAKTER_DEBUG", "1")
    with pytest.raises(DAKTerError, match="cannot be loaded"):
        generate(tmp_path / "missing", tmp_path / "generated")


def test_command_line_process_prints_one_line_and_exits_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dakter_hf.commands.generate", "--pipeline", str(tmp_path / "nowhere"),
         "--num_samples", "2", "--output_dir", str(tmp_path / "generated")],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert ": error: --pipeline" in result.stderr.strip().splitlines()[-1]
    assert sorted(os.listdir(tmp_path)) == []
