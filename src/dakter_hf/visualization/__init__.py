"""Figures: generated / real sample grids, learning curves, bar charts of results, distributions side by side.

`sample_grid.py` draws sample grids, `charts.py` charts of numbers, `figure.py` holds what they share.
Everything is drawn on a standalone `matplotlib.figure.Figure` with the Agg canvas: pyplot is never imported, no
window is opened, and no global figure state is left behind. Files are written atomically (to a temporary
file in the target directory, then `os.replace`), so a reader never sees a half-written PNG; parent
directories are created.

Class colours: by default the OSD colour code (0 sea black, 1 oil spill cyan, 2 look-alike red, 3 ship brown,
4 land green), then matplotlib's `tab10` for further classes; pass `palette` to override.
"""

from __future__ import annotations

from .charts import (
    running_mean,
    save_bar_chart,
    save_distribution_panels,
    save_learning_curves,
    save_seed_comparison,
)
from .figure import DEFAULT_PALETTE
from .sample_grid import MASK_TO_IMAGE_COLUMNS, SEGMENTATION_COLUMNS, save_sample_grid


__all__ = ["DEFAULT_PALETTE", "MASK_TO_IMAGE_COLUMNS", "SEGMENTATION_COLUMNS", "running_mean", "save_bar_chart",
           "save_distribution_panels", "save_learning_curves", "save_sample_grid", "save_seed_comparison"]
