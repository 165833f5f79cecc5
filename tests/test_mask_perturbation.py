"""Tests of layout perturbations of mask-conditioned datasets (`dakter_hf.generation.mask_perturbation`, lever f of
issue #24) and of concatenated generated datasets (`dakter_hf.generation.concatenate`): valid masks, determinism per
row seed, the recorded column, resume refused with other settings, cards, command-line errors."""

import json

import datasets
import numpy as np
import pytest

from dakter_hf.data import simulate_sar_scenes
from dakter_hf.generation import (
    MASK_PERTURBATIONS,
    GenerationProgress,
    MaskPerturber,
    apply_mask_perturbation,
    apply_mask_transform,
    concatenate_generated_datasets,
    decode_soft_labels,
    generate_mask_conditioned_to_disk,
    generate_to_disk,
)

from tiny_models import tiny_pipeline


pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = dict(seed=3, num_inference_steps=2, batch_size=2)


def _masks(num_classes, count=4, size=16, seed=1):
    scenes = simulate_sar_scenes(count, size=size, seed=seed, num_classes=num_classes)
    return [np.asarray(m, dtype=np.int64) for m in scenes["mask"]], scenes


def _perturber(masks, kinds=MASK_PERTURBATIONS):
    return MaskPerturber(lambda i: masks[i], [f"m{i}" for i in range(len(masks))], kinds)


def test_each_perturbation_does_what_it_says():
    mask = np.zeros((9, 9), dtype=np.int64)
    mask[3:6, 3:6] = 1
    mask[0, 8] = 2
    dilated = apply_mask_perturbation(mask, "dilate:1")
    assert (dilated[2:7, 4] == 1).all() and (dilated[4, 2:7] == 1).all() and dilated[2, 2] == 0  # a disk of radius 1
    assert dilated[1, 8] == 2 and dilated[0, 7] == 2  # every region class grows, keeping its id
    eroded = apply_mask_perturbation(mask, "erode:1")
    assert eroded[4, 4] == 1 and (eroded == 1).sum() == 1
    assert (eroded == 2).sum() == 0  # a one-pixel region erodes away
    band = np.zeros((6, 6), dtype=np.int64)
    band[:3] = 1  # a region crossing the frame does not shrink from the frame: the border counts as region
    np.testing.assert_array_equal(apply_mask_perturbation(band, "erode:1") == 1,
                                  np.repeat(np.arange(6)[:, None] < 2, 6, axis=1))
    shifted = apply_mask_perturbation(mask, "shift:2,1")
    assert (shifted[5:8, 4:7] == 1).all() and (shifted == 1).sum() == 9
    assert (shifted[:2] == 0).all() and (shifted == 2).sum() == 0  # filled with background; pixel (0, 8) left the frame
    other = np.zeros((9, 9), dtype=np.int64)
    other[4:9, 0:5] = 3
    composed = apply_mask_perturbation(mask, "compose:x", other)
    assert (composed[3:6, 3:6] == 1).all()  # the mask's own regions stay
    assert composed[8, 0] == 3 and composed[6, 4] == 3 and composed[0, 0] == 0
    for bad in ("rot45", "dilate:x", "shift:1", "compose"):
        with pytest.raises(ValueError, match="perturbation"):
            apply_mask_perturbation(mask, bad)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_perturbations_keep_shape_dtype_and_class_ids(num_classes):
    masks, _ = _masks(num_classes, count=6, size=24)
    perturb = _perturber(masks)
    kinds = set()
    for row_seed in range(60):
        source = row_seed % len(masks)
        perturbed, applied = perturb(masks[source], source, row_seed)
        kinds.add(applied.split(":")[0])
        assert perturbed.shape == masks[source].shape and perturbed.dtype == masks[source].dtype
        allowed = set(np.unique(masks[source])) | {0}
        if applied.startswith("compose:"):
            other = int(applied.split(":m")[1])
            assert other != source
            allowed |= set(np.unique(masks[other]))
            np.testing.assert_array_equal(perturbed, apply_mask_perturbation(masks[source], applied, masks[other]))
        else:
            np.testing.assert_array_equal(perturbed, apply_mask_perturbation(masks[source], applied))
        assert set(np.unique(perturbed)) <= allowed and perturbed.min() >= 0 and perturbed.max() < num_classes
        if applied.startswith("erode:") and masks[source].any():
            assert perturbed.any()  # erosion never empties a mask that has regions
        if applied.startswith("shift:"):
            assert applied != "shift:0,0"
            assert max(abs(int(v)) for v in applied[6:].split(",")) <= 6  # a quarter of 24
    assert kinds == set(MASK_PERTURBATIONS)


