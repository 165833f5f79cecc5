"""Tests of `dakter_hf.generation`: reproducible and resumable generation to disk, the index split between processes,
cards and previews. The helpers here (a tiny pipeline, the reference run) are shared with `test_commands_generate.py`
and `test_hub.py`; the soft-label codec is tested in `test_labels.py`."""

import copy
import json
import os

import datasets
import numpy as np
import pytest
import torch

from dakter_hf import DAKTerPipeline
from dakter_hf.generation import (
    SCHEDULERS,
    GenerationOutput,
    GenerationProgress,
    decode_soft_labels,
    generate_dataset,
    generate_to_disk,
    get_generated_id2label,
    resolve_id2label,
    set_scheduler,
    split_indices,
    unet_memory_format,
    work_dir_for,
)

from tiny_models import tiny_pipeline


ID2LABEL = {0: "sea", 1: "oil_spill", 2: "look_alike"}
SETTINGS = dict(seed=7, num_inference_steps=3, soft_label_temperature=1.5, id2label=ID2LABEL)
NUM_SAMPLES = 5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def generate_reference(pipe: DAKTerPipeline, output_dir) -> GenerationOutput:
    """An uninterrupted run: NUM_SAMPLES pairs with batches of 2."""
    return generate_to_disk(pipe, output_dir, NUM_SAMPLES, batch_size=2, **SETTINGS)


@pytest.fixture(scope="module")
def reference(pipe, tmp_path_factory):
    return generate_reference(pipe, tmp_path_factory.mktemp("reference") / "generated")


def test_top_level_exports():
    import dakter_hf
    from dakter_hf import decode_soft_labels as top_level

    assert top_level is decode_soft_labels and "decode_soft_labels" in dir(dakter_hf)


def assert_same_rows(a: datasets.Dataset, b: datasets.Dataset) -> None:
    assert a.features == b.features
    assert a.data.table.equals(b.data.table)


# ---------------------------------------------------------------------------------------------------------------
# Index split, reproducibility, schedulers, class names
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [0, 1, 7, 64, 101])
@pytest.mark.parametrize("num_processes", [1, 2, 3, 8])
def test_split_indices_partitions_the_range(num_samples, num_processes):
    parts = [split_indices(num_samples, num_processes, p) for p in range(num_processes)]
    assert [i for part in parts for i in part] == list(range(num_samples))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match="process_index"):
        split_indices(num_samples, num_processes, num_processes)


def test_subset_regenerates_rows_of_the_full_run(pipe, reference):
    subset = generate_dataset(pipe, [3, 4], batch_size=2, **SETTINGS)
    assert subset["seed"] == [10, 11]
    assert_same_rows(subset, reference.dataset.select([3, 4]).flatten_indices())


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_generates(name):
    pipe = set_scheduler(tiny_pipeline(), name)
    assert type(pipe.scheduler) is SCHEDULERS[name]
    rows = generate_dataset(pipe, 1, num_inference_steps=2, id2label=ID2LABEL).with_format("numpy")
    probs = decode_soft_labels(rows[0]["soft_label"])
    assert np.isfinite(probs).all() and probs.shape == (3, 16, 16)
    with pytest.raises(ValueError, match="scheduler"):
        set_scheduler(pipe, "heun")


def test_pipeline_id2label_is_stored_with_the_pipeline(tmp_path):
    pipe = tiny_pipeline()
    named = DAKTerPipeline(**pipe.components, id2label=ID2LABEL)
    named.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["id2label"]["1"] == "oil_spill"
    assert not (tmp_path / "dakter_config.json").exists()
    loaded = DAKTerPipeline.from_pretrained(str(tmp_path))
    assert resolve_id2label(loaded) == ID2LABEL
    assert resolve_id2label(pipe) == {0: "class_0", 1: "class_1", 2: "class_2"}  # nothing stored: placeholders
    assert resolve_id2label(loaded, {"0": "a", "1": "b", "2": "c"}) == {0: "a", 1: "b", 2: "c"}  # explicit wins
    with pytest.raises(ValueError, match="num_classes=3"):
        resolve_id2label(loaded, {0: "sea", 1: "oil_spill"})


