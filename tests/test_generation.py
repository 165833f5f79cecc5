"""Tests of `dakter_hf.generation` and the `dakter-generate` command: the soft-label codec, reproducible and resumable
generation to disk, the index split between processes, cards and Hub round trips."""

import copy
import json
import os

import datasets
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from dakter_hf import DAKTerPipeline, JointUNet2DModel
from dakter_hf.generation import (
    SCHEDULERS,
    GenerationProgress,
    decode_soft_labels,
    encode_soft_labels,
    generate_dataset,
    generate_to_disk,
    get_generated_id2label,
    quantize_soft_labels,
    resolve_id2label,
    set_scheduler,
    split_indices,
    unet_memory_format,
    work_dir_for,
)


ID2LABEL = {0: "sea", 1: "oil_spill", 2: "look_alike"}
SETTINGS = dict(seed=7, num_inference_steps=3, soft_label_temperature=1.5, id2label=ID2LABEL)
NUM_SAMPLES = 5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The machine's 2 cores are shared: one intra-op thread avoids OpenMP oversubscription (20x faster here)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_pipeline(seed: int = 0) -> DAKTerPipeline:
    torch.manual_seed(seed)
    unet = JointUNet2DModel(sample_size=16, num_classes=3, block_out_channels=(8, 16),
                            down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                            norm_num_groups=4, layers_per_block=1, label_scale=0.5)
    return DAKTerPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50))


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline()


@pytest.fixture(scope="module")
def reference(pipe, tmp_path_factory):
    """An uninterrupted run: NUM_SAMPLES pairs with batches of 2."""
    output_dir = tmp_path_factory.mktemp("reference") / "generated"
    return generate_to_disk(pipe, output_dir, NUM_SAMPLES, batch_size=2, **SETTINGS)


def test_top_level_exports():
    import dakter_hf
    from dakter_hf import decode_soft_labels as top_level

    assert top_level is decode_soft_labels and "decode_soft_labels" in dir(dakter_hf)


def assert_same_rows(a: datasets.Dataset, b: datasets.Dataset) -> None:
    assert a.features == b.features
    assert a.data.table.equals(b.data.table)


# ---------------------------------------------------------------------------------------------------------------
# Soft-label codec
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [2, 3, 5, 16])
def test_quantization_sums_to_255_and_is_within_one_level(num_classes):
    rng = np.random.default_rng(num_classes)
    logits = torch.from_numpy(rng.normal(scale=3.0, size=(4, num_classes, 9, 7)))
    probs = torch.softmax(logits, dim=1).float().numpy()
    quantized = quantize_soft_labels(probs)
    assert quantized.dtype == np.uint8 and quantized.shape == probs.shape
    assert (quantized.astype(np.int64).sum(axis=1) == 255).all()
    decoded = decode_soft_labels(quantized)
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded.sum(axis=1), 1.0, atol=1e-6)
    assert np.abs(decoded - probs).max() <= 1 / 255


def test_quantization_edge_cases():
    uniform = np.full((3, 2, 2), 1 / 3, dtype=np.float32)
    q = quantize_soft_labels(uniform)
    assert (q.astype(int).sum(axis=0) == 255).all() and set(np.unique(q)) == {85}
    onehot = np.zeros((2, 1, 1), dtype=np.float32)
    onehot[1] = 1
    assert quantize_soft_labels(onehot)[:, 0, 0].tolist() == [0, 255]
    with pytest.raises(ValueError, match="sum to 0"):
        quantize_soft_labels(np.zeros((2, 1, 1)))
    with pytest.raises(ValueError, match="non-negative"):
        quantize_soft_labels(np.array([[[-0.5]], [[1.5]]]))


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_decode_every_datasets_format(tmp_path, dtype):
    probs = torch.softmax(torch.randn(3, 3, 4, 5, generator=torch.Generator().manual_seed(0)), dim=1).numpy()
    features = datasets.Features({"soft_label": datasets.Array3D((3, 4, 5), dtype)})
    datasets.Dataset.from_dict({"soft_label": list(encode_soft_labels(probs, dtype))},
                               features=features).save_to_disk(str(tmp_path))
    ds = datasets.load_from_disk(str(tmp_path))
    tolerance = {"uint8": 1 / 255, "float16": 1e-3, "float32": 1e-6}[dtype]
    for fmt in (None, "numpy", "torch"):
        view = ds.with_format(fmt)
        for hint in (None, dtype, ds.features, ds.features["soft_label"]):
            row = decode_soft_labels(view[1]["soft_label"], dtype=hint)
            batch = decode_soft_labels(view[:3]["soft_label"], dtype=hint)
            assert isinstance(row, torch.Tensor) == (fmt == "torch")
            row, batch = np.asarray(row), np.asarray(batch)
            assert row.dtype == batch.dtype == np.float32
            assert row.shape == (3, 4, 5) and batch.shape == (3, 3, 4, 5)
            np.testing.assert_allclose(batch.sum(axis=1), 1.0, atol=1e-6)
            assert np.abs(batch - probs).max() <= tolerance + 1e-7
            np.testing.assert_array_equal(row, batch[1])


