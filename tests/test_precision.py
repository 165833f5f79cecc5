"""bf16 autocast on a CPU without bf16 instructions: detected, and the trainer, the student trainer and generation
warn (`dakter_hf.precision`) instead of silently running many times slower than float32."""

import platform
import warnings

import pytest
import torch

from dakter_hf import precision
from dakter_hf.commands import distill as distill_command
from dakter_hf.commands import train as train_command
from dakter_hf.generation import generate_dataset
from dakter_hf.precision import EmulatedBF16Warning, cpu_has_native_bf16, warn_if_emulated_bf16

from tiny_models import tiny_pipeline


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)


def test_cpu_detection_follows_torch_probes():
    native = cpu_has_native_bf16()
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert native == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    else:
        assert native is None


def test_cpu_detection_knows_nothing_off_x86(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert cpu_has_native_bf16() is None


def test_cpu_description_names_the_model_and_its_instructions(monkeypatch):
    described = precision.cpu_description()
    assert described["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert described["cpu_bf16_instructions"] == cpu_has_native_bf16()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    assert described["cpu_model"] == (names[0] if names else platform.processor() or platform.machine())
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)  # what the record says follows the probe
    assert precision.cpu_description()["cpu_bf16_instructions"] is False


@pytest.mark.usefixtures("cpu_without_bf16")
def test_warns_for_emulated_bf16_naming_the_option():
    with pytest.warns(EmulatedBF16Warning, match=r"--mixed_precision bf16: this CPU .* no bf16 instructions"):
        assert warn_if_emulated_bf16("cpu", "bf16", "--mixed_precision bf16")
    with pytest.warns(EmulatedBF16Warning, match="--dtype bfloat16"):
        assert warn_if_emulated_bf16("cpu", "bfloat16", "--dtype bfloat16")


@pytest.mark.usefixtures("cpu_without_bf16")
@pytest.mark.parametrize(("device_type", "dtype"), [("cpu", "no"), ("cpu", None), ("cpu", "float32"),
                                                    ("cpu", "fp16"), ("cuda", "bf16")])
def test_no_warning_without_bf16_on_the_cpu(device_type, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_emulated_bf16(device_type, dtype, "--flag")


@pytest.mark.parametrize("native", [True, None])
def test_no_warning_where_bf16_is_native_or_unknown(monkeypatch, native):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_emulated_bf16("cpu", "bf16", "--mixed_precision bf16")


TINY_TRAIN = ["--dataset", "simulated", "--num_train_samples", "4", "--resolution", "16", "--model_size", "tiny",
              "--train_batch_size", "2", "--max_train_steps", "1", "--validation_inference_steps", "2",
              "--num_validation_samples", "2", "--checkpointing_steps", "100", "--seed", "0"]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """The trainers run in-process: each test starts from a fresh Accelerate state."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.usefixtures("cpu_without_bf16")
def test_generator_trainer_warns(tmp_path):
    with pytest.warns(EmulatedBF16Warning, match="--mixed_precision bf16"):
        train_command.main([*TINY_TRAIN, "--output_dir", str(tmp_path / "gen"), "--mixed_precision", "bf16"])


@pytest.mark.usefixtures("cpu_with_bf16")
def test_generator_trainer_is_quiet_where_bf16_is_native(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_command.main([*TINY_TRAIN, "--output_dir", str(tmp_path / "gen"), "--mixed_precision", "bf16"])
    assert not [w for w in caught if issubclass(w.category, EmulatedBF16Warning)]


@pytest.mark.usefixtures("cpu_without_bf16")
def test_student_trainer_warns(tmp_path):
    args = ["--dataset", "simulated", "--num_train_samples", "4", "--resolution", "32", "--mode", "real",
            "--student", "tiny", "--train_batch_size", "2", "--max_train_steps", "1", "--eval_steps", "1",
            "--max_eval_samples", "2", "--seed", "0", "--output_dir", str(tmp_path / "student"),
            "--mixed_precision", "bf16"]
    with pytest.warns(EmulatedBF16Warning, match="--mixed_precision bf16"):
        distill_command.main(args)


@pytest.mark.usefixtures("cpu_without_bf16")
def test_generation_warns_once_for_bfloat16():
    pipe = tiny_pipeline()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's default: a warning once per place
        generate_dataset(pipe, 4, batch_size=2, num_inference_steps=2, dtype="bfloat16")
    emulated = [w for w in caught if issubclass(w.category, EmulatedBF16Warning)]
    assert len(emulated) == 1 and "--dtype bfloat16" in str(emulated[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate_dataset(pipe, 2, batch_size=2, num_inference_steps=2, dtype="float32")
