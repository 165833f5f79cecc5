"""Relabelling (`dakter_hf.distill.relabel`, `python -m dakter_hf.commands.relabel`): the control arm (a generated
dataset relabelled by a student keeps its images and seeds and carries the student's soft labels), posterior soft
labels from the generator's segmentation pipeline, pair-quality scores, resume, and the labeller's detection."""

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset

from dakter_hf.commands import relabel as relabel_command
from dakter_hf.data.generated import generated_features
from dakter_hf.distill import create_image_processor, create_student, relabel_with_student, save_student
from dakter_hf.distill.data import DistillationDataset, load_generated_dataset
from dakter_hf.labels import decode_soft_labels, encode_soft_labels


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def generated_dataset(num_rows=5, size=32, num_classes=2):
    rng = np.random.default_rng(0)
    probs = rng.random((num_rows, num_classes, size, size))
    probs /= probs.sum(axis=1, keepdims=True)
    rows = {"image": [PIL.Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)) for _ in range(num_rows)],
            "soft_label": list(encode_soft_labels(probs)),
            "label": [PIL.Image.fromarray(p.argmax(axis=0).astype(np.uint8)) for p in probs],
            "seed": list(range(100, 100 + num_rows))}
    return Dataset.from_dict(rows, features=generated_features(num_classes, size, size))


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = create_student("tiny", num_labels=2, image_size=32)
    return save_student(model, create_image_processor(32), tmp_path_factory.mktemp("student") / "final")


def expected_soft_labels(student_dir, dataset):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    model = AutoModelForSemanticSegmentation.from_pretrained(student_dir).eval()
    processor = AutoImageProcessor.from_pretrained(student_dir, backend="pil")
    with torch.no_grad():
        pixel_values = processor(images=list(dataset["image"]), return_tensors="pt")["pixel_values"]
        logits = model(pixel_values=pixel_values).logits
    logits = torch.nn.functional.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    return torch.softmax(logits, dim=1).numpy()


def test_command_relabels_soft_labels_and_keeps_images(student_dir, tmp_path):
    source_dir = tmp_path / "generated"
    generated = generated_dataset()
    generated.save_to_disk(str(source_dir))
    out = tmp_path / "relabelled"
    assert relabel_command.main(["--generated_dataset", str(source_dir), "--student", str(student_dir),
                                 "--output_dir", str(out), "--batch_size", "2"]) == 0
    relabelled = load_generated_dataset(str(out))
    assert relabelled.features == generated.features and not (tmp_path / "relabelled.partial").exists()
    assert relabelled["seed"] == generated["seed"]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(relabelled["image"], generated["image"]))
    stored = np.asarray(relabelled.with_format("numpy")["soft_label"])
    probs = decode_soft_labels(stored, dtype=relabelled.features)
    expected = expected_soft_labels(student_dir, generated)
    np.testing.assert_allclose(probs, expected, atol=1 / 255 + 1e-6)
    assert not np.allclose(probs, decode_soft_labels(np.asarray(generated.with_format("numpy")["soft_label"]),
                                                     dtype=generated.features), atol=0.05)
    labels = np.stack([np.asarray(m) for m in relabelled["label"]])
    agree = labels == expected.argmax(axis=1)
    assert agree.mean() > 0.99  # only ties within the uint8 rounding may differ
    # The source is untouched (no cache files written into it), and the copy trains students like any generated set.
    assert sorted(p.name for p in source_dir.iterdir()) == sorted(["data-00000-of-00001.arrow", "dataset_info.json",
                                                                   "state.json"])
    real = generated_dataset(2).rename_column("label", "mask")
    example = DistillationDataset(real, relabelled, resolution=32)[2]
    assert example["soft_labels"].shape == (2, 32, 32) and bool(example["is_generated"])

    with pytest.raises(SystemExit):  # never overwrites
        relabel_command.main(["--generated_dataset", str(source_dir), "--student", str(student_dir),
                              "--output_dir", str(out)])
    # the staging copy an interrupted run of an earlier version left (a bare saved dataset) is discarded
    generated.save_to_disk(str(tmp_path / "again.partial"))
    relabel_command.main(["--generated_dataset", str(source_dir), "--student", str(student_dir),
                          "--output_dir", str(tmp_path / "again")])
    assert load_generated_dataset(str(tmp_path / "again"))["seed"] == generated["seed"]
    assert not (tmp_path / "again.partial").exists()


def test_relabel_with_a_student_of_other_classes_is_refused(student_dir):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    model = AutoModelForSemanticSegmentation.from_pretrained(student_dir)
    processor = AutoImageProcessor.from_pretrained(student_dir, backend="pil")
    with pytest.raises(ValueError, match="predicts 2 classes but the generated soft labels have 3"):
        relabel_with_student(generated_dataset(2, num_classes=3), model, processor)


