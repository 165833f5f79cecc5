"""The control arm: a generated dataset relabelled by a student (`dakter_hf.distill.relabel`,
`python -m dakter_hf.commands.relabel`) keeps its images and seeds and carries the student's soft labels."""

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


def test_relabel_with_a_student_of_other_classes_is_refused(student_dir):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    model = AutoModelForSemanticSegmentation.from_pretrained(student_dir)
    processor = AutoImageProcessor.from_pretrained(student_dir, backend="pil")
    with pytest.raises(ValueError, match="predicts 2 classes but the generated soft labels have 3"):
        relabel_with_student(generated_dataset(2, num_classes=3), model, processor)