# ---------------------------------------------------------------------------------------------------------------
# Generation to disk: layout, card, resume, atomicity
# ---------------------------------------------------------------------------------------------------------------


def test_dataset_on_disk(reference):
    output_dir = reference.output_dir
    ds = datasets.load_from_disk(output_dir)
    assert len(ds) == NUM_SAMPLES and ds.column_names == ["image", "soft_label", "label", "seed"]
    assert ds["seed"] == [7 + i for i in range(NUM_SAMPLES)]
    assert ds.features["soft_label"] == datasets.Array3D((3, 16, 16), "uint8")
    row = ds[0]
    assert row["image"].mode == "L" and row["label"].mode == "L" and row["image"].size == (16, 16)
    assert get_generated_id2label(ds) == ID2LABEL
    probs = decode_soft_labels(row["soft_label"], dtype=ds.features)
    # the label is the argmax of the unquantised probabilities: within 2/255 of the decoded maximum
    chosen = np.take_along_axis(probs, np.asarray(row["label"], dtype=np.int64)[None], axis=0)[0]
    assert (chosen >= probs.max(axis=0) - 2 / 255 - 1e-6).all()
    assert not os.path.exists(work_dir_for(output_dir))

    card = open(reference.card_path, encoding="utf-8").read()
    from huggingface_hub import DatasetCard

    meta = DatasetCard.load(reference.card_path).data.to_dict()
    assert meta["dakter"]["label_scale"] == 0.5 and meta["dakter"]["num_inference_steps"] == 3
    assert meta["dakter"]["scheduler"] == "DDPMScheduler" and meta["dakter"]["soft_label_temperature"] == 1.5
    assert meta["dakter"]["synthetic"] is True and meta["id2label"]["2"] == "look_alike"
    assert "synthetic" in card and "seed 7 + i" in card and "load_from_disk" in card


def test_preview_beside_the_dataset(reference):
    pytest.importorskip("dakter_hf.visualization")
    assert reference.preview_path == os.path.join(reference.output_dir, "preview.png")
    from PIL import Image

    assert Image.open(reference.preview_path).size[0] > 0


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_dataset(pipe, reference, tmp_path):
    output_dir = tmp_path / "generated"

    def stop_after_two_batches(progress: GenerationProgress):
        assert not output_dir.exists()
        if progress.batch_index == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        generate_to_disk(pipe, output_dir, NUM_SAMPLES, batch_size=2, callback=stop_after_two_batches, **SETTINGS)
    assert not output_dir.exists()
    assert sorted(os.listdir(work_dir_for(output_dir))) == [
        ".dakter_hf_owner.json", "manifest.json", "shard-000000000-000000002", "shard-000000002-000000004"]

    seen = []
    with pytest.raises(ValueError, match=r"differing: \['batch_size'\]"):
        generate_to_disk(pipe, output_dir, NUM_SAMPLES, batch_size=3, **SETTINGS)
    resumed = generate_to_disk(pipe, output_dir, NUM_SAMPLES, batch_size=2, callback=seen.append, **SETTINGS)
    assert (resumed.num_resumed, resumed.num_generated) == (4, 1)
    assert [p.indices for p in seen] == [[4]]
    assert_same_rows(resumed.dataset, reference.dataset)
    assert not os.path.exists(work_dir_for(output_dir))


def test_resume_with_other_settings_is_refused(pipe, tmp_path):
    output_dir = tmp_path / "generated"

    def interrupt(progress):
        raise Interrupt

    with pytest.raises(Interrupt):
        generate_to_disk(pipe, output_dir, 4, batch_size=2, callback=interrupt, **SETTINGS)
    with pytest.raises(ValueError, match=r"different settings \(differing: \['seed'\]\)"):
        generate_to_disk(pipe, output_dir, 4, batch_size=2, **{**SETTINGS, "seed": 8})
    out = generate_to_disk(pipe, output_dir, 2, batch_size=2, overwrite=True, **{**SETTINGS, "seed": 8})
    assert out.dataset["seed"] == [8, 9] and out.num_resumed == 0