# ----------------------------------------------------------------------------------------------------------------------
# The generator as labeller: posterior soft labels, pair quality, resume, detection of the labeller's kind
# ----------------------------------------------------------------------------------------------------------------------

STEPS = ["--num_inference_steps", "3"]


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    from tiny_models import tiny_pipeline

    path = tmp_path_factory.mktemp("generator") / "joint"
    tiny_pipeline(seed=0, num_classes=3).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("source") / "generated"
    generated_dataset(num_rows=5, size=16, num_classes=3).save_to_disk(str(path))
    return path


def stored_probs(path):
    dataset = load_generated_dataset(str(path))
    return decode_soft_labels(np.asarray(dataset.with_format("numpy")["soft_label"]), dtype=dataset.features)


def segmentation_draws(pipeline_dir, dataset, seed, num_samples):
    """The pipeline's own result: row i with `torch.Generator().manual_seed(seed + i)`."""
    from dakter_hf import DAKTerSegmentationPipeline

    pipe = DAKTerSegmentationPipeline.from_pretrained(pipeline_dir)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(len(dataset))]
    return pipe(images=list(dataset["image"]), num_samples=num_samples, generator=generators, num_inference_steps=3,
                output_type="pt").soft_labels.numpy(), pipe, generators


def test_posterior_labels_average_segmentation_draws(pipeline_dir, source_dir, tmp_path):
    source = load_generated_dataset(str(source_dir))
    one, two = tmp_path / "post1", tmp_path / "post2"
    for out, n in ((one, "1"), (two, "2")):
        assert relabel_command.main(["--generated_dataset", str(source_dir), "--labeller", str(pipeline_dir),
                                     "--num_samples", n, "--seed", "7", *STEPS, "--batch_size", "2",
                                     "--output_dir", str(out)]) == 0
    single, pipe, generators = segmentation_draws(pipeline_dir, source, seed=7, num_samples=1)
    np.testing.assert_allclose(stored_probs(one), single, atol=1 / 255 + 1e-6)  # N = 1: one segmentation draw
    # N = 2: the mean of the first draw and the next one from the same generators
    second = pipe(images=list(source["image"]), generator=generators, num_inference_steps=3,
                  output_type="pt").soft_labels.numpy()
    np.testing.assert_allclose(stored_probs(two), (single + second) / 2, atol=1 / 255 + 1e-6)
    assert not np.allclose(single, second, atol=0.01)
    relabelled = load_generated_dataset(str(one))
    assert relabelled["seed"] == source["seed"] and relabelled.features == source.features
    labels = np.stack([np.asarray(m) for m in relabelled["label"]])
    assert (labels == single.argmax(axis=1)).mean() > 0.99
    # deterministic per seed: the same command gives the same labels, another seed others
    again, other = tmp_path / "again", tmp_path / "other"
    for out, seed in ((again, "7"), (other, "8")):
        relabel_command.main(["--generated_dataset", str(source_dir), "--labeller", str(pipeline_dir), "--seed", seed,
                              *STEPS, "--output_dir", str(out)])
    np.testing.assert_array_equal(stored_probs(again), stored_probs(one))
    assert not np.allclose(stored_probs(other), stored_probs(one), atol=0.01)
    # the card records the labeller and its settings
    card = (one / "README.md").read_text()
    assert "## Labels replaced" in card and "dakter_labelling" in card and str(pipeline_dir) in card
    assert '"num_samples": 1' in card and '"seed": 7' in card and "replacement" in card


def test_a_replacement_conditioning_labeller_warns(pipeline_dir, caplog):
    """The one-timestep model segments by replacement conditioning, which measured far worse than exact conditioning:
    building such a labeller says so; a per-modality model (exact conditioning) does not warn."""
    import logging

    from dakter_hf import DAKTerPipeline, JointUNet2DModel
    from dakter_hf.distill.labellers import GeneratorLabeller

    with caplog.at_level(logging.WARNING, logger="dakter_hf.distill.labellers"):
        labeller = GeneratorLabeller(DAKTerPipeline.from_pretrained(pipeline_dir), name="one-timestep")
    assert labeller.conditioning == "replacement"
    assert "one-timestep labels by replacement conditioning" in caplog.text
    assert "--per_modality_timesteps" in caplog.text
    caplog.clear()
    unet = JointUNet2DModel(sample_size=16, num_classes=3, block_out_channels=(8, 16), norm_num_groups=4,
                            layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                            up_block_types=("UpBlock2D", "UpBlock2D"), per_modality_timesteps=True)
    pipe = DAKTerPipeline(unet=unet, scheduler=DAKTerPipeline.from_pretrained(pipeline_dir).scheduler)
    with caplog.at_level(logging.WARNING, logger="dakter_hf.distill.labellers"):
        assert GeneratorLabeller(pipe).conditioning == "exact"
    assert "replacement conditioning" not in caplog.text


