#!/usr/bin/env python
"""Train DAKTer's joint image + label diffusion model (`JointUNet2DModel`) on real SAR image / mask pairs.

A thin wrapper of `dakter_hf.commands.train` (the loop is `dakter_hf.training.train_joint_diffusion`); `--help` lists
every option with its default. Example:

    accelerate launch examples/train_joint_diffusion.py --dataset simulated --resolution 64 --model_size small \\
        --train_batch_size 16 --max_train_steps 2000 --output_dir outputs/joint-diffusion

Writes Accelerate checkpoints (`checkpoint-<step>`), validation grids (`validation/step-<step>.png`), a JSON-lines
loss log (`logs/train_log.jsonl`), a loss curve (`loss_curve.png`) and, at the end, the `DAKTerPipeline`
(`save_pretrained`) with a model card.
"""

import sys

from dakter_hf.commands.train import main


if __name__ == "__main__":
    sys.exit(main())
