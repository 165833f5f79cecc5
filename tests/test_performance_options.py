"""The speed options of the tools (issue #25): bf16 mixed precision, gradient checkpointing and `torch.compile` in the
generator trainer (`dakter_hf.commands.train`), bf16 and compile in the student trainer
(`dakter_hf.commands.distill`), and the compute dtype and compile of generation (`dakter-generate --dtype /
--compile`). Each runs on tiny models and gives results close to float32 (no timing here: speed is measured by
`benchmarks/bench_precision.py`, `bench_memory.py` and `bench_cost_table.py`).

`torch.compile` is exercised with the `eager` backend (Dynamo traces the model, no C++ compilation), which keeps the
tests to seconds; the option itself uses the default backend.
"""

import json

import datasets
import numpy as np
import pytest
import torch
from test_generation import ID2LABEL

from dakter_hf import DAKTerPipeline, JointUNet2DModel
from dakter_hf.commands import distill as distill_command
from dakter_hf.commands import generate as generate_command
from dakter_hf.commands import train as train_command
from dakter_hf.generation import decode_soft_labels, generate_dataset, generation_settings

from tiny_models import tiny_pipeline


TINY_TRAIN = ["--dataset", "simulated", "--num_train_samples", "8", "--resolution", "16", "--model_size", "tiny",
              "--train_batch_size", "4", "--max_train_steps", "3", "--learning_rate", "1e-3",
              "--validation_inference_steps", "2", "--num_validation_samples", "2", "--checkpointing_steps", "100",
              "--seed", "0"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def eager_compile(monkeypatch):
    """`nn.Module.compile` with the eager backend; records the modules compiled."""
    compiled = []
    original = torch.nn.Module.compile

    def compile_eagerly(self, *args, **kwargs):
        compiled.append(self)
        return original(self, backend="eager")

    monkeypatch.setattr(torch.nn.Module, "compile", compile_eagerly)
    return compiled


def read_log(output_dir) -> list[dict]:
    with open(output_dir / "logs" / "train_log.jsonl") as f:
        return [json.loads(line) for line in f]


def train(output_dir, *extra) -> list[dict]:
    """Run the generator trainer in-process with a fresh Accelerate state; returns its loss log."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    assert train_command.main([*TINY_TRAIN, "--output_dir", str(output_dir), *extra]) == 0
    return read_log(output_dir)


def distill(output_dir, *extra) -> list[dict]:
    """Train a tiny `real` student for 3 steps in-process with a fresh Accelerate state; returns its loss log."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    distill_command.main(["--dataset", "simulated", "--num_train_samples", "8", "--resolution", "32", "--student",
                          "tiny", "--train_batch_size", "4", "--max_eval_samples", "4", "--mode", "real",
                          "--max_train_steps", "3", "--eval_steps", "3", "--seed", "0", "--output_dir",
                          str(output_dir), *extra])
    return read_log(output_dir)


@pytest.fixture(scope="module")
def fp32_losses(tmp_path_factory):
    return train(tmp_path_factory.mktemp("fp32"), "--mixed_precision", "no")


