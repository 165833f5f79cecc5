"""Tests of mask-conditioned datasets (`dakter_hf.generation.generate_mask_conditioned_to_disk`): schema and source
columns, the masks as labels, flips / rotations, bit-exact resume, the split between processes, cards and errors."""

import json
import os
import subprocess
import sys

import datasets
import numpy as np
import PIL.Image
import pytest

from dakter_hf import DAKTerPipeline
from dakter_hf.data import simulate_sar_scenes
from dakter_hf.data.generated import MASK_TRANSFORMS
from dakter_hf.errors import NonFiniteError
from dakter_hf.generation import (
    GenerationProgress,
    apply_mask_transform,
    decode_soft_labels,
    generate_mask_conditioned_to_disk,
    generate_to_disk,
    get_generated_id2label,
    mask_transform_of_row,
    work_dir_for,
)

from tiny_models import make_unet_output_nan, tiny_pipeline


ID2LABEL = {0: "sea", 1: "oil_spill"}
SETTINGS = dict(seed=3, num_inference_steps=3, id2label=ID2LABEL, batch_size=2)
K = 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(num_classes=2)


@pytest.fixture(scope="module")
def masks():
    return simulate_sar_scenes(3, size=16, seed=1, num_classes=2)


@pytest.fixture(scope="module")
def reference(pipe, masks, tmp_path_factory):
    return generate_mask_conditioned_to_disk(pipe, masks, tmp_path_factory.mktemp("m") / "drawn", num_images_per_mask=K,
                                             augment_masks=True, masks_name="simulated scenes", **SETTINGS)


