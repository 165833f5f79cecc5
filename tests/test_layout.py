"""The package layout stays what docs/architecture.md promises: imports run one way, no god modules, no path hacks.

Layers, lowest first (a module may import its own layer or lower ones; `dakter_hf/__init__.py` is exempt because it
re-exports the public API):

    0  errors, labels, seeding, distributed, precision, filesystem, visualization, data, metrics, overlays, tracking
    1  models
    2  pipelines
    3  remote_code, model_cards, hub
    4  generation
    5  training, distill
    6  experiments, app
    7  commands
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO / "src" / "dakter_hf"
MAX_MODULE_LINES = 400

LAYERS = {
    "errors": 0, "labels": 0, "seeding": 0, "distributed": 0, "precision": 0, "filesystem": 0, "visualization": 0,
    "data": 0, "metrics": 0, "overlays": 0, "tracking": 0,
    "models": 1,
    "pipelines": 2,
    "remote_code": 3, "model_cards": 3, "hub": 3,
    "generation": 4,
    "training": 5, "distill": 5,
    "experiments": 6, "app": 6,
    "commands": 7,
}


def _modules():
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR)
        if rel.parts == ("__init__.py",):
            continue
        yield path, rel


def _top_level_name(rel: Path) -> str:
    return rel.parts[0].removesuffix(".py")


def _package_parts(rel: Path) -> list[str]:
    """The dotted package of a module file, relative to `dakter_hf` (`data/sos.py` -> ["data"])."""
    return list(rel.parts[:-1])


def _imported_top_levels(path: Path, rel: Path) -> set[str]:
    """Top-level `dakter_hf` subpackages / modules that a file imports, absolute or relative."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "dakter_hf":
                    continue
                targets = [parts[1:]] if len(parts) > 1 else [[alias.name] for alias in node.names]
            else:
                package = _package_parts(rel)
                base = package[: len(package) - (node.level - 1)]
                full = base + (node.module.split(".") if node.module else [])
                # `from . import x` at the package's top names modules, not a package
                targets = [full] if full else [[alias.name] for alias in node.names]
            for target in targets:
                if target and target[0]:
                    found.add(target[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "dakter_hf" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_every_top_level_module_has_a_layer():
    names = {_top_level_name(rel) for _, rel in _modules()}
    missing = sorted(names - set(LAYERS))
    assert not missing, f"add these to LAYERS (and docs/architecture.md): {missing}"


def test_imports_run_one_way():
    violations = []
    for path, rel in _modules():
        own = _top_level_name(rel)
        for imported in _imported_top_levels(path, rel):
            if imported not in LAYERS or imported == own:
                continue
            if LAYERS[imported] > LAYERS[own]:
                violations.append(f"{rel} (layer {LAYERS[own]}) imports {imported} (layer {LAYERS[imported]})")
    assert not violations, "lower layers import higher ones:\n" + "\n".join(violations)


def test_no_module_is_a_god_module():
    too_long = []
    for path, rel in _modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {lines} lines")
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(too_long)


@pytest.mark.parametrize("folder", ["examples", "benchmarks"])
def test_scripts_import_the_installed_library_without_path_edits(folder):
    offenders = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / folder).rglob("*.py"))
        if re.search(r"\bsys\.path\b", path.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"sys.path edits in {offenders}"


def test_the_import_walker_sees_relative_and_absolute_imports(tmp_path):
    source = (
        "from ..labels import x\n"
        "from . import helpers\n"
        "from dakter_hf.generation import y\n"
        "import dakter_hf.pipelines.pipeline_dakter\n"
        "from ...models import JointUNet2DModel\n"
    )
    path = tmp_path / "mod.py"
    path.write_text(source)
    found = _imported_top_levels(path, Path("distill/sub/mod.py"))
    assert found == {"distill", "generation", "pipelines", "models"}