def test_perturbations_are_deterministic_per_row_seed_and_differ_across_seeds():
    masks, _ = _masks(2)
    first = [_perturber(masks)(masks[0], 0, seed) for seed in range(30)]
    again = [_perturber(masks)(masks[0], 0, seed) for seed in range(30)]
    assert [p for _, p in first] == [p for _, p in again]
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(first, again))
    assert len({p for _, p in first}) > 10  # other seeds, other perturbations
    only = _perturber(masks, kinds=["dilate"])
    assert {only(masks[0], 0, seed)[1].split(":")[0] for seed in range(10)} == {"dilate"}
    with pytest.raises(ValueError, match="`perturb_masks`: unknown"):
        _perturber(masks, kinds=["blur"])
    with pytest.raises(ValueError, match="'compose' adds the regions of another mask"):
        _perturber(masks[:1], kinds=["compose"])


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(num_classes=5)


@pytest.fixture(scope="module")
def scenes():
    return _masks(5, count=3)[1]


@pytest.fixture(scope="module")
def perturbed(pipe, scenes, tmp_path_factory):
    return generate_mask_conditioned_to_disk(pipe, scenes, tmp_path_factory.mktemp("p") / "drawn",
                                             num_images_per_mask=2, augment_masks=True, perturb_masks=True,
                                             masks_name="simulated scenes", **SETTINGS)


def test_the_recorded_column_is_what_the_image_was_drawn_for(perturbed, scenes):
    dataset = perturbed.dataset
    assert dataset.features["mask_perturbation"] == datasets.Value("string")
    masks = {name: np.asarray(m, dtype=np.int64) for name, m in zip(scenes["id"], scenes["mask"])}
    soft = decode_soft_labels(np.asarray(dataset.with_format("numpy")["soft_label"]), dtype=dataset.features)
    changed = 0
    for i, row in enumerate(dataset):
        source = masks[row["source_mask"]]
        applied = row["mask_perturbation"]
        other = masks[applied.split(":", 1)[1]] if applied.startswith("compose:") else None
        drawn_for = apply_mask_transform(apply_mask_perturbation(source, applied, other), row["mask_transform"])
        np.testing.assert_array_equal(np.asarray(row["label"]), drawn_for)
        np.testing.assert_array_equal(soft[i].argmax(axis=0), drawn_for)
        np.testing.assert_allclose(soft[i].max(axis=0), 1.0)  # one-hot: the soft label is the mask
        changed += not np.array_equal(drawn_for, apply_mask_transform(source, row["mask_transform"]))
    assert changed > 0
    text = open(perturbed.card_path, encoding="utf-8").read()
    assert "each mask first perturbed at random (dilate / erode / shift / compose" in text
    assert "`mask_perturbation`" in text and "`soft` and `hard` distillation learn the same" in text
    settings = json.loads(text.split("```json")[1].split("```")[0])
    assert settings["masks"]["perturb"]["kinds"] == list(MASK_PERTURBATIONS)


class Interrupt(Exception):
    pass


def test_resume_is_identical_and_refused_with_other_perturbations(pipe, scenes, perturbed, tmp_path):
    output_dir = tmp_path / "drawn"
    options = dict(num_images_per_mask=2, augment_masks=True, masks_name="simulated scenes", **SETTINGS)

    def stop(progress: GenerationProgress):
        if progress.batch_index == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        generate_mask_conditioned_to_disk(pipe, scenes, output_dir, perturb_masks=True, callback=stop, **options)
    for other in (False, ["dilate", "erode"]):
        with pytest.raises(ValueError, match=r"differing: \['masks'\]"):
            generate_mask_conditioned_to_disk(pipe, scenes, output_dir, perturb_masks=other, **options)
    resumed = generate_mask_conditioned_to_disk(pipe, scenes, output_dir, perturb_masks=True, **options)
    assert resumed.num_resumed == 4 and resumed.dataset.data.table.equals(perturbed.dataset.data.table)
    plain = generate_mask_conditioned_to_disk(pipe, scenes, tmp_path / "plain", **options).dataset
    assert "mask_perturbation" not in plain.column_names  # the schema of unperturbed sets is unchanged
    with pytest.raises(ValueError, match="perturb_masks"):
        generate_mask_conditioned_to_disk(pipe, scenes, tmp_path / "bad", perturb_masks=["blur"], **options)
    with pytest.raises(ValueError, match="perturb_masks"):
        generate_mask_conditioned_to_disk(pipe, scenes, tmp_path / "bad", perturb_masks=[], **options)
    assert not (tmp_path / "bad").exists()


