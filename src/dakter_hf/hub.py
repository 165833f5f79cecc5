"""Pushing to the Hugging Face Hub: pipelines, generated datasets and students with their cards, and a training
run's folder.

Every push raises [`HubPushError`] with a clear message when the Hub cannot be reached or refuses it; the local copy
is never touched by a failed push. Downloading a pipeline is [`dakter_hf.pipelines.download_pipeline`]; the
remote-code files a repository can carry are built by [`dakter_hf.remote_code`].
"""

import math
import os
import tempfile
from collections.abc import Mapping, Sequence

import datasets
from datasets import SplitDict, SplitInfo
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    DatasetCard,
    HfApi,
    ModelCard,
    create_repo,
    upload_folder,
)
from transformers import AutoConfig, AutoImageProcessor

from .data.generated import PREVIEW_NAME
from .filesystem import BOOKKEEPING_PATTERNS, OWNER_MARKER
from .labels import resolve_id2label
from .model_cards import CARD_NAME, make_pipeline_card


class HubPushError(RuntimeError):
    """A push to the Hub failed; the local copy is untouched."""


def _push_failed(what: str, local: str, repo_id: str, error: Exception) -> HubPushError:
    reason = " ".join(str(error).split())  # HTTP errors span several lines
    return HubPushError(
        f"Pushing {what} to the Hub repository {repo_id!r} failed ({type(error).__name__}: {reason}). The local copy "
        f"in {local} is complete and unchanged; retry the push later (check the network, the token and the "
        f"repository's permissions)."
    )


def create_hub_repo(repo_id: str, token: str | None = None, private: bool | None = None,
                    repo_type: str | None = None) -> str:
    """Create `repo_id` on the Hub if needed (at the start of a run, so that a bad token fails before any work) and
    return its full id.

    Raises:
        [`HubPushError`]: if the Hub cannot be reached or refuses.
    """
    try:
        return create_repo(repo_id, token=token, private=private, repo_type=repo_type, exist_ok=True).repo_id
    except Exception as error:
        reason = " ".join(str(error).split())
        raise HubPushError(f"Creating the Hub repository {repo_id!r} failed ({type(error).__name__}: {reason}); "
                           "nothing was run. Check the network, the token and the repository name.") from error


def push_folder_to_hub(folder: str | os.PathLike, repo_id: str, what: str = "the output", token: str | None = None,
                       commit_message: str | None = None, ignore_patterns: Sequence[str] | None = None) -> str:
    """Upload a local folder (e.g. a training run's output directory) to the model repository `repo_id` in one commit.

    Returns:
        `str`: the commit URL.

    Raises:
        [`HubPushError`]: if the Hub cannot be reached or refuses the push (the local folder is left intact).
    """
    folder = os.fspath(folder)
    try:
        return str(upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                 ignore_patterns=[*(ignore_patterns or []), *BOOKKEEPING_PATTERNS], token=token))
    except Exception as error:
        raise _push_failed(what, folder, repo_id, error) from error


#: Largest parquet shard written by [`push_dataset_to_hub`] (bytes of Arrow data per shard).
MAX_SHARD_BYTES = 500 * 2**20


def _dataset_operations(dataset, card_path: str, folder: str, split: str = "train") -> tuple[list, str]:
    """Write `dataset` as parquet shards `data/<split>-XXXXX-of-YYYYY.parquet` under `folder` and its card with the
    `configs` / `dataset_info` metadata that `datasets.load_dataset(repo)` reads (as `Dataset.push_to_hub` does);
    returns the `CommitOperationAdd`s and the card's path."""
    num_shards = max(1, math.ceil(dataset.data.nbytes / MAX_SHARD_BYTES))
    operations, download_size = [], 0
    for index in range(num_shards):
        path_in_repo = f"data/{split}-{index:05d}-of-{num_shards:05d}.parquet"
        local = os.path.join(folder, path_in_repo)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        dataset.shard(num_shards, index, contiguous=True).to_parquet(local)
        download_size += os.path.getsize(local)
        operations.append(CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=local))
    card = DatasetCard.load(card_path)
    splits = SplitDict()
    splits.add(SplitInfo(name=split, num_bytes=dataset.data.nbytes, num_examples=len(dataset)))
    info = DatasetInfo(features=dataset.features, splits=splits, download_size=download_size,
                       dataset_size=dataset.data.nbytes)
    DatasetInfosDict({"default": info}).to_dataset_card_data(card.data)
    MetadataConfigs({"default": {"data_files": [{"split": split, "path": f"data/{split}-*"}]}}).to_dataset_card_data(
        card.data)
    card_out = os.path.join(folder, "README.md")
    card.save(card_out)
    return operations, card_out