def test_decode_rejects_bad_values():
    with pytest.raises(ValueError, match=r"\(K, H, W\) or \(B, K, H, W\)"):
        decode_soft_labels(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="soft_label_dtype"):
        decode_soft_labels(np.zeros((2, 1, 1)), dtype="int8")
    with pytest.raises(ValueError, match="sums to 0"):
        decode_soft_labels(np.zeros((2, 1, 1), dtype=np.int64))


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
    pipe = set_scheduler(make_pipeline(), name)
    assert type(pipe.scheduler) is SCHEDULERS[name]
    rows = generate_dataset(pipe, 1, num_inference_steps=2, id2label=ID2LABEL).with_format("numpy")
    probs = decode_soft_labels(rows[0]["soft_label"])
    assert np.isfinite(probs).all() and probs.shape == (3, 16, 16)
    with pytest.raises(ValueError, match="scheduler"):
        set_scheduler(pipe, "heun")


def test_pipeline_id2label_is_stored_with_the_pipeline(tmp_path):
    pipe = make_pipeline()
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
        "manifest.json", "shard-000000000-000000002", "shard-000000002-000000004"]

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
    unet = make_pipeline().unet
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
    output_dir.mkdir()
    (output_dir / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_to_disk(pipe, output_dir, 1, **SETTINGS)
    out = generate_to_disk(pipe, output_dir, 1, overwrite=True, **SETTINGS)
    assert not (output_dir / "old.txt").exists() and len(datasets.load_from_disk(out.output_dir)) == 1


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_float_soft_labels(pipe, reference, tmp_path, dtype):
    out = generate_to_disk(pipe, tmp_path / dtype, 2, batch_size=2, soft_label_dtype=dtype, **SETTINGS)
    assert out.dataset.features["soft_label"].dtype == dtype
    ours = decode_soft_labels(out.dataset.with_format("numpy")["soft_label"])
    quantized = decode_soft_labels(reference.dataset.with_format("numpy")[:2]["soft_label"])
    assert np.abs(ours - quantized).max() <= 1 / 255 + 1e-3


# ---------------------------------------------------------------------------------------------------------------
# The command and the Hub
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def pipeline_dir(tmp_path):
    """A saved pipeline with its class names (in its model_index.json)."""
    path = tmp_path / "pipeline"
    DAKTerPipeline(**make_pipeline().components, id2label=ID2LABEL).save_pretrained(path)
    return path


def cli_args(pipeline, output_dir, *extra):
    return ["--pipeline", str(pipeline), "--num_samples", "3", "--batch_size", "2", "--num_inference_steps", "3",
            "--seed", "7", "--soft_label_temperature", "1.5", "--output_dir", str(output_dir), *extra]


def test_command_generates_the_library_dataset(pipeline_dir, reference, tmp_path):
    from dakter_hf.commands.generate import main

    output_dir = tmp_path / "generated"
    assert main(cli_args(pipeline_dir, output_dir)) == 0
    ds = datasets.load_from_disk(str(output_dir))
    assert get_generated_id2label(ds) == ID2LABEL  # read from the pipeline's model_index.json
    assert_same_rows(ds, reference.dataset.select(range(3)).flatten_indices())
    with pytest.raises(FileExistsError):
        main(cli_args(pipeline_dir, output_dir))
    assert main(cli_args(pipeline_dir, output_dir, "--overwrite", "--scheduler", "ddim", "--soft_label_dtype",
                         "float16")) == 0
    meta = json.loads((output_dir / "dataset_info.json").read_text())
    assert meta["features"]["soft_label"]["dtype"] == "float16"
    assert "DDIMScheduler" in (output_dir / "README.md").read_text()


def test_command_channels_last(pipeline_dir, tmp_path):
    from dakter_hf.commands.generate import main

    output_dir = tmp_path / "generated"
    assert main(cli_args(pipeline_dir, output_dir, "--channels_last")) == 0
    assert len(datasets.load_from_disk(str(output_dir))) == 3
    assert '"unet_memory_format": "channels_last"' in (output_dir / "README.md").read_text()


def test_dataset_hub_round_trip(pipeline_dir, reference, tmp_path, hub_server, hub_repo_id, clean_hub_cache):
    from dakter_hf.commands.generate import main

    output_dir = tmp_path / "generated"
    assert main(cli_args(pipeline_dir, output_dir, "--push_to_hub", "--hub_dataset_id", hub_repo_id)) == 0
    files = hub_server.repo_files(hub_repo_id, repo_type="dataset")
    assert "preview.png" in files or not os.path.exists(output_dir / "preview.png")
    card = files["README.md"].decode()
    assert "These samples are synthetic" in card and "dataset_info" in card and "dakter:" in card

    remote = datasets.load_dataset(hub_repo_id, split="train")
    local = datasets.load_from_disk(str(output_dir))
    assert remote.features == local.features
    assert get_generated_id2label(remote) == ID2LABEL
    for column in ("seed", "soft_label"):
        assert remote[column] == local[column]
    for column in ("image", "label"):
        np.testing.assert_array_equal(np.stack(remote.with_format("numpy")[column]),
                                      np.stack(local.with_format("numpy")[column]))
    probs = decode_soft_labels(remote.with_format("torch")[:]["soft_label"], dtype=remote.features)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3, 16, 16))