def test_score_only_adds_pair_quality_and_keeps_the_pairs(pipeline_dir, source_dir, tmp_path):
    args = ["--labeller", str(pipeline_dir), "--seed", "3", *STEPS]
    relabel_command.main(["--generated_dataset", str(source_dir), *args, "--output_dir", str(tmp_path / "own")])
    # scored against the labeller that made its labels (same draws): agreement 1 up to the uint8 rounding
    relabel_command.main(["--generated_dataset", str(tmp_path / "own"), *args, "--score_only",
                          "--output_dir", str(tmp_path / "own-scored")])
    relabel_command.main(["--generated_dataset", str(source_dir), *args, "--score_only",
                          "--output_dir", str(tmp_path / "scored")])
    own = load_generated_dataset(str(tmp_path / "own-scored"))
    scored = load_generated_dataset(str(tmp_path / "scored"))
    assert min(own["pair_quality"]) > 0.99 and min(own["pair_quality_miou"]) > 0.9
    assert max(scored["pair_quality"]) < 0.95  # random soft labels disagree with the labeller
    source = load_generated_dataset(str(source_dir))
    np.testing.assert_array_equal(stored_probs(tmp_path / "scored"), stored_probs(source_dir))
    assert scored["seed"] == source["seed"] and scored.column_names == [*source.column_names, "pair_quality",
                                                                        "pair_quality_miou"]
    assert "## Pair quality" in (tmp_path / "scored" / "README.md").read_text()
    # relabelling a scored copy drops the scores, which would no longer describe its labels
    relabel_command.main(["--generated_dataset", str(tmp_path / "scored"), *args,
                          "--output_dir", str(tmp_path / "rescored")])
    assert "pair_quality" not in load_generated_dataset(str(tmp_path / "rescored")).column_names


def test_interrupted_relabelling_resumes(pipeline_dir, source_dir, tmp_path, monkeypatch):
    from dakter_hf.distill import labellers

    args = ["--generated_dataset", str(source_dir), "--labeller", str(pipeline_dir), "--num_samples", "2", *STEPS,
            "--batch_size", "2"]
    relabel_command.main([*args, "--output_dir", str(tmp_path / "whole")])
    calls = []
    original = labellers.GeneratorLabeller.__call__

    def dies_on_second_batch(self, images, indices, size):
        calls.append(list(indices))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, images, indices, size)

    monkeypatch.setattr(labellers.GeneratorLabeller, "__call__", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        relabel_command.main([*args, "--output_dir", str(tmp_path / "resumed")])
    assert not (tmp_path / "resumed").exists() and (tmp_path / "resumed.partial").is_dir()
    monkeypatch.setattr(labellers.GeneratorLabeller, "__call__", original)
    resumed_calls = []
    monkeypatch.setattr(labellers.GeneratorLabeller, "__call__",
                        lambda self, images, indices, size: resumed_calls.append(list(indices)) or original(
                            self, images, indices, size))
    relabel_command.main([*args, "--output_dir", str(tmp_path / "resumed")])
    assert resumed_calls == [[2, 3], [4]]  # rows 0-1 were committed before the interruption
    np.testing.assert_array_equal(stored_probs(tmp_path / "resumed"), stored_probs(tmp_path / "whole"))
    # other settings against the interrupted run's shards: refused, naming the difference
    monkeypatch.setattr(labellers.GeneratorLabeller, "__call__", dies_on_second_batch)
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        relabel_command.main([*args, "--output_dir", str(tmp_path / "third")])
    with pytest.raises(SystemExit):
        relabel_command.main([*args[:-2], "--batch_size", "1", "--output_dir", str(tmp_path / "third")])


def test_labeller_kind_is_detected_and_bad_labellers_are_refused(pipeline_dir, source_dir, student_dir, tmp_path,
                                                                  capsys):
    base = ["--generated_dataset", str(source_dir), "--output_dir", str(tmp_path / "out")]
    cases = [
        (["--labeller", str(tmp_path)], f"labeller {str(tmp_path)!r} is neither a DAKTer pipeline directory"),
        (["--labeller", str(tmp_path / "missing")], "is not a directory"),
        (["--student", str(pipeline_dir)], "is a DAKTer pipeline directory, not a student"),
        (["--labeller", str(student_dir), "--num_samples", "4"], "is a student: --num_samples apply to a generator"),
        (["--labeller", str(pipeline_dir), "--num_samples", "0"], "--num_samples must be a positive integer"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as error:
            relabel_command.main([*base, *extra])
        assert error.value.code == 2 and message in capsys.readouterr().err
    # a labeller of other classes: one line naming it (the student predicts 2 classes, the pairs have 3)
    with pytest.raises(SystemExit) as error:
        relabel_command.main([*base, "--labeller", str(student_dir)])
    assert error.value.code == 2 and "predicts 2 classes but the generated soft labels have 3" in (
        capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
