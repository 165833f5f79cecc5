#!/usr/bin/env python
"""Score a SegFormer checkpoint (local directory or Hub id) on a dataset split and print its metrics table.

A thin wrapper of `dakter_hf.commands.evaluate` (see `--help`). Example:

    python examples/evaluate_student.py --model_name_or_path outputs/student-soft/best \\
        --dataset sos --data_dir ../shared/data/sos --sensor palsar --split test
"""

from dakter_hf.commands.evaluate import main


if __name__ == "__main__":
    main()
