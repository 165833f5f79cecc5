#!/usr/bin/env python
"""Generate a dataset of synthetic SAR image / soft-label pairs with a trained DAKTer pipeline.

A thin wrapper of the `dakter-generate` command (`dakter_hf.commands.generate`); see `--help`. Example:

    python examples/generate.py --pipeline outputs/joint --num_samples 400 --scheduler dpmsolver \\
        --num_inference_steps 20 --output_dir outputs/generated
"""

import sys

from dakter_hf.commands.generate import main


if __name__ == "__main__":
    sys.exit(main())
