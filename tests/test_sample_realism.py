"""The Fréchet distance (`dakter_hf.metrics.frechet_distance`), a student's image features and the realism of
generated images against real ones (`dakter_hf.generation.measure_sample_realism`, `benchmarks/sample_realism.py`)."""

import json

import numpy as np
import PIL.Image
import pytest
from datasets import Dataset

from dakter_hf.data import simulate_sar_scenes
from dakter_hf.distill import create_image_processor, create_student
from dakter_hf.generation import measure_sample_realism, student_image_features
from dakter_hf.metrics import frechet_distance

from repo_scripts import load_script


SIZE = 32
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------------------------------------------
# The distance
# ----------------------------------------------------------------------------------------------------------------------


def test_frechet_distance_of_one_dimensional_sets_is_the_closed_form():
    a, b = np.array([[0.0], [1.0], [3.0], [4.0]]), np.array([[2.0], [7.0], [5.0]])
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected)


def test_frechet_distance_of_a_scaled_and_shifted_set():
    """b = c a + t: Σ_b = c² Σ_a, so d² = |(c - 1) μ_a + t|² + (1 - c)² Tr(Σ_a), full covariances included."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6))  # correlated features
    c, t = 2.0, np.arange(6.0)
    b = c * a + t
    expected = np.sum(((c - 1) * a.mean(0) + t) ** 2) + (1 - c) ** 2 * np.trace(np.cov(a, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_handles_fewer_vectors_than_dimensions():
    """Rank-deficient covariances (fewer images than features, as with 225 images of 512-wide student features)."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 40)), rng.normal(size=(5, 40)) + 1.0
    assert np.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > frechet_distance(a, a[::-1])


@pytest.mark.parametrize("a, b, match", [
    (np.zeros((1, 3)), np.zeros((4, 3)), r"`features_a` must be a \(N, D\) array with N >= 2.*\(1, 3\)"),
    (np.zeros((4, 3)), np.zeros(4), r"`features_b` must be a \(N, D\) array"),
    (np.zeros((4, 3)), np.zeros((4, 2)), "same width, got 3 and 2"),
    (np.full((4, 3), np.nan), np.zeros((4, 3)), "`features_a` holds non-finite values"),
])
def test_frechet_distance_rejects_bad_features(a, b, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(a, b)


# ----------------------------------------------------------------------------------------------------------------------
# Student features and realism
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def student():
    model = create_student("tiny", id2label={0: "sea", 1: "oil"}, image_size=SIZE).eval()
    return model, create_image_processor(SIZE)


@pytest.fixture(scope="module")
def real_images():
    return list(simulate_sar_scenes(16, size=SIZE, seed=3, num_classes=2, split="test")["image"])


def noise_images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [PIL.Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)) for _ in range(n)]


def test_student_features_pool_every_encoder_stage(student, real_images):
    model, processor = student
    features = student_image_features(model, processor, real_images[:5], batch_size=2)
    assert features.shape == (5, sum(model.config.hidden_sizes))
    np.testing.assert_allclose(features, student_image_features(model, processor, real_images[:5], batch_size=5),
                               rtol=1e-4, atol=1e-5)  # the batching does not change a vector
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        student_image_features(model, processor, real_images[:2], batch_size=0)


def test_realism_tells_noise_from_real_images(student, real_images):
    model, processor = student
    other_real = list(simulate_sar_scenes(16, size=SIZE, seed=11, num_classes=2, split="test")["image"])
    realistic = measure_sample_realism(model, processor, real_images, other_real, num_splits=3)
    noise = measure_sample_realism(model, processor, real_images, noise_images(16), num_splits=3)
    assert realistic["num_images"] == 8 and len(noise["per_split"]) == 3
    # the same real halves for both datasets: a paired comparison
    assert [s["real_to_real"] for s in realistic["per_split"]] == [s["real_to_real"] for s in noise["per_split"]]
    # (an untrained tiny student: its features still place noise further from SAR scenes than other SAR scenes)
    assert noise["frechet_distance"] > realistic["frechet_distance"] and noise["ratio"] > realistic["ratio"]
    assert realistic["frechet_distance"] == pytest.approx(
        np.mean([s["frechet_distance"] for s in realistic["per_split"]]))
    again = measure_sample_realism(model, processor, real_images, other_real, num_splits=3)
    assert again["per_split"] == realistic["per_split"]  # seeded


@pytest.mark.parametrize("n_real, n_generated, num_splits, match", [
    (3, 10, 1, "at least 4 images"),
    (16, 7, 1, "at least 8 images"),
    (16, 16, 0, "`num_splits` must be a positive integer"),
])
def test_realism_rejects_too_few_images(student, n_real, n_generated, num_splits, match):
    model, processor = student
    with pytest.raises(ValueError, match=match):
        measure_sample_realism(model, processor, noise_images(n_real), noise_images(n_generated, 1),
                               num_splits=num_splits)


def test_script_compares_datasets_split_by_split(student, tmp_path, capsys):
    model, processor = student
    model.save_pretrained(tmp_path / "student")
    processor.save_pretrained(tmp_path / "student")
    for name, images in (("near", list(simulate_sar_scenes(64, size=SIZE, seed=8, num_classes=2)["image"])),
                         ("noise", noise_images(64))):  # half of the 128 scenes of the simulated test split
        Dataset.from_dict({"image": images}).save_to_disk(tmp_path / name)
    script = load_script("benchmarks/sample_realism.py")
    output = tmp_path / "realism.json"
    report = script.main(["--student", str(tmp_path / "student"), "--generated_dataset", str(tmp_path / "near"),
                          str(tmp_path / "noise"), "--split", "test", "--resolution", str(SIZE), "--num_splits", "2",
                          "--output_json", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(report))
    near, noise = (report["datasets"][str(tmp_path / name)] for name in ("near", "noise"))
    difference = report["paired_differences_to_first"][str(tmp_path / "noise")]
    assert difference["mean"] == pytest.approx(noise["frechet_distance"] - near["frechet_distance"])
    assert difference["mean"] > 0
    assert "Fréchet distance" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # a missing dataset is named before any work
        script.main(["--student", str(tmp_path / "student"), "--generated_dataset", str(tmp_path / "missing")])
    assert "--generated_dataset" in capsys.readouterr().err
    Dataset.from_dict({"image": noise_images(10)}).save_to_disk(tmp_path / "small")
    with pytest.raises(SystemExit, match=r"small.*needs at least 64 images \(half of the 128 real ones\), got 10"):
        script.main(["--student", str(tmp_path / "student"), "--generated_dataset", str(tmp_path / "small"),
                     "--split", "test", "--resolution", str(SIZE)])
