"""Tests of the local Hub server (tests/hub_server.py) through the real client libraries.

Each test pushes to a fresh repo of the session's server and downloads it back with an emptied cache, so the
bytes really travel through the Hub HTTP protocol (preupload, LFS batch + PUT, NDJSON commit, tree listing,
resolve with ETag / X-Repo-Commit, CDN redirect for LFS files).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest


# --------------------------------------------------------------------------------------------------------------------
# huggingface_hub
# --------------------------------------------------------------------------------------------------------------------


def _write_folder(root, text: str = "hello hub\n", weights: bytes = b"\x00\x01weights" * 300):
    os.makedirs(root / "sub", exist_ok=True)
    (root / "notes.txt").write_text(text)
    (root / "sub" / "model.safetensors").write_bytes(weights)
    return {"notes.txt": text.encode(), "sub/model.safetensors": weights}


def test_environment_points_to_local_server(hub_server):
    from huggingface_hub import constants, whoami

    assert constants.ENDPOINT == hub_server.endpoint
    assert hub_server.endpoint.startswith("http://127.0.0.1:")
    assert constants.HF_HUB_DISABLE_XET
    assert constants.HF_HUB_CACHE.startswith(os.environ["HF_HOME"])
    assert whoami()["name"] == "dakter-tester"


def test_upload_folder_and_snapshot_download(hub_server, hub_repo_id, tmp_path, clean_hub_cache):
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    api = HfApi()
    url = api.create_repo(hub_repo_id)
    assert url.repo_id == hub_repo_id
    assert api.create_repo(hub_repo_id, exist_ok=True).repo_id == hub_repo_id
    expected = _write_folder(tmp_path / "src")
    commit = api.upload_folder(folder_path=tmp_path / "src", repo_id=hub_repo_id, commit_message="add files")
    assert len(commit.oid) == 40 and all(c in "0123456789abcdef" for c in commit.oid)

    # the .safetensors file went through LFS (batch + PUT), the text file inline in the commit
    assert any(p.startswith("/lfs-upload/") for m, p, s in hub_server.requests if m == "PUT" and s == 200)
    assert not any("xet" in p.lower() for _, p, _ in hub_server.requests)
    files = {f.path: f for f in api.list_repo_tree(hub_repo_id, recursive=True) if hasattr(f, "size")}
    assert set(files) == {".gitattributes", "notes.txt", "sub/model.safetensors"}
    assert files["sub/model.safetensors"].lfs is not None and files["notes.txt"].lfs is None
    expected_sha256 = __import__("hashlib").sha256(expected["sub/model.safetensors"]).hexdigest()
    assert files["sub/model.safetensors"].lfs.sha256 == expected_sha256
    assert sorted(api.list_repo_files(hub_repo_id)) == sorted(files)
    assert api.model_info(hub_repo_id).sha == commit.oid

    folder = snapshot_download(hub_repo_id)
    assert os.path.basename(folder) == commit.oid
    for path, content in expected.items():
        with open(os.path.join(folder, path), "rb") as f:
            assert f.read() == content
    # LFS file downloaded from the "CDN" listener (redirect), and cached under its sha256 etag
    assert any(p.startswith("/cdn/") for m, p, s in hub_server.requests if m == "GET" and s == 200)

    # cached: a second download makes only metadata requests, no content GET
    n = len(hub_server.requests)
    path = hf_hub_download(hub_repo_id, "sub/model.safetensors")
    assert open(path, "rb").read() == expected["sub/model.safetensors"]
    assert [m for m, _, _ in hub_server.requests[n:]] == ["HEAD"]


def test_revision_pinning_and_etags(hub_server, hub_repo_id, tmp_path, clean_hub_cache):
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.file_download import get_hf_file_metadata, hf_hub_url

    api = HfApi()
    api.create_repo(hub_repo_id)
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="data.txt", repo_id=hub_repo_id).oid
    second = api.upload_file(path_or_fileobj=b"v2", path_in_repo="data.txt", repo_id=hub_repo_id).oid
    assert first != second

    assert open(hf_hub_download(hub_repo_id, "data.txt", revision=first), "rb").read() == b"v1"
    assert open(hf_hub_download(hub_repo_id, "data.txt"), "rb").read() == b"v2"
    assert open(hf_hub_download(hub_repo_id, "data.txt", revision=first[:10]), "rb").read() == b"v1"
    folder = snapshot_download(hub_repo_id, revision=first)
    assert os.path.basename(folder) == first
    assert open(os.path.join(folder, "data.txt"), "rb").read() == b"v1"

    meta = get_hf_file_metadata(hf_hub_url(hub_repo_id, "data.txt"))
    assert meta.commit_hash == second and meta.size == 2 and meta.xet_file_data is None
    assert meta.etag == __import__("hashlib").sha1(b"blob 2\0v2").hexdigest()  # git blob id for regular files
    assert [c.commit_id for c in api.list_repo_commits(hub_repo_id)][:2] == [second, first]
    assert api.list_repo_refs(hub_repo_id).branches[0].target_commit == second

    # unchanged content: the client skips the no-op commit thanks to the preupload oid
    assert api.upload_file(path_or_fileobj=b"v2", path_in_repo="data.txt", repo_id=hub_repo_id).oid == second


def test_errors_map_to_client_exceptions(hub_server, hub_repo_id, clean_hub_cache):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(hub_repo_id)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub_repo_id, "config.json")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info(hub_repo_id)
    api.create_repo(hub_repo_id)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(hub_repo_id, "missing.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(hub_repo_id, ".gitattributes", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(hub_repo_id, revision="f" * 40)
    assert not api.file_exists(hub_repo_id, "missing.json")
    assert api.file_exists(hub_repo_id, ".gitattributes")
    # a model repo is not a dataset repo
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info(hub_repo_id)


def test_refuse_writes_raises_clear_error(hub_server, hub_repo_id):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    api.create_repo(hub_repo_id)
    hub_server.refuse_writes = True
    start = time.monotonic()
    with pytest.raises(HfHubHTTPError) as exc_info:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=hub_repo_id)
    assert exc_info.value.response.status_code == 403
    assert "refuse_writes" in str(exc_info.value)
    assert time.monotonic() - start < 5
    hub_server.refuse_writes = False
    assert api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=hub_repo_id).oid


def test_server_stopped_fails_fast(hub_server, hub_repo_id, clean_hub_cache):
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    api = HfApi()
    api.create_repo(hub_repo_id)
    hub_server.stop()
    start = time.monotonic()
    with pytest.raises(LocalEntryNotFoundError):
        snapshot_download(hub_repo_id)
    with pytest.raises(Exception) as exc_info:  # the HTTP client's ConnectError (httpx / httpx2)
        api.create_repo(hub_repo_id + "-2")
    assert type(exc_info.value).__name__ == "ConnectError"
    assert time.monotonic() - start < 5
    hub_server.start()
    assert api.model_info(hub_repo_id).sha


def test_hf_file_system_listing_paths_info_and_ranges(hub_server, hub_repo_id, tmp_path):
    from huggingface_hub import HfApi, HfFileSystem

    api = HfApi()
    api.create_repo(hub_repo_id, repo_type="dataset")
    weights = bytes(range(256)) * 40
    api.upload_file(path_or_fileobj=weights, path_in_repo="data/blob.bin", repo_id=hub_repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"0123456789", path_in_repo="data/digits.txt", repo_id=hub_repo_id,
                    repo_type="dataset")

    fs = HfFileSystem()
    root = f"datasets/{hub_repo_id}"
    assert sorted(fs.ls(f"{root}/data", detail=False)) == [f"{root}/data/blob.bin", f"{root}/data/digits.txt"]
    assert fs.isdir(f"{root}/data") and fs.isfile(f"{root}/data/digits.txt")
    info = fs.info(f"{root}/data/blob.bin")
    assert info["size"] == len(weights) and info["lfs"]["size"] == len(weights)
    assert sorted(fs.glob(f"{root}/**/*.txt")) == [f"{root}/data/digits.txt"]
    assert [p.path for p in api.get_paths_info(hub_repo_id, ["data", "data/digits.txt", "nope"],
                                               repo_type="dataset")] == ["data", "data/digits.txt"]
    # Range requests, on a regular file and through the CDN redirect of an LFS file
    assert fs.cat_file(f"{root}/data/digits.txt", start=3, end=7) == b"3456"
    assert fs.cat_file(f"{root}/data/blob.bin", start=1000, end=1010) == weights[1000:1010]
    with fs.open(f"{root}/data/blob.bin", "rb", block_size=1024) as f:
        f.seek(5000)
        assert f.read(100) == weights[5000:5100]
    assert fs.read_bytes(f"{root}/data/blob.bin") == weights
    assert any(s == 206 for m, p, s in hub_server.requests if p.startswith("/cdn/"))


# --------------------------------------------------------------------------------------------------------------------
# datasets
# --------------------------------------------------------------------------------------------------------------------


def test_datasets_push_to_hub_and_load_dataset(hub_server, hub_repo_id, clean_hub_cache):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), mode="L") for _ in range(3)]
    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.Value("int64"),
        "soft": datasets.Array3D(shape=(2, 4, 4), dtype="float32"),
        "tags": datasets.List(datasets.Value("string")),
    })
    soft = rng.random((3, 2, 4, 4), dtype=np.float32)
    ds = datasets.Dataset.from_dict(
        {"image": images, "label": [0, 1, 2], "soft": soft.tolist(), "tags": [["a"], [], ["b", "c"]]},
        features=features,
    )
    ds.push_to_hub(hub_repo_id)
    pushed = hub_server.repo_files(hub_repo_id, repo_type="dataset")
    assert "README.md" in pushed and any(p.startswith("data/train-") and p.endswith(".parquet") for p in pushed)

    loaded = datasets.load_dataset(hub_repo_id, split="train")
    assert loaded.features == features
    assert loaded["label"] == [0, 1, 2]
    assert loaded["tags"] == [["a"], [], ["b", "c"]]
    np.testing.assert_array_equal(np.asarray(loaded.with_format("numpy")["soft"]), soft)
    for original, got in zip(images, loaded["image"]):
        assert np.array_equal(np.asarray(original), np.asarray(got))

    # streaming reads the parquet shard through HfFileSystem (paths-info, tree, Range requests)
    streamed = list(datasets.load_dataset(hub_repo_id, split="train", streaming=True))
    assert [row["label"] for row in streamed] == [0, 1, 2]
    np.testing.assert_array_equal(np.asarray(streamed[1]["soft"], dtype=np.float32), soft[1])


# --------------------------------------------------------------------------------------------------------------------
# transformers
# --------------------------------------------------------------------------------------------------------------------


def test_transformers_segformer_push_and_from_pretrained(hub_server, hub_repo_id, clean_hub_cache):
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    config = SegformerConfig(
        num_channels=1, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], decoder_hidden_size=16,
        num_attention_heads=[1, 1, 2, 2], num_labels=2,
    )
    model = SegformerForSemanticSegmentation(config).eval()
    model.push_to_hub(hub_repo_id)
    assert "model.safetensors" in hub_server.repo_files(hub_repo_id)

    clear = __import__("conftest").clear_hub_cache
    clear()
    loaded = SegformerForSemanticSegmentation.from_pretrained(hub_repo_id).eval()
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


# --------------------------------------------------------------------------------------------------------------------
# diffusers
# --------------------------------------------------------------------------------------------------------------------


def test_diffusers_pipeline_push_and_from_pretrained(hub_server, hub_repo_id, clean_hub_cache):
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10))
    pipe.push_to_hub(hub_repo_id)
    pushed = hub_server.repo_files(hub_repo_id)
    assert {"model_index.json", "unet/config.json", "scheduler/scheduler_config.json"} <= set(pushed)

    __import__("conftest").clear_hub_cache()
    loaded = DDPMPipeline.from_pretrained(hub_repo_id)
    assert loaded.scheduler.config.num_train_timesteps == 10
    expected, got = pipe.unet.state_dict(), loaded.unet.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


# --------------------------------------------------------------------------------------------------------------------
# failure modes through the high-level libraries: a refused push or a dead Hub raises promptly, it does not hang
# --------------------------------------------------------------------------------------------------------------------


def test_library_pushes_and_loads_fail_fast(hub_server, hub_repo_id, clean_hub_cache):
    import datasets
    import torch
    from diffusers import DDPMScheduler
    from huggingface_hub.errors import HfHubHTTPError
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(num_channels=1, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                             decoder_hidden_size=16, num_attention_heads=[1, 1, 2, 2], num_labels=2)
    model = SegformerForSemanticSegmentation(config)
    start = time.monotonic()
    hub_server.refuse_writes = True
    with pytest.raises(HfHubHTTPError, match="refuse_writes"):
        model.push_to_hub(hub_repo_id)
    with pytest.raises(HfHubHTTPError, match="refuse_writes"):
        datasets.Dataset.from_dict({"x": [1, 2]}).push_to_hub(hub_repo_id + "-ds")
    with pytest.raises(HfHubHTTPError, match="refuse_writes"):
        DDPMScheduler(num_train_timesteps=10).push_to_hub(hub_repo_id + "-sched")
    hub_server.refuse_writes = False
    model.push_to_hub(hub_repo_id)

    hub_server.stop()
    with pytest.raises(OSError):
        SegformerForSemanticSegmentation.from_pretrained(hub_repo_id)
    with pytest.raises(Exception):
        datasets.load_dataset(hub_repo_id + "-ds", split="train")
    with pytest.raises(OSError):
        DDPMScheduler.from_pretrained(hub_repo_id + "-sched")
    assert time.monotonic() - start < 10
    hub_server.start()
    loaded = SegformerForSemanticSegmentation.from_pretrained(hub_repo_id)
    assert torch.equal(loaded.decode_head.classifier.weight, model.decode_head.classifier.weight)
