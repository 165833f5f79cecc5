#!/usr/bin/env python
"""Issue #23's measures of a saved joint generator on a labelled real split: alignment (mIoU of the generator used as
a segmenter), calibration (ECE and NLL of its soft labels, with the ECE of their argmax beside them) and mask fidelity
(mIoU of a real-data student on images drawn for the split's masks, next to its mIoU on the real images).

    python benchmarks/generator_quality.py --pipeline outputs/joint --student outputs/student-real/final \\
        --dataset sos --data_dir ../shared/data/sos --sensor sentinel --split test \\
        --scheduler dpmsolver --num_inference_steps 20 --output_json outputs/joint-quality.json

The split is loaded at the generator's sample size. `--write_report` also writes `quality.json` next to the generator
and its "Measured on real data" section into the generator's card. `--figures_dir` saves the two task grids of the
first batch (segmentation.png, mask_to_image.png).
"""

import argparse
import json
import os
import sys
import time

import torch

from dakter_hf.data import add_data_args, check_data_args, dataset_from_args
from dakter_hf.distill import load_labeller
from dakter_hf.distill.labellers import require_student
from dakter_hf.errors import UsageError
from dakter_hf.generation import measure_generator_quality, save_generator_quality
from dakter_hf.pipelines import SCHEDULERS, DAKTerPipeline, set_scheduler


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="saved DAKTer pipeline directory (or Hub id)")
    parser.add_argument("--student", default=None,
                        help="a real-data student directory (save_pretrained + preprocessor_config.json); without it "
                             "mask fidelity is not measured")
    add_data_args(parser)
    parser.add_argument("--split", default="test", help="labelled split measured on (default test)")
    parser.add_argument("--max_samples", type=int, default=None, help="measure on the first N pairs only")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None,
                        help="sampler (default: the pipeline's own)")
    parser.add_argument("--num_inference_steps", type=int, default=20)
    parser.add_argument("--num_samples", type=int, default=1, help="segmentation draws averaged per image")
    parser.add_argument("--num_images_per_mask", type=int, default=1)
    parser.add_argument("--conditioning", choices=("auto", "replacement", "exact"), default="auto")
    parser.add_argument("--jump_length", type=int, default=10)
    parser.add_argument("--jump_n_sample", type=int, default=1)
    parser.add_argument("--soft_label_temperature", type=float, default=1.0)
    parser.add_argument("--num_bins", type=int, default=15, help="equal-width bins of the ECE")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_json", default=None)
    parser.add_argument("--figures_dir", default=None)
    parser.add_argument("--write_report", action="store_true",
                        help="write quality.json next to the generator and the measures into its card")
    args = parser.parse_args(argv)
    check_data_args(parser, args, args.split)
    if args.student is not None:
        try:
            require_student(args.student)
        except UsageError as err:
            parser.error(f"--student: {err}")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    pipe = DAKTerPipeline.from_pretrained(args.pipeline)
    if args.scheduler is not None:
        set_scheduler(pipe, args.scheduler)
    size = pipe.unet.config.sample_size
    dataset = dataset_from_args(args, split=args.split, resolution=size if isinstance(size, int) else tuple(size))
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    # a saved student: its model (eval mode) and image processor (PIL backend, bit-exact with the training resize)
    labeller = load_labeller(args.student) if args.student else None
    student, processor = (labeller.model, labeller.image_processor) if labeller else (None, None)
    start = time.perf_counter()
    report = measure_generator_quality(
        pipe, dataset, student, processor, num_inference_steps=args.num_inference_steps, num_samples=args.num_samples,
        num_images_per_mask=args.num_images_per_mask, conditioning=args.conditioning, jump_length=args.jump_length,
        jump_n_sample=args.jump_n_sample, soft_label_temperature=args.soft_label_temperature,
        batch_size=args.batch_size, seed=args.seed, num_bins=args.num_bins, figures_dir=args.figures_dir)
    split_name = " ".join(str(part) for part in (args.dataset, args.sensor, args.split) if part)
    report.update(split=split_name, pipeline=args.pipeline, student=args.student, seconds=time.perf_counter() - start,
                  command=" ".join([os.path.basename(sys.argv[0]), *(argv if argv is not None else sys.argv[1:])]))
    fidelity = report["mask_fidelity"]
    print(f"{split_name}, {report['num_images']} images: alignment mIoU {100 * report['alignment']['mean_iou']:.2f}; "
          f"ECE {100 * report['calibration']['ece']:.2f} (argmax {100 * report['calibration']['argmax_ece']:.2f}), "
          f"NLL {report['calibration']['nll']:.4f}"
          + (f"; mask fidelity mIoU {100 * fidelity['generated']['mean_iou']:.2f} vs real "
             f"{100 * fidelity['real']['mean_iou']:.2f} (ratio {fidelity['mean_iou_ratio']:.3f})" if fidelity else ""))
    if args.output_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
        tmp_path = f"{args.output_json}.tmp"
        with open(tmp_path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, sort_keys=True)
        os.replace(tmp_path, args.output_json)
    if args.write_report:
        save_generator_quality(report, args.pipeline, split=split_name)
    return report


if __name__ == "__main__":
    main()