@pytest.mark.parametrize("failure", ["refused", "down"])
def test_failed_push_keeps_the_local_copy(pipeline_dir, tmp_path, hub_server, hub_repo_id, failure, caplog):
    from dakter_hf.commands.generate import main
    from dakter_hf.hub import HubPushError, push_dataset_to_hub

    output_dir = tmp_path / "generated"
    if failure == "refused":
        hub_server.refuse_writes = True
    else:
        hub_server.stop()
    assert main(cli_args(pipeline_dir, output_dir, "--push_to_hub", "--hub_dataset_id", hub_repo_id)) == 1
    assert "local copy" in caplog.text and hub_repo_id in caplog.text
    ds = datasets.load_from_disk(str(output_dir))
    assert len(ds) == 3 and (output_dir / "README.md").is_file()
    assert not os.path.exists(work_dir_for(output_dir))
    with pytest.raises(HubPushError, match=f"{hub_repo_id}.*local copy in {output_dir} is complete"):
        push_dataset_to_hub(output_dir, hub_repo_id)


def test_pipeline_hub_round_trip(hub_server, hub_repo_id, clean_hub_cache):
    from dakter_hf.hub import push_pipeline_to_hub

    pipe = make_pipeline(seed=3)
    push_pipeline_to_hub(pipe, hub_repo_id, id2label=ID2LABEL)
    files = hub_server.repo_files(hub_repo_id)
    assert {"model_index.json", "README.md", "unet/config.json"} <= set(files)
    assert "dakter_config.json" not in files
    assert "id2label" in files["README.md"].decode()
    assert json.loads(files["model_index.json"])["id2label"] == {str(k): v for k, v in ID2LABEL.items()}
    assert pipe.config.id2label is None  # the caller's pipeline is left unchanged

    loaded = DAKTerPipeline.from_pretrained(hub_repo_id)
    assert loaded.id2label == resolve_id2label(loaded) == ID2LABEL
    assert_same_rows(generate_dataset(loaded, 2, batch_size=2, **SETTINGS),
                     generate_dataset(pipe, 2, batch_size=2, **SETTINGS))


def test_command_generates_from_a_hub_pipeline(pipe, reference, tmp_path, hub_server, hub_repo_id, clean_hub_cache):
    """`dakter-generate --pipeline <Hub id>`: the pushed pipeline generates the same rows as the local one."""
    from dakter_hf.commands.generate import main
    from dakter_hf.hub import push_pipeline_to_hub

    push_pipeline_to_hub(pipe, hub_repo_id, id2label=ID2LABEL)
    output_dir = tmp_path / "generated"
    assert main(cli_args(hub_repo_id, output_dir)) == 0
    ds = datasets.load_from_disk(str(output_dir))
    assert get_generated_id2label(ds) == ID2LABEL
    assert_same_rows(ds, reference.dataset.select(range(3)).flatten_indices())
    assert hub_repo_id in (output_dir / "README.md").read_text()


@pytest.mark.parametrize("failure", ["refused", "down"])
def test_failed_pipeline_push_is_reported(hub_server, hub_repo_id, failure):
    from dakter_hf.hub import HubPushError, push_pipeline_to_hub

    if failure == "refused":
        hub_server.refuse_writes = True
    else:
        hub_server.stop()
    with pytest.raises(HubPushError, match=hub_repo_id):
        push_pipeline_to_hub(make_pipeline(), hub_repo_id, id2label=ID2LABEL)


def test_two_processes_split_the_indices(pipeline_dir, reference, tmp_path):
    """`accelerate launch` with 2 CPU processes: each generates its block, the main process assembles the same
    dataset as one process."""
    import subprocess
    import sys

    output_dir = tmp_path / "generated"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "dakter_hf.commands.generate", *cli_args(pipeline_dir, output_dir)]
    command[command.index("--num_samples") + 1] = str(NUM_SAMPLES)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generated now: 3" in result.stderr  # the main process's block: indices 0..2 of 0..4
    assert_same_rows(datasets.load_from_disk(str(output_dir)), reference.dataset)
