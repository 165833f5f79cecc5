"""Hugging Face Hub helpers: fetching pipelines whose components live outside diffusers, the remote-code files that
let a repository load without `dakter_hf`, and pushing pipelines, generated datasets and students with their cards.

Every push raises [`HubPushError`] with a clear message when the Hub cannot be reached or refuses it; the local copy
is never touched by a failed push.
"""

import ast
import importlib
import importlib.util
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


# Options of `DiffusionPipeline.from_pretrained` that concern the download, with their `snapshot_download` names.
_HUB_OPTIONS = {
    "revision": "revision",
    "token": "token",
    "cache_dir": "cache_dir",
    "force_download": "force_download",
    "local_files_only": "local_files_only",
    "proxies": "proxies",
}

# What a DAKTer pipeline repository needs locally: configs and safetensors weights; never pickles or remote code.
PIPELINE_FILE_PATTERNS = ["model_index.json", "*/config.json", "*/scheduler_config.json", "*.safetensors", "README.md"]


def download_pipeline(repo_id: str, options: dict[str, Any]) -> str:
    """Download a pipeline repository from the Hub and return its local snapshot directory.

    diffusers' generic loader rejects Hub repositories whose components are not diffusers or transformers classes
    unless the repository carries their code; `DAKTerPipeline.from_pretrained` uses this function instead, so the
    installed `dakter_hf` classes are used and no remote code is run.

    Args:
        repo_id (`str`): a Hub repository id such as `"org/name"`.
        options (`dict`): the keyword arguments given to `from_pretrained`; the Hub options among them (`revision`,
            `token`, `cache_dir`, `force_download`, `local_files_only`, `proxies`) are removed and used here.

    Returns:
        `str`: the path of the downloaded snapshot.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    hub_kwargs = {target: options.pop(name) for name, target in _HUB_OPTIONS.items() if name in options}
    try:
        return snapshot_download(repo_id, allow_patterns=PIPELINE_FILE_PATTERNS, **hub_kwargs)
    except HFValidationError as error:
        raise OSError(f"{repo_id!r} is neither an existing local directory nor a valid Hub repository id.") from error
    except (RepositoryNotFoundError, RevisionNotFoundError, LocalEntryNotFoundError) as error:
        raise OSError(
            f"{repo_id!r} is neither a local directory nor a pipeline repository that could be fetched from the Hub "
            f"({type(error).__name__}). Check the path or repository id, the revision, your token and the network."
        ) from error


# ------------------------------------------------------------------------------------------------------------------
# Remote code: self-contained copies of the pipeline and the model that a Hub repository can carry, so that
# `DiffusionPipeline.from_pretrained(repo, custom_pipeline="pipeline_dakter", trust_remote_code=True)` works without
# dakter_hf installed. They are built from the package's own source files (the single source of truth) by
# `remote_code_files()`; `utils/make_hub_pipeline.py` writes the committed copy under `pipelines/dakter/`.
# ------------------------------------------------------------------------------------------------------------------

PACKAGE = __name__.split(".")[0]


@dataclass(frozen=True)
class RemoteCodeFile:
    """How one remote-code file is bundled from a package module.

    Args:
        path (`str`): the file's path inside a pipeline repository.
        module (`str`): the package module it is built from; the modules it imports from the package are inlined.
        stand_ins (`dict[str, tuple[str, str]]`): package modules *not* to inline, mapped to `(module, class)` of an
            external base class that the names imported from them are bound to (for type annotations: the real
            class is loaded by diffusers from its component's own file).
        drop (`tuple[str, ...]`): `"Class.method"` definitions left out (package-only plumbing).
    """

    path: str
    module: str
    stand_ins: dict = field(default_factory=dict)
    drop: tuple = ()


def _model_module() -> str:
    from .models import JointUNet2DModel

    return JointUNet2DModel.__module__


def remote_code_specs() -> tuple[RemoteCodeFile, ...]:
    """The remote-code files of a DAKTer pipeline repository.

    The model file's name is what diffusers looks for: `<component>/<library>.py`, with the library recorded in
    `model_index.json` (`"unet": ["dakter_hf.models.joint_unet_2d", "JointUNet2DModel"]`).
    """
    model_module = _model_module()
    return (
        RemoteCodeFile(
            path="pipeline_dakter.py",
            module=f"{PACKAGE}.pipelines.pipeline_dakter",
            stand_ins={model_module: ("diffusers", "ModelMixin")},
            # Package-only loading (its own Hub download, the installed model class); the generic diffusers loader
            # does that job in a repository without dakter_hf.
            drop=("DAKTerPipeline.from_pretrained", "DAKTerPipeline._load_installed_unet"),
        ),
        RemoteCodeFile(path=f"unet/{model_module}.py", module=model_module),
    )


def _source_path(module: str) -> Path:
    import importlib

    return Path(importlib.import_module(module).__file__)


def _relative_name(module: str) -> str:
    return _source_path(module).relative_to(_source_path(PACKAGE).parent.parent).as_posix()


def _resolve(node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module
    package = module if _source_path(module).name == "__init__.py" else module.rpartition(".")[0]
    return importlib.util.resolve_name("." * node.level + (node.module or ""), package)


def _is_internal(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _bound_names(import_text: str) -> set[str]:
    """The names an import statement binds (`import a.b` binds `a`)."""
    node = ast.parse(import_text).body[0]
    return {alias.asname or alias.name.split(".")[0] for alias in node.names}


def _drop_ranges(tree: ast.Module, drop: tuple) -> list[tuple[int, int]]:
    """1-based inclusive line ranges of the `Class.method` definitions to leave out."""
    ranges = []
    for target in drop:
        class_name, method = target.split(".")
        nodes = [n for c in tree.body if isinstance(c, ast.ClassDef) and c.name == class_name for n in c.body
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == method]
        if not nodes:
            raise RuntimeError(f"Cannot drop {target!r}: no such method in the module.")
        node = nodes[0]
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        ranges.append((start, node.end_lineno))
    return ranges


def _bundle(spec: RemoteCodeFile) -> str:
    """Inline `spec.module` and the package modules it imports into one source text without package imports."""
    imports: list[str] = []  # external import statements, hoisted to the top, in order of first appearance
    bodies: list[str] = []  # module bodies, dependencies first
    done: set[str] = set()

    def add_import(text: str) -> None:
        if text not in imports:
            imports.append(text)

    def visit(module: str, drop: tuple) -> None:
        done.add(module)
        source = _source_path(module).read_text(encoding="utf-8")
        tree = ast.parse(source)
        skip = _drop_ranges(tree, drop)
        prelude: list[str] = []
        for node in tree.body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and node is tree.body[0]:
                skip.append((node.lineno, node.end_lineno))  # the docstring
            elif isinstance(node, ast.Import):
                if any(_is_internal(alias.name) for alias in node.names):
                    raise RuntimeError(f"{module}: use `from ... import ...` for package imports, got "
                                       f"{ast.unparse(node)!r}.")
                add_import(ast.get_source_segment(source, node))
                skip.append((node.lineno, node.end_lineno))
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(node, module)
                skip.append((node.lineno, node.end_lineno))
                if not _is_internal(target):
                    add_import(ast.get_source_segment(source, node))
                elif target in spec.stand_ins:
                    base_module, base = spec.stand_ins[target]
                    add_import(f"from {base_module} import {base}")
                    prelude += [f"{alias.asname or alias.name} = {base}  # stand-in: diffusers loads the class "
                                f"from its component's own file" for alias in node.names]
                elif _source_path(target).name == "__init__.py":
                    raise RuntimeError(f"{module}: import {target!r} names from their module, not the package.")
                elif target not in done:
                    visit(target, ())
        lines = source.splitlines()
        for start, end in skip:
            lines[start - 1:end] = [None] * (end - start + 1)
        body = "\n".join(line for line in lines if line is not None).strip("\n")
        bodies.append("\n".join([f"# ---- {_relative_name(module)} " + "-" * 40, "", *prelude, "", "", body]))

    visit(spec.module, spec.drop)
    docstring = ast.get_docstring(ast.parse(_source_path(spec.module).read_text(encoding="utf-8")))
    sources = ", ".join(_relative_name(m) for m in sorted(done))
    header = (
        "# Generated by `dakter_hf.hub.remote_code_files()` (`python utils/make_hub_pipeline.py`) from the sources\n"
        f"#   {sources}\n"
        "# of dakter_hf. Do not edit: change the package and regenerate. This file lets a Hub repository be loaded\n"
        "# without dakter_hf installed (see pipelines/dakter/README.md in the dakter_hf repository)."
    )
    code = "\n\n\n".join(bodies)
    used = {node.id for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Name)}
    imports = [text for text in imports if _bound_names(text) & used or text.startswith("from __future__")]
    imports.sort(key=lambda text: not text.startswith("from __future__"))
    text = "\n".join([header, f'"""{docstring}"""', "", *imports, "", "", code]) + "\n"
    text = re.sub(r"\n{4,}", "\n\n\n", text)

    leftovers = [ast.unparse(n) for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ImportFrom)
                 and (n.level or _is_internal(n.module or ""))]
    leftovers += [ast.unparse(n) for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Import)
                  and any(_is_internal(a.name) for a in n.names)]
    if leftovers:
        raise RuntimeError(f"{spec.path} would still import the package: {leftovers}. Move these imports to the "
                           "top level of their module or drop the code using them (`RemoteCodeFile.drop`).")
    return text


def remote_code_files() -> dict[str, str]:
    """The remote-code files of a DAKTer pipeline repository, `{path in the repository: source text}`."""
    return {spec.path: _bundle(spec) for spec in remote_code_specs()}


def add_remote_code(save_directory: str | os.PathLike) -> list[str]:
    """Write the remote-code files into a saved pipeline directory (before uploading it to the Hub).

    With them, `DiffusionPipeline.from_pretrained(repo, custom_pipeline="pipeline_dakter", trust_remote_code=True)`
    loads the pipeline where dakter_hf is not installed. `DAKTerPipeline.from_pretrained` keeps using the
    installed classes.

    Args:
        save_directory (`str` or `os.PathLike`): a directory written by `DAKTerPipeline.save_pretrained`.

    Returns:
        `list[str]`: the paths written.
    """
    save_directory = Path(save_directory)
    index_file = save_directory / "model_index.json"
    if not index_file.is_file():
        raise ValueError(f"{save_directory} is not a saved pipeline directory (no model_index.json).")
    unet_entry = json.loads(index_file.read_text(encoding="utf-8")).get("unet")
    from .models import JointUNet2DModel

    if unet_entry != [_model_module(), JointUNet2DModel.__name__]:
        raise ValueError(f"{index_file} records the unet as {unet_entry}, not as a dakter_hf JointUNet2DModel.")
    written = []
    for path, text in remote_code_files().items():
        target = save_directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(str(target))
    return written


def upload_remote_code(repo_id: str, *, revision: str | None = None, token: str | None = None,
                       commit_message: str = "Add dakter_hf remote code") -> str:
    """Add the remote-code files to a pipeline repository on the Hub (e.g. after `pipe.push_to_hub(repo_id)`).

    Args:
        repo_id (`str`): the repository, which must already hold the pipeline.
        revision (`str`, *optional*): the branch to commit to.
        token (`str`, *optional*): a token with write access.
        commit_message (`str`, *optional*): the commit message.

    Returns:
        `str`: the URL of the commit.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=text.encode("utf-8"))
                  for path, text in remote_code_files().items()]
    commit = HfApi(token=token).create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
    return commit.commit_url


