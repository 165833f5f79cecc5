"""Calibrated soft labels (issue #24, lever c): the temperature fit (`dakter_hf.metrics.fit_temperature`,
`dakter_hf.generation.fit_soft_label_temperature`), the pipelines' stored default temperature, its atomic save and
card, the `dakter-calibrate` command, and the remote-code copy of the pipelines."""

import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from safetensors.torch import load_file

from dakter_hf import DAKTerMaskToImagePipeline, DAKTerPipeline, DAKTerSegmentationPipeline
from dakter_hf.commands import calibrate as calibrate_command
from dakter_hf.commands import dakter as dakter_command
from dakter_hf.commands import generate as generate_command
from dakter_hf.data import load_dataset_by_name
from dakter_hf.generation import SoftLabelCalibration, fit_soft_label_temperature, save_soft_label_temperature
from dakter_hf.metrics import fit_temperature, negative_log_likelihood, temper_probabilities
from dakter_hf.model_cards import make_pipeline_card

from tiny_models import CROSS_CPU_TOLERANCE, tiny_pipeline


pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent
OLD_CHECKPOINT = REPO / "tests" / "fixtures" / "pre_per_modality" / "dual"


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _simulated(split="validation", num_samples=4):
    return load_dataset_by_name("simulated", split=split, num_samples=num_samples, resolution=16, num_classes=2)


# ---- the fit on stored probabilities ----------------------------------------------------------------------------


@pytest.mark.parametrize("true_temperature", [0.5, 3.0])
def test_fit_recovers_the_temperature_the_labels_were_drawn_with(true_temperature):
    generator = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(16, 3, 32, 32, generator=generator)
    drawn_from = torch.softmax(logits / true_temperature, dim=1).movedim(1, -1).reshape(-1, 3)
    labels = torch.multinomial(drawn_from, 1, generator=generator).reshape(16, 32, 32)
    probabilities = torch.softmax(logits, dim=1)  # what a model with temperature 1 says
    fitted = fit_temperature(probabilities, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    tempered = temper_probabilities(probabilities, fitted)
    assert negative_log_likelihood(tempered, labels) < negative_log_likelihood(probabilities, labels)
    # the NLL is minimal there: a few percent either way costs more
    for factor in (0.9, 1.1):
        assert negative_log_likelihood(temper_probabilities(probabilities, fitted * factor), labels) > \
            negative_log_likelihood(tempered, labels)


def test_tempered_probabilities_are_the_softmax_of_tempered_logits_and_ignore_index_is_not_fitted():
    logits = 3 * torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(temper_probabilities(torch.softmax(logits, 1), 2.5), torch.softmax(logits / 2.5, 1))
    labels = torch.full((2, 5, 5), 255)
    with pytest.raises(ValueError, match="No pixel is counted"):
        fit_temperature(torch.softmax(logits, 1), labels)
    with pytest.raises(ValueError, match="`bounds`"):
        fit_temperature(torch.softmax(logits, 1), labels.clamp(max=1), bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="`temperature` must be > 0"):
        temper_probabilities(torch.softmax(logits, 1), 0.0)


# ---- the pipelines' stored default ------------------------------------------------------------------------------


def _samples(pipe, **kwargs):
    return pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=3, output_type="pt",
                **kwargs).soft_labels


def test_every_pipeline_uses_its_stored_temperature_unless_the_call_gives_one(tmp_path):
    pipe = _quiet(tiny_pipeline())
    baseline = _samples(pipe)
    assert pipe.default_soft_label_temperature == 1.0
    assert torch.equal(baseline, _samples(pipe, soft_label_temperature=1.0))
    pipe.set_default_soft_label_temperature(3.0)
    softened = _samples(pipe)
    assert torch.equal(softened, _samples(pipe, soft_label_temperature=3.0))
    assert not torch.allclose(softened, baseline)
    assert torch.equal(_samples(pipe, soft_label_temperature=1.0), baseline)  # a call's value overrides it

    # the conditional pipelines made from it share the default
    images = np.random.default_rng(0).integers(0, 255, size=(2, 16, 16), dtype=np.uint8)
    segmenter = _quiet(DAKTerSegmentationPipeline.from_pipe(pipe))
    drawer = _quiet(DAKTerMaskToImagePipeline.from_pipe(pipe))
    for task, inputs in ((segmenter, {"images": list(images)}), (drawer, {"masks": torch.zeros(2, 16, 16).long()})):
        assert task.default_soft_label_temperature == 3.0
        default = task(**inputs, generator=torch.Generator().manual_seed(0), num_inference_steps=2,
                       output_type="pt").soft_labels
        given = task(**inputs, generator=torch.Generator().manual_seed(0), num_inference_steps=2,
                     soft_label_temperature=3.0, output_type="pt").soft_labels
        assert torch.equal(default, given)

    # saved in model_index.json and loaded back by every pipeline class
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["soft_label_temperature"] == 3.0
    for cls in (DAKTerPipeline, DAKTerSegmentationPipeline, DAKTerMaskToImagePipeline):
        assert cls.from_pretrained(tmp_path).default_soft_label_temperature == 3.0
    assert torch.equal(_samples(_quiet(DAKTerPipeline.from_pretrained(tmp_path))), softened)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_a_bad_stored_temperature_is_refused(bad):
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="`soft_label_temperature` must be a finite number > 0"):
        DAKTerPipeline(unet=pipe.unet, scheduler=pipe.scheduler, soft_label_temperature=bad)


