"""Import the repository's scripts (`examples/`, `benchmarks/`, `utils/`) as modules in tests."""

import importlib.util
import sys
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    """Import `<repo>/<relative_path>` under a private module name (a script named like a package must not shadow
    it), running its top level once per call. The module is registered in `sys.modules` while and
    after it runs, as dataclasses need."""
    path = REPO_ROOT / relative_path
    spec = importlib.util.spec_from_file_location(f"dakter_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