def test_trainer_gradient_checkpointing_gives_the_float32_run(fp32_losses, tmp_path):
    losses = train(tmp_path, "--mixed_precision", "no", "--gradient_checkpointing")
    for plain, checkpointed in zip(fp32_losses, losses, strict=True):
        assert checkpointed["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    saved = JointUNet2DModel.from_pretrained(tmp_path / "unet")
    assert not saved.is_gradient_checkpointing  # a training-time setting, not part of the saved model


def test_trainer_bf16_mixed_precision_is_close_to_float32(fp32_losses, tmp_path):
    losses = train(tmp_path, "--mixed_precision", "bf16")
    # Same weights and data at the first step: bf16 autocast changes the loss by its rounding only (~1e-3 relative
    # measured here; 2% allowed); later steps follow slightly different weights.
    assert losses[0]["loss"] == pytest.approx(fp32_losses[0]["loss"], rel=2e-2)
    for plain, bf16 in zip(fp32_losses, losses, strict=True):
        assert bf16["loss"] == pytest.approx(plain["loss"], rel=0.1)
    saved = JointUNet2DModel.from_pretrained(tmp_path / "unet")
    assert saved.dtype == torch.float32  # mixed precision keeps float32 weights


def test_trainer_compile(fp32_losses, tmp_path, eager_compile):
    losses = train(tmp_path, "--mixed_precision", "no", "--compile")
    assert len(eager_compile) == 1 and isinstance(eager_compile[0], JointUNet2DModel)
    for plain, compiled in zip(fp32_losses, losses, strict=True):
        assert compiled["loss"] == pytest.approx(plain["loss"], rel=1e-4)
    # The compiled model is saved like any other: same class, same keys.
    DAKTerPipeline.from_pretrained(tmp_path)


def test_student_bf16_and_compile(tmp_path, eager_compile):
    from transformers import SegformerForSemanticSegmentation

    plain = distill(tmp_path / "fp32", "--mixed_precision", "no")
    assert not eager_compile
    fast = distill(tmp_path / "bf16", "--mixed_precision", "bf16", "--compile")
    assert len(eager_compile) == 1 and isinstance(eager_compile[0], SegformerForSemanticSegmentation)
    assert len(plain) == len(fast) == 3
    assert fast[0]["loss"] == pytest.approx(plain[0]["loss"], rel=2e-2)  # same weights: bf16 rounding only
    saved = SegformerForSemanticSegmentation.from_pretrained(tmp_path / "bf16" / "final")
    assert saved.dtype == torch.float32


def test_trainer_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        train_command.parse_args(["--help"])
    help_text = capsys.readouterr().out
    assert "--gradient_checkpointing" in help_text and "--compile" in help_text and "bf16" in help_text


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def test_generation_in_bfloat16_is_close_to_float32(pipe):
    rows = {dtype: generate_dataset(pipe, 3, seed=7, batch_size=3, num_inference_steps=3, id2label=ID2LABEL,
                                    dtype=dtype) for dtype in ("float32", "bfloat16")}
    images = {k: np.stack([np.asarray(i, dtype=np.float64) for i in v["image"]]) for k, v in rows.items()}
    soft = {k: decode_soft_labels(v.with_format("numpy")["soft_label"], dtype=v.features) for k, v in rows.items()}
    assert not np.array_equal(images["float32"], images["bfloat16"])  # bf16 really ran
    # The bf16 rounding moves a grey level (0..255) by a few levels at most and a soft label by a few hundredths.
    assert np.abs(images["float32"] - images["bfloat16"]).mean() < 2.0
    assert np.abs(images["float32"] - images["bfloat16"]).max() <= 16
    assert np.abs(soft["float32"] - soft["bfloat16"]).max() < 0.05
    assert rows["bfloat16"].features == rows["float32"].features  # same columns and storage dtypes


def test_generation_settings_record_dtype_and_compile(pipe):
    args = (pipe, 2, 0, 3, 1.0, 0.0, "uint8", ID2LABEL)
    assert "compute_dtype" not in generation_settings(*args)  # float32 runs resume as before this key existed
    assert generation_settings(*args, dtype="bfloat16")["compute_dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        generate_dataset(pipe, 1, dtype="bf16")


def test_command_dtype_and_compile(tmp_path, eager_compile):
    pipeline_dir = tmp_path / "pipeline"
    DAKTerPipeline(**tiny_pipeline().components, id2label=ID2LABEL).save_pretrained(pipeline_dir)
    output_dir = tmp_path / "generated"
    argv = ["--pipeline", str(pipeline_dir), "--num_samples", "2", "--batch_size", "2", "--num_inference_steps", "2",
            "--output_dir", str(output_dir), "--dtype", "bfloat16", "--compile"]
    assert generate_command.main(argv) == 0
    assert len(eager_compile) == 1 and isinstance(eager_compile[0], JointUNet2DModel)
    assert len(datasets.load_from_disk(str(output_dir))) == 2
    card = (output_dir / "README.md").read_text()
    assert '"compute_dtype": "bfloat16"' in card and '"unet_compiled": true' in card
