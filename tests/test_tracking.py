"""Images reach Accelerate's trackers (`dakter_hf.tracking`): logged to TensorBoard and read back from the event
file."""

import io

import numpy as np
import PIL.Image
import pytest
from accelerate import Accelerator

from dakter_hf.overlays import segmentation_overlay_rows, side_by_side
from dakter_hf.tracking import log_images


pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")


def read_tensorboard_images(logging_dir) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Every image of the event files under `logging_dir`: tag -> [(step, RGB array)]."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer(size_guidance={"images": 0})
    multiplexer.AddRunsFromDirectory(str(logging_dir))
    multiplexer.Reload()
    found = {}
    for run, tags in multiplexer.Runs().items():
        for tag in tags["images"]:
            found[tag] = [(event.step, np.asarray(PIL.Image.open(io.BytesIO(event.encoded_image_string))
                                                  .convert("RGB"))) for event in multiplexer.Images(run, tag)]
    return found


def test_images_are_logged_to_tensorboard(tmp_path):
    accelerator = Accelerator(log_with="tensorboard", project_dir=str(tmp_path))
    accelerator.init_trackers("run")
    red = np.zeros((6, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    grey = np.full((6, 8), 0.5, dtype=np.float32)  # floats in [0, 1], single channel
    assert log_images(accelerator, {"validation/samples": [red]}, step=3) == ["tensorboard"]
    log_images(accelerator, {"validation/samples": [grey]}, step=5)
    accelerator.end_training()

    images = read_tensorboard_images(tmp_path)
    assert [step for step, _ in images["validation/samples"]] == [3, 5]
    first, second = (image for _, image in images["validation/samples"])
    np.testing.assert_array_equal(first, red)
    assert second.shape == (6, 8, 3) and np.all(second == 128)


def test_without_trackers_nothing_is_logged(tmp_path):
    accelerator = Accelerator(project_dir=str(tmp_path))
    assert log_images(accelerator, {"x": [np.zeros((2, 2))]}, step=0) == []


def test_side_by_side():
    row = side_by_side(np.zeros((4, 3)), np.ones((4, 5, 3), dtype=np.float32), gap=2)
    assert row.shape == (4, 3 + 2 + 5, 3)
    assert row[0, 3, 0] == 255 and row[0, 0, 0] == 0 and row[0, -1, 0] == 255
    with pytest.raises(ValueError, match="height"):
        side_by_side(np.zeros((4, 3)), np.zeros((5, 3)))


def test_segmentation_overlay_rows():
    import torch

    pixel_values = torch.linspace(-1, 1, 2 * 8 * 8).reshape(2, 1, 8, 8)
    logits = torch.zeros(2, 2, 4, 4)
    logits[:, 1, :2] = 5.0  # class 1 predicted in the top half
    labels = [torch.zeros(8, 8, dtype=torch.long), torch.full((6, 6), 255)]
    labels[0][4:] = 1
    rows = segmentation_overlay_rows(pixel_values, logits, labels, palette=[(0, 0, 0), (0, 0, 1)])
    assert [row.shape for row in rows] == [(8, 8 * 3 + 4, 3), (6, 6 * 3 + 4, 3)]
    prediction, truth = rows[0][:, 10:18], rows[0][:, 20:28]
    assert (prediction[0, :, 2] > prediction[0, :, 0]).all() and (prediction[-1, :, 2] == prediction[-1, :, 0]).all()
    assert (truth[-1, :, 2] > truth[-1, :, 0]).all() and (truth[0, :, 2] == truth[0, :, 0]).all()
    np.testing.assert_array_equal(rows[1][:, 16:22], rows[1][:, :6])  # all ignored: the plain image
    assert len(segmentation_overlay_rows(pixel_values, logits, max_rows=1)) == 1


def test_generator_validation_grids_reach_tensorboard(tmp_path):
    from accelerate.state import AcceleratorState
    from test_training import TINY_ARGS

    from dakter_hf.commands import train

    AcceleratorState._reset_state(reset_partial_state=True)
    train.main([*TINY_ARGS, "--output_dir", str(tmp_path), "--max_train_steps", "2", "--validation_steps", "1",
                "--checkpointing_steps", "2", "--report_to", "tensorboard"])
    images = read_tensorboard_images(tmp_path)
    assert [step for step, _ in images["validation/samples"]] == [1, 2]
    for step, image in images["validation/samples"]:  # the PNG grid written at that step
        saved = np.asarray(PIL.Image.open(tmp_path / "validation" / f"step-{step:06d}.png").convert("RGB"))
        np.testing.assert_array_equal(image, saved)


def test_images_of_different_sizes_share_one_grid(tmp_path):
    accelerator = Accelerator(log_with="tensorboard", project_dir=str(tmp_path))
    accelerator.init_trackers("run")
    log_images(accelerator, {"eval/predictions": [np.zeros((4, 6, 3), np.uint8), np.zeros((2, 3, 3), np.uint8)]},
               step=1)
    accelerator.end_training()
    ((step, grid),) = read_tensorboard_images(tmp_path)["eval/predictions"]
    assert step == 1 and grid.shape[0] >= 4 and (grid == 255).any() and (grid == 0).any()


def test_student_prediction_overlays_reach_tensorboard(tmp_path):
    from test_distill import base_args

    from dakter_hf.commands import distill

    distill.main(base_args(tmp_path, "--mode", "real", "--max_train_steps", "2", "--eval_steps", "1",
                           "--report_to", "tensorboard"))
    images = read_tensorboard_images(tmp_path)
    assert [step for step, _ in images["eval/predictions"]] == [1, 2]
    _, grid = images["eval/predictions"][0]
    assert grid.shape[1] > 3 * 32  # image | prediction | ground truth rows of the 32x32 evaluation scenes


def test_images_are_logged_to_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    accelerator = Accelerator(log_with="wandb", project_dir=str(tmp_path))
    accelerator.init_trackers("dakter-test")
    images = [np.zeros((6, 8, 3), dtype=np.uint8), np.full((6, 8, 3), 255, dtype=np.uint8)]
    assert log_images(accelerator, {"validation/samples": images}, step=2, captions=["a", "b"]) == ["wandb"]
    accelerator.end_training()
    media = sorted(tmp_path.glob("wandb/offline-run-*/files/media/images/validation/samples_*.png"))
    assert len(media) == 2
    assert {np.asarray(PIL.Image.open(path).convert("RGB"))[0, 0, 0] for path in media} == {0, 255}


def test_images_are_logged_to_trackio(tmp_path):
    pytest.importorskip("trackio", reason="trackio is not installed")
    from trackio.utils import MEDIA_DIR

    project = f"dakter-test-{tmp_path.name}"
    accelerator = Accelerator(log_with="trackio", project_dir=str(tmp_path))
    accelerator.init_trackers(project)
    assert log_images(accelerator, {"eval/predictions": [np.zeros((6, 8, 3), dtype=np.uint8)]}, step=1) == ["trackio"]
    accelerator.end_training()
    assert list((MEDIA_DIR / project).rglob("*.png"))
