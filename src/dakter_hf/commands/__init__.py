"""Command-line entry points of `dakter_hf` (each module has `parse_args(argv=None)` and `main(argv=None)`, and runs
as `python -m dakter_hf.commands.<name>`)."""
