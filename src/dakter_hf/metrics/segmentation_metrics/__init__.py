"""Local `evaluate` metric module (see `segmentation_metrics.py`); load it with
`dakter_hf.metrics.load_segmentation_metric()`. This file only makes the directory a package so that the module
ships with the installed library."""
