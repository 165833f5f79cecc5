"""`python examples/evaluate_student.py`: score a SegFormer checkpoint (local directory or Hub id) on a dataset split
and print its metrics table.

    python examples/evaluate_student.py --model_name_or_path outputs/student-soft/best \\
        --dataset sos --data_dir ../shared/data/sos --sensor palsar --split test

(`python -m dakter_hf.commands.evaluate ...` is the same command.) Images are resized and normalised with the
checkpoint's own image processor (`preprocessor_config.json`, PIL backend) when it has one -- exactly what
`AutoImageProcessor` + `AutoModelForSemanticSegmentation` do; otherwise with
`dakter_hf.distill.create_image_processor(--resolution or config.image_size)` (a warning says so). Masks are read at
their native size, logits are upsampled to it (bilinear) and arg-maxed; the metrics come from one confusion matrix
over the whole split (summed across processes under `accelerate launch` / `torchrun`). The table (mIoU, per-class IoU,
F1, precision, recall, pixel accuracy) is printed and written to `--output_json`.
"""

import argparse
import json
import logging
import os

from accelerate import Accelerator
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

from ..data import HELDOUT_SPLIT, add_data_args, check_data_args, get_id2label
from ..distill.evaluation import (
    build_evaluation_dataloader,
    evaluate_student,
    evaluation_dataset_from_args,
    format_metrics_table,
)
from ..distill.students import create_image_processor
from ..distributed import check_world_size
from ..errors import DAKTerError, check_finite_parameters
from ..filesystem import write_text_atomic
from .errors import DEBUG_HELP, command_line_errors


logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the evaluation script (`--help` lists them)."""
    parser = argparse.ArgumentParser(description="Evaluate a SegFormer checkpoint on a SAR segmentation split.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="Checkpoint directory or Hub model id.")
    parser.add_argument("--revision", default=None, help="Hub revision.")
    parser.add_argument("--hub_token", default=None, help="Hub token (default: the logged-in token / HF_TOKEN).")
    add_data_args(parser)
    parser.add_argument("--split", default="test",
                        help=f"Dataset split to score; '{HELDOUT_SPLIT}' = the training pairs outside the seeded "
                             "--num_train_samples subset (a validation set for scarce-data runs).")
    parser.add_argument("--resolution", type=int, default=None,
                        help="Only used without a preprocessor_config.json (input size; default config.image_size) "
                             "and as the scene size of --dataset simulated (default: the processor's size).")
    parser.add_argument("--batch_size", type=int, default=16, help="Batch size per process.")
    parser.add_argument("--max_eval_samples", type=int, default=None, help="Score only the first N pairs.")
    parser.add_argument("--output_json", default=None,
                        help="Where to write the metrics (default: <checkpoint dir>/eval_<dataset>_<split>.json for a "
                             "local checkpoint, ./eval_<dataset>_<split>.json otherwise).")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    for name in ("batch_size", "max_eval_samples", "resolution"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}.")
    check_data_args(parser, args, split=args.split)
    if args.output_json is not None and os.path.isdir(args.output_json):
        parser.error(f"--output_json {args.output_json!r} is a directory; expected the path of a JSON file to write.")
    if args.output_json is None:
        name = f"eval_{args.dataset}{'_' + args.sensor if args.sensor else ''}_{args.split}.json"
        base = args.model_name_or_path if os.path.isdir(args.model_name_or_path) else os.curdir
        args.output_json = os.path.join(base, name)
    return args


def load_checkpoint(args):
    """The model and the image processor of the checkpoint (fallback processor when it has none)."""
    options = {"revision": args.revision, "token": args.hub_token}
    try:
        model = AutoModelForSemanticSegmentation.from_pretrained(args.model_name_or_path, **options)
    except (OSError, ValueError) as error:
        raise DAKTerError(f"--model_name_or_path {args.model_name_or_path!r} could not be loaded as a segmentation "
                          f"model: {error}") from error
    try:  # the PIL backend is bit-exact with the training resize (torchvision may differ by one grey level)
        image_processor = AutoImageProcessor.from_pretrained(args.model_name_or_path, backend="pil", **options)
    except (OSError, ValueError):
        size = args.resolution or getattr(model.config, "image_size", None)
        logger.warning(f"{args.model_name_or_path} has no preprocessor_config.json: resizing to {size}x{size} and "
                       "normalising to [-1, 1] (dakter_hf.distill.create_image_processor).")
        image_processor = create_image_processor(size, num_channels=model.config.num_channels)
    return model, image_processor


@command_line_errors
def main(argv: list[str] | None = None) -> dict:
    """Score a checkpoint on one split and return the metrics (also printed and, if asked, written as JSON)."""
    args = parse_args(argv)
    accelerator = Accelerator()
    check_world_size(accelerator)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    model, image_processor = load_checkpoint(args)
    size = dict(getattr(image_processor, "size", None) or {})
    scene_size = args.resolution or size.get("height") or getattr(model.config, "image_size", None)
    dataset = evaluation_dataset_from_args(args, args.split, simulated_resolution=scene_size)
    id2label = get_id2label(dataset)
    if model.config.num_labels != len(id2label):
        raise DAKTerError(f"--model_name_or_path predicts {model.config.num_labels} classes "
                          f"({model.config.id2label}) but --dataset {args.dataset} has {len(id2label)} ({id2label}).")
    if {int(k): v for k, v in model.config.id2label.items()} != id2label:
        logger.warning(f"Class names differ: model {model.config.id2label}, data {id2label}; matched by index.")
    check_finite_parameters(model, f"--model_name_or_path {args.model_name_or_path}",
                            advice="its scores would be meaningless, so it is not evaluated")
    model.to(accelerator.device)
    dataloader = build_evaluation_dataloader(dataset, image_processor, args.batch_size, accelerator.process_index,
                                             accelerator.num_processes, args.max_eval_samples)
    metrics = evaluate_student(model, dataloader, id2label, accelerator)
    num_samples = len(dataset) if args.max_eval_samples is None else min(args.max_eval_samples, len(dataset))
    result = {
        "model_name_or_path": args.model_name_or_path,
        "dataset": args.dataset,
        "sensor": args.sensor,
        "split": args.split,
        "num_samples": num_samples,
        "num_processes": accelerator.num_processes,
        "image_processor_size": {k: v for k, v in size.items() if v is not None},
        "metrics": metrics,
    }
    if accelerator.is_main_process:
        print(format_metrics_table(metrics, id2label, title=f"{args.model_name_or_path} on {args.dataset} "
                                                            f"{args.split} ({num_samples} images)"))
        write_text_atomic(args.output_json, json.dumps(result, indent=2) + "\n")
        print(f"Metrics written to {args.output_json}")
    return result


if __name__ == "__main__":
    main()
