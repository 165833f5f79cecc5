#!/usr/bin/env python
"""Train a student segmentation model (SegFormer) on real pairs and DAKTer-generated pairs.

A thin wrapper of `dakter_hf.commands.distill` (see `--help`). Example:

    accelerate launch examples/distill.py --dataset sos --data_dir ../shared/data/sos --sensor palsar \\
        --generated_dataset outputs/generated --mode soft --student b0 --resolution 64 \\
        --train_batch_size 16 --max_train_steps 2000 --output_dir outputs/student-soft
"""

from dakter_hf.commands.distill import main


if __name__ == "__main__":
    main()
