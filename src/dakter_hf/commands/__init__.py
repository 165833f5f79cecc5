"""Command-line entry points of `dakter_hf` (each module has a `main(argv=None) -> int`)."""