def test_concatenated_joint_and_mask_conditioned_pairs(pipe, perturbed, tmp_path):
    joint = generate_to_disk(pipe, tmp_path / "joint", 5, **SETTINGS)
    mixed = concatenate_generated_datasets([joint.output_dir, perturbed.output_dir], tmp_path / "mixed", [3, None])
    assert len(mixed) == 3 + len(perturbed.dataset)
    assert mixed.column_names == ["image", "soft_label", "label", "seed", "source_mask", "mask_transform",
                                  "mask_perturbation", "generated_set"]
    assert list(mixed["generated_set"]) == ["joint"] * 3 + ["drawn"] * len(perturbed.dataset)
    assert list(mixed["source_mask"]) == [None] * 3 + list(perturbed.dataset["source_mask"])
    assert list(mixed["seed"]) == list(joint.dataset["seed"])[:3] + list(perturbed.dataset["seed"])
    assert mixed.features["soft_label"] == joint.dataset.features["soft_label"]
    np.testing.assert_array_equal(np.asarray(mixed.with_format("numpy")["soft_label"][4]),
                                  np.asarray(perturbed.dataset.with_format("numpy")["soft_label"][1]))
    card = (tmp_path / "mixed" / "README.md").read_text()
    assert "| first 3 of 5 rows | joint samples" in card and "images drawn for real masks: one-hot" in card

    with pytest.raises(FileExistsError, match="already exists"):
        concatenate_generated_datasets([joint.output_dir, perturbed.output_dir], tmp_path / "mixed")
    with pytest.raises(ValueError, match="it has 5 rows"):
        concatenate_generated_datasets([joint.output_dir, perturbed.output_dir], tmp_path / "x", [6, None])
    with pytest.raises(ValueError, match="at least two"):
        concatenate_generated_datasets([joint.output_dir], tmp_path / "x")
    three = generate_to_disk(tiny_pipeline(num_classes=3), tmp_path / "three", 2, **SETTINGS)
    with pytest.raises(ValueError, match="'soft_label' feature"):
        concatenate_generated_datasets([joint.output_dir, three.output_dir], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_concatenate_command(perturbed, tmp_path, capsys):
    from dakter_hf.commands.concatenate import main, parse_args

    output_dir = tmp_path / "twice"
    assert main(["--generated_dataset", perturbed.output_dir, perturbed.output_dir, "--num_samples", "2", "3",
                 "--output_dir", str(output_dir)]) == 0
    assert len(datasets.load_from_disk(str(output_dir))) == 5
    with pytest.raises(SystemExit):
        parse_args(["--generated_dataset", "a", "b", "--num_samples", "2", "--output_dir", "o"])
    assert "--num_samples needs one value per --generated_dataset (2)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--generated_dataset", str(tmp_path / "missing"), "a", "--output_dir", str(tmp_path / "o")])
    assert "cannot be loaded" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--num_samples", "4", "--perturb_masks"], "--perturb_masks only apply with --masks_from_dataset"),
        (["--num_samples", "4", "--augment_masks"], "--augment_masks only apply with --masks_from_dataset"),
        (["--masks_from_dataset", "--perturb_masks", "blur"], "--perturb_masks: invalid choice: 'blur'"),
    ],
)
def test_command_argument_errors(extra, match, capsys):
    from dakter_hf.commands.generate import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--pipeline", "p", "--output_dir", "o", *extra])
    assert match in capsys.readouterr().err


def test_command_perturb_masks_flag():
    from dakter_hf.commands.generate import parse_args

    base = ["--pipeline", "p", "--output_dir", "o", "--masks_from_dataset", "--dataset", "simulated"]
    assert parse_args(base).perturb_masks is None
    assert parse_args([*base, "--perturb_masks"]).perturb_masks == []
    assert parse_args([*base, "--perturb_masks", "dilate", "shift"]).perturb_masks == ["dilate", "shift"]