def test_a_checkpoint_saved_before_the_option_samples_as_before(tmp_path):
    assert "soft_label_temperature" not in json.loads((OLD_CHECKPOINT / "model_index.json").read_text())
    reference = load_file(OLD_CHECKPOINT / "reference_outputs.safetensors")
    pipe = _quiet(DAKTerPipeline.from_pretrained(OLD_CHECKPOINT))
    assert pipe.default_soft_label_temperature == 1.0
    samples = pipe(batch_size=2, generator=torch.Generator().manual_seed(2), num_inference_steps=5, output_type="pt")
    torch.testing.assert_close(samples.soft_labels, reference["sample_soft_labels"], **CROSS_CPU_TOLERANCE)
    torch.testing.assert_close(samples.images, reference["sample_images"], **CROSS_CPU_TOLERANCE)
    # and saving it again writes no temperature: the index is the one it had
    pipe.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "model_index.json").read_text())
    assert "soft_label_temperature" not in saved
    varying = ("_diffusers_version", "_name_or_path")
    assert {k: v for k, v in saved.items() if k not in varying} == {
        k: v for k, v in json.loads((OLD_CHECKPOINT / "model_index.json").read_text()).items() if k not in varying}


def test_the_remote_code_copy_reads_the_stored_temperature():
    """The committed `pipelines/dakter/pipeline_dakter.py` (what plain diffusers users load) has the same default
    handling: built with a temperature, it samples what the package samples at that temperature."""
    spec = importlib.util.spec_from_file_location("remote_pipeline_dakter", REPO / "pipelines" / "dakter" /
                                                  "pipeline_dakter.py")
    remote = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(remote)
    pipe = tiny_pipeline()
    remote_pipe = _quiet(remote.DAKTerPipeline(unet=pipe.unet, scheduler=pipe.scheduler, soft_label_temperature=2.0))
    assert remote_pipe.default_soft_label_temperature == 2.0
    torch.testing.assert_close(_samples(remote_pipe), _samples(_quiet(pipe), soft_label_temperature=2.0))


# ---- the fit through the segmentation pipeline, and its save ----------------------------------------------------


def test_fit_through_the_segmentation_pipeline_is_deterministic_and_lowers_the_nll():
    pipe = _quiet(tiny_pipeline(num_classes=2))
    pipe.set_default_soft_label_temperature(7.0)  # the fit starts from the raw logits whatever is stored
    dataset = _simulated()
    fit = fit_soft_label_temperature(pipe, dataset, num_inference_steps=2, batch_size=3, seed=5)
    assert isinstance(fit, SoftLabelCalibration)
    assert fit.num_images == 4 and fit.num_pixels == 4 * 16 * 16
    assert fit.temperature > 0 and fit.nll_after <= fit.nll_before + 1e-9
    assert fit.settings["previous_temperature"] == 7.0 and fit.settings["seed"] == 5
    again = fit_soft_label_temperature(pipe, dataset, num_inference_steps=2, batch_size=2, seed=5)
    assert again.temperature == pytest.approx(fit.temperature, rel=1e-6)
    assert json.loads(json.dumps(fit.to_dict()))["temperature"] == fit.temperature
    with pytest.raises(ValueError, match="'image' and 'mask'"):
        fit_soft_label_temperature(pipe, dataset.remove_columns("mask"))


def _saved_pipeline(directory: Path, card: bool = True) -> Path:
    pipe = tiny_pipeline(num_classes=2)
    pipe.save_pretrained(directory)
    if card:
        make_pipeline_card(pipe, pipe.id2label).save(directory / "README.md")
    return directory


