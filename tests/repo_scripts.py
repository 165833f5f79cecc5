"""Import the repository's scripts (`examples/`, `benchmarks/`, `utils/`) as modules in tests."""

import importlib.util
import sys
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    """Import `<repo>/<relative_path>` under a private module name (a script named like a package must not shadow
    it), running its top level once per call. The module is registered in `sys.modules` while and
    after it runs, as dataclasses need. While it runs, its folder is first on `sys.path`, as when Python runs it as a
    script, so that it imports its sibling modules (`sos_benchmark.py` imports `sos_report.py`)."""
    path = REPO_ROOT / relative_path
    spec = importlib.util.spec_from_file_location(f"dakter_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module