def push_dataset_to_hub(
    output_dir: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
) -> str:
    """Push a dataset written by [`~dakter_hf.generation.generate_to_disk`] to the Hub in one commit: the data as
    parquet shards, its card (with the `dataset_info` and `configs` metadata `datasets` reads) and its preview.
    Shards of an earlier push that the new data does not overwrite are deleted in the same commit. Read it back with
    `datasets.load_dataset(repo_id, split="train")`.

    Returns:
        `str`: the repository URL.

    Raises:
        [`HubPushError`]: if the Hub cannot be reached or refuses the push (the local dataset is left intact).
    """
    output_dir = os.fspath(output_dir)
    if not os.path.isfile(os.path.join(output_dir, "dataset_info.json")):
        raise FileNotFoundError(f"{output_dir} is not a dataset written by generate_to_disk / dakter-generate.")
    dataset = datasets.load_from_disk(output_dir)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as folder:
        operations, card = _dataset_operations(dataset, os.path.join(output_dir, CARD_NAME), folder)
        operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card))
        if os.path.isfile(os.path.join(output_dir, PREVIEW_NAME)):
            operations.append(CommitOperationAdd(path_in_repo=PREVIEW_NAME,
                                                 path_or_fileobj=os.path.join(output_dir, PREVIEW_NAME)))
        try:
            url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            new = {op.path_in_repo for op in operations}
            stale = [path for path in api.list_repo_files(url.repo_id, repo_type="dataset")
                     if path.startswith("data/train-") and path not in new]
            api.create_commit(url.repo_id, operations + [CommitOperationDelete(path) for path in stale],
                              repo_type="dataset",
                              commit_message=commit_message or "Upload generated DAKTer pairs with their card")
        except Exception as error:  # network, HTTP and permission errors all end the same way
            raise _push_failed("the dataset", output_dir, repo_id, error) from error
    return str(url)


def push_pipeline_to_hub(
    pipe,
    repo_id: str,
    id2label: Mapping[int, str] | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
) -> str:
    """Push a [`DAKTerPipeline`] with its model card in one commit.

    The same files as `DiffusionPipeline.push_to_hub` (`save_pretrained` output, safetensors, with the class names
    in `model_index.json`), plus the model card: the `README.md` of the directory the pipeline was loaded from if it
    has one (e.g. the training card), else [`~dakter_hf.model_cards.make_pipeline_card`]; either way `id2label` is
    added to the card's metadata. Load it back with `DAKTerPipeline.from_pretrained(repo_id)`.

    Args:
        pipe ([`DAKTerPipeline`]): the pipeline.
        repo_id (`str`): the model repository.
        id2label (`dict`, *optional*): class names pushed instead of `pipe.id2label` (`pipe` is left unchanged).
        token (`str`, *optional*), private (`bool`, *optional*), commit_message (`str`, *optional*): Hub options.

    Returns:
        `str`: the repository URL.

    Raises:
        [`HubPushError`]: if the Hub cannot be reached or refuses the push.
    """
    id2label = resolve_id2label(pipe, id2label)
    source = getattr(pipe, "name_or_path", None)
    source_card = os.path.join(source, CARD_NAME) if source and os.path.isdir(source) else None
    if source_card and os.path.isfile(source_card):
        card = ModelCard.load(source_card)
        card.data.id2label = {str(k): v for k, v in id2label.items()}
    else:
        card = make_pipeline_card(pipe, id2label, repo_id)
    local = str(source or "memory")
    if pipe.config.get("id2label") != id2label:  # a copy sharing the components: the caller's pipeline is unchanged
        pipe = type(pipe)(**pipe.components, id2label=id2label)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as folder:
        pipe.save_pretrained(folder)
        card.save(os.path.join(folder, CARD_NAME))
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(folder_path=folder, repo_id=url.repo_id,
                              commit_message=commit_message or "Upload DAKTer pipeline")
        except Exception as error:
            raise _push_failed("the pipeline", local, repo_id, error) from error
    return str(url)


def push_student_to_hub(save_directory: str | os.PathLike, repo_id: str, token: str | None = None,
                        commit_message: str = "Upload DAKTer student", extra_files: Sequence[str] = (),
                        private: bool | None = None) -> str:
    """Push a student saved by [`~dakter_hf.distill.save_student`] (weights, config, image processor and, when it was
    written, its model card) and optionally extra files of the run (metrics JSON, learning curves) in one commit.
    The directory must load with `AutoModelForSemanticSegmentation` / `AutoImageProcessor` (checked first).

    Returns:
        `str`: the repository id.

    Raises:
        [`HubPushError`]: if the Hub cannot be reached or refuses the push; the local directory
            is untouched.
    """
    save_directory = os.fspath(save_directory)
    AutoConfig.from_pretrained(save_directory)  # a clear transformers error for a directory that is not a student
    AutoImageProcessor.from_pretrained(save_directory)
    operations = [CommitOperationAdd(path_in_repo=os.path.relpath(os.path.join(root, name), save_directory),
                                     path_or_fileobj=os.path.join(root, name))
                  for root, _, names in os.walk(save_directory) for name in sorted(names) if name != OWNER_MARKER]
    operations += [CommitOperationAdd(path_in_repo=os.path.basename(path), path_or_fileobj=os.fspath(path))
                   for path in extra_files]
    api = HfApi(token=token)
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        api.create_commit(repo_id, operations, commit_message=commit_message)
    except Exception as error:  # network, HTTP, permission errors
        raise _push_failed("the student", save_directory, repo_id, error) from error
    return repo_id