def test_save_writes_the_index_and_the_card(tmp_path):
    directory = _saved_pipeline(tmp_path / "pipe")
    before = json.loads((directory / "model_index.json").read_text())
    fit = SoftLabelCalibration(temperature=2.5, nll_before=0.9, nll_after=0.5, ece_before=0.2, ece_after=0.05,
                               argmax_ece=0.3, num_pixels=100, num_images=2, settings={"seed": 0})
    save_soft_label_temperature(directory, 2.5, fit, split="simulated validation")
    after = json.loads((directory / "model_index.json").read_text())
    assert after == {**before, "soft_label_temperature": 2.5}
    card = (directory / "README.md").read_text()
    assert "soft_label_temperature: 2.5" in card and "## Soft-label temperature" in card and "0.5000" in card
    save_soft_label_temperature(directory, 1.5)  # replaces the section
    card = (directory / "README.md").read_text()
    assert card.count("## Soft-label temperature") == 1 and "T = 1.5" in card
    assert DAKTerPipeline.from_pretrained(directory).default_soft_label_temperature == 1.5
    assert "Default soft-label temperature T = 1.5" in make_pipeline_card(
        DAKTerPipeline.from_pretrained(directory), {0: "a", 1: "b"}).text


def test_save_is_atomic_and_refuses_what_is_not_a_pipeline(tmp_path, monkeypatch):
    directory = _saved_pipeline(tmp_path / "pipe", card=False)
    original = (directory / "model_index.json").read_bytes()

    def interrupted(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(OSError, match="disk full"):
        save_soft_label_temperature(directory, 2.0)
    monkeypatch.undo()
    assert (directory / "model_index.json").read_bytes() == original  # never half-written

    with pytest.raises(ValueError, match="no model_index.json"):
        save_soft_label_temperature(tmp_path, 2.0)
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read as JSON"):
        save_soft_label_temperature(tmp_path, 2.0)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="not the index of a DAKTer pipeline"):
        save_soft_label_temperature(tmp_path, 2.0)
    for bad in (0.0, math.nan, -2):
        with pytest.raises(ValueError, match="`temperature` must be a finite number > 0"):
            save_soft_label_temperature(directory, bad)


# ---- dakter-calibrate ------------------------------------------------------------------------------------------


def test_calibrate_command_saves_the_default_that_generate_then_uses(tmp_path, capsys):
    directory = _saved_pipeline(tmp_path / "pipe")
    report_path = tmp_path / "fit.json"
    argv = ["--pipeline", str(directory), "--simulated_num_classes", "2", "--num_inference_steps", "2",
            "--batch_size", "4", "--save", "--output_json", str(report_path)]
    assert dakter_command.main(["calibrate", *argv]) == 0
    printed = capsys.readouterr().out
    assert "Soft-label temperature fitted on simulated validation" in printed and "| T = 1 |" in printed
    report = json.loads(report_path.read_text())
    assert report["split"] == "simulated validation" and report["saved"] is True
    assert report["num_images"] == 128  # the simulated validation split
    stored = json.loads((directory / "model_index.json").read_text())["soft_label_temperature"]
    assert stored == report["temperature"]
    assert "## Soft-label temperature" in (directory / "README.md").read_text()

    # dakter-generate without --soft_label_temperature samples with the stored one, and its card says so
    output = tmp_path / "generated"
    assert generate_command.main(["--pipeline", str(directory), "--num_samples", "2", "--num_inference_steps", "2",
                                  "--batch_size", "2", "--output_dir", str(output)]) == 0
    card = (output / "README.md").read_text()
    assert f"soft_label_temperature={stored}" in card
    rows = load_from_disk(str(output))
    assert len(rows) == 2


@pytest.mark.parametrize("argv, message", [
    (["--pipeline", "{tmp}/missing", "--save"], "--save writes into a local pipeline directory"),
    (["--pipeline", "{tmp}", "--split", "train_heldout"], "--split train_heldout needs a file dataset"),
    (["--pipeline", "{tmp}", "--output_json", "{tmp}"], "--output_json"),
    (["--pipeline", "{tmp}/not-a-pipeline"], "--pipeline {tmp}/not-a-pipeline cannot be loaded"),
])
def test_calibrate_command_errors_name_the_argument(tmp_path, capsys, argv, message):
    (tmp_path / "not-a-pipeline").mkdir()
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--simulated_num_classes", "2"]
    with pytest.raises(SystemExit) as exit_info:
        calibrate_command.main(argv)
    assert exit_info.value.code == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


def test_calibrate_command_on_an_empty_split_names_it_and_saves_nothing(tmp_path, capsys):
    from sos_layout import write_sos_release

    data_dir = write_sos_release(tmp_path / "sos", sensor="sentinel", num_train=3, num_test=1, size=16)
    directory = _saved_pipeline(tmp_path / "pipe")
    index = (directory / "model_index.json").read_bytes()
    with pytest.raises(SystemExit) as exit_info:  # every training pair is in the subset: no held-out pair is left
        calibrate_command.main(["--pipeline", str(directory), "--dataset", "sos", "--data_dir", str(data_dir),
                                "--sensor", "sentinel", "--num_train_samples", "3", "--save"])
    assert exit_info.value.code == 2
    assert "split 'train_heldout' is empty" in capsys.readouterr().err
    assert (directory / "model_index.json").read_bytes() == index
