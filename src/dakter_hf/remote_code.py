"""Remote code: self-contained copies of the pipelines and the model that a Hub repository can carry, so that
`DiffusionPipeline.from_pretrained(repo, custom_pipeline="pipeline_dakter", trust_remote_code=True)` (or
`"pipeline_dakter_mask_to_image"`, `"pipeline_dakter_segmentation"`) works without dakter_hf installed.

They are built from the package's own source files (the single source of truth) by an AST bundler,
[`remote_code_files`]: the module and the package modules it imports are inlined, external imports are hoisted.
[`add_remote_code`] writes them into a saved pipeline directory, [`upload_remote_code`] into a Hub repository, and
`utils/make_hub_pipeline.py` writes the committed copy under `pipelines/dakter/`.
"""

import ast
import importlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi

from .models import JointUNet2DModel


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
        drop (`tuple[str, ...]`): `"Class.method"` definitions left out (package-only plumbing), wherever among the
            inlined modules the class is defined.
    """

    path: str
    module: str
    stand_ins: dict = field(default_factory=dict)
    drop: tuple = ()


def _model_module() -> str:
    return JointUNet2DModel.__module__


def remote_code_specs() -> tuple[RemoteCodeFile, ...]:
    """The remote-code files of a DAKTer pipeline repository.

    The model file's name is what diffusers looks for: `<component>/<library>.py`, with the library recorded in
    `model_index.json` (`"unet": ["dakter_hf.models.joint_unet_2d", "JointUNet2DModel"]`).
    """
    model_module = _model_module()
    stand_ins = {model_module: ("diffusers", "ModelMixin")}
    # Package-only loading (its own Hub download, the installed model class); the generic diffusers loader does that
    # job in a repository without dakter_hf.
    drop = ("DAKTerPipelineMixin.from_pretrained", "DAKTerPipelineMixin._load_installed_unet")
    pipelines = [RemoteCodeFile(path=f"{name}.py", module=f"{PACKAGE}.pipelines.{name}", stand_ins=stand_ins, drop=drop)
                 for name in PIPELINE_MODULES]
    return (*pipelines, RemoteCodeFile(path=f"unet/{model_module}.py", module=model_module))


#: The pipeline modules a DAKTer repository carries as remote code, one file each (`custom_pipeline=<name>`).
PIPELINE_MODULES = ("pipeline_dakter", "pipeline_dakter_mask_to_image", "pipeline_dakter_segmentation")


def _source_path(module: str) -> Path:
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


def _drop_ranges(tree: ast.Module, drop: tuple) -> tuple[list[tuple[int, int]], set[str]]:
    """1-based inclusive line ranges of the `Class.method` definitions of `drop` found in `tree`, and those found."""
    ranges, found = [], set()
    for target in drop:
        class_name, method = target.split(".")
        nodes = [n for c in tree.body if isinstance(c, ast.ClassDef) and c.name == class_name for n in c.body
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == method]
        if nodes:
            start = min([nodes[0].lineno] + [d.lineno for d in nodes[0].decorator_list])
            ranges.append((start, nodes[0].end_lineno))
            found.add(target)
    return ranges, found


def _names_used_outside(tree: ast.Module, ranges: list[tuple[int, int]]) -> set[str]:
    """The names a module reads outside the given line ranges (its dropped definitions)."""
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)
            and not any(start <= node.lineno <= end for start, end in ranges)}


def _bundle(spec: RemoteCodeFile) -> str:
    """Inline `spec.module` and the package modules it imports into one source text without package imports."""
    imports: list[str] = []  # external import statements, hoisted to the top, in order of first appearance
    bodies: list[str] = []  # module bodies, dependencies first
    done: set[str] = set()
    dropped: set[str] = set()

    def add_import(text: str) -> None:
        if text not in imports:
            imports.append(text)

    def visit(module: str) -> None:
        done.add(module)
        source = _source_path(module).read_text(encoding="utf-8")
        tree = ast.parse(source)
        skip, found = _drop_ranges(tree, spec.drop)
        dropped.update(found)
        used = _names_used_outside(tree, skip)  # a package import needed only by dropped code is not inlined
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
                elif not {alias.asname or alias.name for alias in node.names} & used:
                    continue
                elif _source_path(target).name == "__init__.py":
                    raise RuntimeError(f"{module}: import {target!r} names from their module, not the package.")
                elif target not in done:
                    visit(target)
        lines = source.splitlines()
        for start, end in skip:
            lines[start - 1:end] = [None] * (end - start + 1)
        body = "\n".join(line for line in lines if line is not None).strip("\n")
        bodies.append("\n".join([f"# ---- {_relative_name(module)} " + "-" * 40, "", *prelude, "", "", body]))

    visit(spec.module)
    missing = sorted(set(spec.drop) - dropped)
    if missing:
        raise RuntimeError(f"Cannot drop {missing}: no such method in {spec.module} or the modules it imports.")
    docstring = ast.get_docstring(ast.parse(_source_path(spec.module).read_text(encoding="utf-8")))
    sources = ", ".join(_relative_name(m) for m in sorted(done))
    header = (
        "# Generated by `dakter_hf.remote_code.remote_code_files()` (`python utils/make_hub_pipeline.py`) from the\n"
        "# sources\n"
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
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=text.encode("utf-8"))
                  for path, text in remote_code_files().items()]
    commit = HfApi(token=token).create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
    return commit.commit_url