# ----------------------------------------------------------------------------------------------------------------------
# Pushing
# ----------------------------------------------------------------------------------------------------------------------


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
    from huggingface_hub import create_repo

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
    from huggingface_hub import upload_folder

    folder = os.fspath(folder)
    try:
        return str(upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                 ignore_patterns=list(ignore_patterns or []), token=token))
    except Exception as error:
        raise _push_failed(what, folder, repo_id, error) from error


def push_dataset_to_hub(
    output_dir: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
) -> str:
    """Push a dataset written by [`~dakter_hf.generation.generate_to_disk`] to the Hub: card and preview first, then
    the data with `Dataset.push_to_hub` (which adds its `dataset_info` to the card's metadata). Read it back with
    `datasets.load_dataset(repo_id, split="train")`.

    Returns:
        `str`: the repository URL.

    Raises:
        [`HubPushError`]: if the Hub cannot be reached or refuses the push (the local dataset is left intact).
    """
    import datasets
    from huggingface_hub import HfApi

    from .generation import PREVIEW_NAME
    from .model_cards import CARD_NAME

    output_dir = os.fspath(output_dir)
    if not os.path.isfile(os.path.join(output_dir, "dataset_info.json")):
        raise FileNotFoundError(f"{output_dir} is not a dataset written by generate_to_disk / dakter-generate.")
    dataset = datasets.load_from_disk(output_dir)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=output_dir, repo_id=url.repo_id, repo_type="dataset",
                          allow_patterns=[CARD_NAME, PREVIEW_NAME],
                          commit_message=commit_message or "Add dataset card and preview")
        dataset.push_to_hub(url.repo_id, token=token, private=private,
                            commit_message=commit_message or "Upload generated DAKTer pairs")
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
    import tempfile

    from huggingface_hub import HfApi, ModelCard

    from .generation import resolve_id2label
    from .model_cards import CARD_NAME, make_pipeline_card

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
                        commit_message: str = "Upload DAKTer student", extra_files: Sequence[str] = ()) -> str:
    """Push a student saved by [`~dakter_hf.distill.save_student`] with transformers' `push_to_hub` (model, then image
    processor), and optionally extra files of the run (metrics JSON, learning curves).

    Returns:
        `str`: the repository id.

    Raises:
        [`HubPushError`]: if the Hub cannot be reached or refuses the push; the local directory
            is untouched.
    """
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    save_directory = os.fspath(save_directory)
    model = AutoModelForSemanticSegmentation.from_pretrained(save_directory)
    image_processor = AutoImageProcessor.from_pretrained(save_directory)
    try:
        model.push_to_hub(repo_id, token=token, commit_message=commit_message)
        image_processor.push_to_hub(repo_id, token=token, commit_message=f"{commit_message}: image processor")
        if extra_files:
            from huggingface_hub import HfApi

            api = HfApi(token=token)
            for path in extra_files:
                api.upload_file(path_or_fileobj=path, path_in_repo=os.path.basename(path), repo_id=repo_id,
                                commit_message=f"{commit_message}: {os.path.basename(path)}")
    except Exception as error:  # network, HTTP, permission errors
        raise _push_failed("the student", save_directory, repo_id, error) from error
    return repo_id