def channels_last_copy(pipe) -> DAKTerPipeline:
    unet = copy.deepcopy(pipe.unet).to(memory_format=torch.channels_last)
    return DAKTerPipeline(unet=unet, scheduler=copy.deepcopy(pipe.scheduler))


def test_memory_layout_of_the_kernels():
    unet = tiny_pipeline().unet
    assert unet_memory_format(unet) == "contiguous"
    conv = next(m for m in unet.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
                and m.kernel_size != (1, 1))
    conv.to(memory_format=torch.channels_last)
    assert unet_memory_format(unet) == "mixed"
    unet.to(memory_format=torch.channels_last)
    assert unet_memory_format(unet) == "channels_last"


def test_channels_last_run_is_recorded_and_differs_by_rounding_only(pipe, reference, tmp_path):
    output_dir = tmp_path / "generated"
    fast = channels_last_copy(pipe)

    def interrupt(progress):
        raise Interrupt

    with pytest.raises(Interrupt):  # an interrupted run in the default layout ...
        generate_to_disk(pipe, output_dir, NUM_SAMPLES, batch_size=2, callback=interrupt, **SETTINGS)
    with pytest.raises(ValueError, match=r"differing: \['unet_memory_format'\]"):  # ... does not resume in another
        generate_to_disk(fast, output_dir, NUM_SAMPLES, batch_size=2, **SETTINGS)
    out = generate_to_disk(fast, output_dir, NUM_SAMPLES, batch_size=2, overwrite=True, **SETTINGS)
    card = (output_dir / "README.md").read_text()
    assert '"unet_memory_format": "channels_last"' in card and "channels-last memory layout" in card
    assert "memory layout" not in open(reference.card_path, encoding="utf-8").read()

    ours, theirs = out.dataset.with_format("numpy"), reference.dataset.with_format("numpy")
    assert list(out.dataset["seed"]) == list(reference.dataset["seed"])
    soft = [decode_soft_labels(ds["soft_label"], dtype=ds.features) for ds in (ours, theirs)]
    assert np.abs(soft[0] - soft[1]).max() <= 1 / 255 + 1e-6
    images = [np.stack([np.asarray(image, dtype=np.int16) for image in ds["image"]])
              for ds in (out.dataset, reference.dataset)]
    assert np.abs(images[0] - images[1]).max() <= 1


def test_existing_output_dir_needs_overwrite(pipe, tmp_path):
    output_dir = tmp_path / "generated"
    generate_to_disk(pipe, output_dir, 1, **SETTINGS)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_to_disk(pipe, output_dir, 2, **SETTINGS)
    out = generate_to_disk(pipe, output_dir, 2, overwrite=True, **SETTINGS)  # a dataset may be replaced
    assert len(datasets.load_from_disk(out.output_dir)) == 2
    assert sorted(os.listdir(tmp_path)) == ["generated"]  # no .old, no .partial left
    (tmp_path / "notes").mkdir()  # ... another kind of directory may not (tests/test_bad_input.py)
    with pytest.raises(FileExistsError, match="replaces a dataset only"):
        generate_to_disk(pipe, tmp_path / "notes", 1, overwrite=True, **SETTINGS)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_float_soft_labels(pipe, reference, tmp_path, dtype):
    out = generate_to_disk(pipe, tmp_path / dtype, 2, batch_size=2, soft_label_dtype=dtype, **SETTINGS)
    assert out.dataset.features["soft_label"].dtype == dtype
    ours = decode_soft_labels(out.dataset.with_format("numpy")["soft_label"])
    quantized = decode_soft_labels(reference.dataset.with_format("numpy")[:2]["soft_label"])
    assert np.abs(ours - quantized).max() <= 1 / 255 + 1e-3