def test_schema_labels_and_source_columns(pipe, masks, reference, tmp_path):
    dataset = reference.dataset
    assert len(dataset) == len(masks) * K
    joint = generate_to_disk(pipe, tmp_path / "joint", 2, **SETTINGS).dataset
    # the joint schema, plus the two source columns
    assert {name: dataset.features[name] for name in joint.features} == dict(joint.features)
    assert set(dataset.features) - set(joint.features) == {"source_mask", "mask_transform"}
    assert get_generated_id2label(dataset) == ID2LABEL
    assert dataset["seed"] == list(range(3, 3 + len(dataset)))
    assert dataset["source_mask"] == [name for name in masks["id"] for _ in range(K)]
    assert set(dataset["mask_transform"]) <= set(MASK_TRANSFORMS)
    soft = decode_soft_labels(np.asarray(dataset.with_format("numpy")["soft_label"]), dtype=dataset.features)
    for i, row in enumerate(dataset):
        source = np.asarray(masks[i // K]["mask"])
        drawn_for = apply_mask_transform(source, row["mask_transform"])
        assert row["mask_transform"] == mask_transform_of_row(3, i, True)
        np.testing.assert_array_equal(np.asarray(row["label"]), drawn_for)  # the label is the mask drawn for
        np.testing.assert_array_equal(soft[i].argmax(axis=0), drawn_for)
        np.testing.assert_allclose(soft[i].max(axis=0), 1.0)  # one-hot: a class-index mask
        assert np.asarray(row["image"]).shape == (16, 16)
    # the images of one mask differ (their own seeds)
    images = np.stack([np.asarray(im, dtype=np.int16) for im in dataset["image"]])
    assert np.abs(images[0] - images[1]).max() > 0


def test_transforms_are_the_symmetries_of_the_square():
    mask = np.arange(12).reshape(3, 4)
    results = {name: apply_mask_transform(mask, name) for name in MASK_TRANSFORMS}
    assert len({r.tobytes() + bytes(r.shape) for r in results.values()}) == 8
    np.testing.assert_array_equal(results["identity"], mask)
    np.testing.assert_array_equal(results["rot90"], np.rot90(mask))
    np.testing.assert_array_equal(results["flip+rot180"], np.rot90(np.fliplr(mask), 2))
    assert {mask_transform_of_row(0, i, False) for i in range(20)} == {"identity"}
    drawn = [mask_transform_of_row(0, i, True) for i in range(400)]
    assert set(drawn) == set(MASK_TRANSFORMS) and drawn == [mask_transform_of_row(0, i, True) for i in range(400)]
    with pytest.raises(ValueError, match="Unknown mask transform"):
        apply_mask_transform(mask, "rot45")


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_bit_exactly(pipe, masks, reference, tmp_path):
    output_dir = tmp_path / "drawn"

    def stop(progress: GenerationProgress):
        if progress.batch_index == 1:
            raise Interrupt

    options = dict(num_images_per_mask=K, augment_masks=True, masks_name="simulated scenes", **SETTINGS)
    with pytest.raises(Interrupt):
        generate_mask_conditioned_to_disk(pipe, masks, output_dir, callback=stop, **options)
    assert not output_dir.exists()
    assert [n for n in sorted(os.listdir(work_dir_for(output_dir))) if n.startswith("shard-")] == [
        "shard-000000000-000000002", "shard-000000002-000000004"]
    with pytest.raises(ValueError, match=r"differing: \['masks'\]"):
        generate_mask_conditioned_to_disk(pipe, masks, output_dir, **{**options, "augment_masks": False})
    with pytest.raises(ValueError, match=r"differing: \['masks'\]"):  # other masks
        generate_mask_conditioned_to_disk(pipe, simulate_sar_scenes(3, size=16, seed=2, num_classes=2), output_dir,
                                          **options)
    resumed = generate_mask_conditioned_to_disk(pipe, masks, output_dir, **options)
    assert (resumed.num_resumed, resumed.num_generated) == (4, 2)
    assert resumed.dataset.features == reference.dataset.features
    assert resumed.dataset.data.table.equals(reference.dataset.data.table)


def test_bfloat16_draws_close_to_float32_and_is_recorded(pipe, masks, reference, tmp_path):
    options = dict(num_images_per_mask=K, augment_masks=True, masks_name="simulated scenes", **SETTINGS)
    drawn = generate_mask_conditioned_to_disk(pipe, masks, tmp_path / "bf16", dtype="bfloat16", **options)
    images = {name: np.stack([np.asarray(im, dtype=np.float64) for im in out.dataset["image"]])
              for name, out in (("float32", reference), ("bfloat16", drawn))}
    assert not np.array_equal(images["float32"], images["bfloat16"])  # bf16 really ran
    assert np.abs(images["float32"] - images["bfloat16"]).mean() < 2.0  # a few grey levels of rounding at most
    # the labels are the masks drawn for, whatever the compute dtype
    assert drawn.dataset.select_columns(["soft_label", "mask_transform", "source_mask"]).data.table.equals(
        reference.dataset.select_columns(["soft_label", "mask_transform", "source_mask"]).data.table)
    settings = json.loads(open(drawn.card_path, encoding="utf-8").read().split("```json")[1].split("```")[0])
    assert settings["compute_dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        generate_mask_conditioned_to_disk(pipe, masks, tmp_path / "bad", dtype="bf16", **options)
    assert not (tmp_path / "bad").exists()


def test_non_finite_images_are_refused(masks, tmp_path):
    broken = make_unet_output_nan(tiny_pipeline(num_classes=2))
    with pytest.raises(NonFiniteError, match="non-finite images for the seeds 3..4"):
        generate_mask_conditioned_to_disk(broken, masks, tmp_path / "drawn", **SETTINGS)
    assert not (tmp_path / "drawn").exists()
    assert [n for n in os.listdir(work_dir_for(tmp_path / "drawn")) if n.startswith("shard-")] == []


def test_card_and_preview(reference):
    text = open(reference.card_path, encoding="utf-8").read()
    assert "drawn for a real mask of simulated scenes (3 masks, 2 image(s) per mask" in text
    assert "`source_mask`" in text and "`mask_transform`" in text
    assert "generate_mask_conditioned_to_disk" in text
    settings = json.loads(text.split("```json")[1].split("```")[0])
    assert settings["masks"]["num_masks"] == 3 and settings["masks"]["augment"] is True
    assert settings["conditioning"] == {"mode": "replacement", "jump_length": 10, "jump_n_sample": 1}
    assert reference.preview_path and os.path.isfile(reference.preview_path)


def test_bad_input(pipe, masks, tmp_path):
    with pytest.raises(ValueError, match="'mask' column"):
        generate_mask_conditioned_to_disk(pipe, masks.remove_columns("mask"), tmp_path / "a")
    with pytest.raises(ValueError, match="empty"):
        generate_mask_conditioned_to_disk(pipe, masks.select([]), tmp_path / "a")
    with pytest.raises(ValueError, match="num_images_per_mask"):
        generate_mask_conditioned_to_disk(pipe, masks, tmp_path / "a", num_images_per_mask=0)
    with pytest.raises(ValueError, match="conditioning='exact'"):
        generate_mask_conditioned_to_disk(pipe, masks, tmp_path / "a", conditioning="exact")
    class_four = datasets.Dataset.from_dict(
        {"mask": [PIL.Image.fromarray(np.full((16, 16), 4, dtype=np.uint8))] * 2, "id": ["a", "b"]},
        features=datasets.Features({"mask": datasets.Image(), "id": datasets.Value("string")}))
    with pytest.raises(ValueError, match=r"row 0 \('a'\): class ids must lie in \[0, 2\)"):
        generate_mask_conditioned_to_disk(pipe, class_four, tmp_path / "b", **SETTINGS)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_command_writes_the_library_dataset(pipe, tmp_path):
    from dakter_hf.commands.generate import main
    from dakter_hf.data import load_dataset_by_name

    pipeline_dir = tmp_path / "pipeline"
    DAKTerPipeline(**pipe.components, id2label=ID2LABEL).save_pretrained(pipeline_dir)
    output_dir = tmp_path / "drawn"
    arguments = ["--pipeline", str(pipeline_dir), "--output_dir", str(output_dir), "--masks_from_dataset",
                 "--dataset", "simulated", "--simulated_num_classes", "2", "--num_train_samples", "2",
                 "--images_per_mask", "2", "--augment_masks", "--batch_size", "2", "--num_inference_steps", "3",
                 "--seed", "3"]
    assert main(arguments) == 0
    masks = load_dataset_by_name("simulated", split="train", resolution=16, num_samples=2, seed=0, num_classes=2)
    library = generate_mask_conditioned_to_disk(DAKTerPipeline.from_pretrained(pipeline_dir), masks,
                                                tmp_path / "library", num_images_per_mask=2, augment_masks=True,
                                                **SETTINGS)
    command = datasets.load_from_disk(str(output_dir))
    assert command.features == library.dataset.features
    assert command.data.table.equals(library.dataset.data.table)
    assert "simulated train, 2 pairs (seed 0)" in (output_dir / "README.md").read_text()

    # `accelerate launch` with 2 CPU processes: each draws its block, the main process assembles the same dataset
    two_processes = tmp_path / "two-processes"
    arguments[arguments.index("--output_dir") + 1] = str(two_processes)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "dakter_hf.commands.generate", *arguments]
    result = subprocess.run(launch, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generated now: 2" in result.stderr  # the main process's block: rows 0..1 of 0..3
    assert datasets.load_from_disk(str(two_processes)).data.table.equals(library.dataset.data.table)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--masks_from_dataset", "--num_samples", "4"], "--num_samples is the number of masks"),
        (["--masks_from_dataset", "--soft_label_temperature", "2"], "--soft_label_temperature does not apply"),
        (["--masks_from_dataset", "--dataset", "sos"], "--dataset sos needs --data_dir"),
        ([], "--num_samples is required"),
    ],
)
def test_command_argument_errors(extra, match, capsys):
    from dakter_hf.commands.generate import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--pipeline", "p", "--output_dir", "o", *extra])
    assert match in capsys.readouterr().err
