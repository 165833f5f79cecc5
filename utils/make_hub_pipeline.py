"""Write (or check) the self-contained remote-code files that a DAKTer pipeline repository on the Hub can carry.

The files are built from the package sources by `dakter_hf.remote_code.remote_code_files()` (the same function
`dakter_hf.remote_code.add_remote_code` uses before an upload), so the package stays the single source of truth; this
script keeps the committed copy under `pipelines/dakter/` in sync with it, in the spirit of diffusers'
`make fix-copies`:

    python utils/make_hub_pipeline.py           # regenerate pipelines/dakter/
    python utils/make_hub_pipeline.py --check   # exit 1 if pipelines/dakter/ is out of date (used by the tests)
"""

import argparse
import sys
from pathlib import Path

from dakter_hf.remote_code import remote_code_files


DEFAULT_OUTPUT_DIR = Path(__file__).resolve().parent.parent / "pipelines" / "dakter"


def stale_files(output_dir: Path) -> list[str]:
    """Paths (relative to `output_dir`) whose content differs from the generated files, plus extra `.py` files."""
    expected = remote_code_files()
    stale = [path for path, text in expected.items()
             if not (output_dir / path).is_file() or (output_dir / path).read_text(encoding="utf-8") != text]
    present = {p.relative_to(output_dir).as_posix() for p in output_dir.rglob("*.py")} if output_dir.is_dir() else set()
    return sorted(stale + [path for path in present - set(expected)])


def write_files(output_dir: Path) -> list[str]:
    """Write the generated files under `output_dir`, removing `.py` files no longer generated; return the changes."""
    changed = stale_files(output_dir)
    expected = remote_code_files()
    for path in changed:
        target = output_dir / path
        if path in expected:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(expected[path], encoding="utf-8")
        else:
            target.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date files; exit 1 if any")
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT_DIR, help="default: pipelines/dakter")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.output_dir)
        if stale:
            print(f"Out of date in {args.output_dir}: {', '.join(stale)}. Run `python utils/make_hub_pipeline.py`.")
            return 1
        print(f"{args.output_dir} is up to date.")
        return 0
    changed = write_files(args.output_dir)
    print(f"Updated {', '.join(changed)}." if changed else f"{args.output_dir} was already up to date.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
