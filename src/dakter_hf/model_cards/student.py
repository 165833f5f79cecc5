"""The card of a distilled student: the Hub's `model-index` with its scores, its training data and usage."""

import math
import os
from collections.abc import Mapping
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .common import DEFAULT_LICENSE, dataset_id


_STUDENT_SNIPPET = """```python
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

processor = AutoImageProcessor.from_pretrained("{path}")
model = AutoModelForSemanticSegmentation.from_pretrained("{path}")
image = Image.open("scene.png").convert("L")  # a single-channel (greyscale) SAR image
with torch.no_grad():
    outputs = model(**processor(images=image, return_tensors="pt"))
mask = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]  # class ids
```"""


def make_student_card(
    id2label: Mapping[int, str],
    metrics: Mapping[str, float] | None,
    args: Mapping[str, Any],
    step: int,
    generated_ratio: float | None = None,
    num_train_real: int | None = None,
    num_train_generated: int | None = None,
    base_model: str | None = None,
    license: str = DEFAULT_LICENSE,
    repo_id: str | None = None,
):
    """
    The model card (`README.md`) of a distilled student, written next to its weights.

    The metadata the Hub indexes: `pipeline_tag: image-segmentation`, `library_name: transformers`, the licence,
    `base_model` when the student was fine-tuned from a pretrained checkpoint, the real and generated training
    datasets, and a `model-index` with the mIoU and the IoU of each class on the evaluation split (classes whose
    IoU is undefined on that split are left out).

    Args:
        id2label (`Mapping[int, str]`): class names.
        metrics (`Mapping[str, float]`, *optional*): the evaluation of this checkpoint (`mean_iou`, `iou_<name>`, ...
            from [`~dakter_hf.distill.evaluate_student`]); `None` if it was not evaluated.
        args (`Mapping`): the run's arguments (`vars(args)` of `dakter distill`): `dataset`, `sensor`, `data_dir`,
            `student`, `mode`, `generated_dataset`, `max_train_steps`, `eval_split`, `resolution`, `seed`, ...
        step (`int`): the optimisation step of this checkpoint.
        generated_ratio (`float`, *optional*): the share of generated pairs per batch used.
        num_train_real (`int`, *optional*), num_train_generated (`int`, *optional*): training set sizes.
        base_model (`str`, *optional*): the pretrained checkpoint fine-tuned (a Hub id or directory).
        license (`str`, *optional*, defaults to [`DEFAULT_LICENSE`]): the licence in the metadata.
        repo_id (`str`, *optional*): the Hub id the card is for (used in the usage snippet).

    Returns:
        `huggingface_hub.ModelCard`
    """
    id2label = {int(k): v for k, v in id2label.items()}
    real = dataset_id(args)
    generated = args.get("generated_dataset") if args.get("mode", "real") != "real" else None
    split = args.get("eval_split", "test")
    results = []
    scores = {"mean_iou": ("mean_iou", "mIoU")} | {f"iou_{n}": ("iou", f"IoU {n}") for n in id2label.values()}
    for key, (metric_type, metric_name) in scores.items():
        value = (metrics or {}).get(key)
        if value is not None and math.isfinite(float(value)):
            results.append(EvalResult(task_type="image-segmentation", task_name="Semantic segmentation",
                                      dataset_type=real, dataset_name=real, dataset_split=split,
                                      metric_type=metric_type, metric_name=metric_name,
                                      metric_value=round(float(value), 4)))
    output_name = os.path.basename(os.path.normpath(str(args["output_dir"]))) if args.get("output_dir") else None
    model_name = (repo_id or output_name or "dakter-student").split("/")[-1]
    data = ModelCardData(
        model_name=model_name, license=license, library_name="transformers", pipeline_tag="image-segmentation",
        base_model=base_model, datasets=[real] + ([os.fspath(generated)] if generated else []),
        tags=["dakter", "sar", "oil-spill", "segformer", "knowledge-distillation", "image-segmentation"],
        metrics=["mean_iou"], eval_results=results or None,
    )
    mode = args.get("mode", "real")
    mode_text = {"real": "real pairs only (cross-entropy): the baseline without generated data",
                 "hard": "real pairs (cross-entropy) and generated pairs with their argmax labels (cross-entropy)",
                 "soft": "real pairs (cross-entropy) and generated pairs distilled from their soft labels (KL, "
                         f"temperature {args.get('kd_temperature', 1.0)})"}.get(mode, mode)
    training = [f"- real data: `{real}`" + (f", {num_train_real} pairs" if num_train_real is not None else ""),
                f"- mode `{mode}`: {mode_text}"]
    if generated:
        ratio = f"{generated_ratio:.3f}" if generated_ratio is not None else str(args.get("generated_ratio"))
        training.append(f"- generated data: `{generated}`" + (f", {num_train_generated} pairs" if num_train_generated
                                                               is not None else "") + f"; generated share per batch "
                        f"{ratio}")
    training += [f"- student: `{args.get('student')}`" + (f" (fine-tuned from `{base_model}`)" if base_model else
                                                          " (random initialisation)")
                 + f", resolution {args.get('resolution')}",
                 f"- {args.get('max_train_steps')} steps of batch {args.get('train_batch_size')}, learning rate "
                 f"{args.get('learning_rate')}, augmentation (flips / 90-degree rotations): "
                 f"{'yes' if args.get('augment') else 'no'}, seed {args.get('seed')}; this checkpoint: step {step}"]
    if results:
        rows = "\n".join(f"| {r.metric_name} | {r.metric_value * 100:.2f} |" for r in results)
        measured = f"On the `{split}` split of `{real}` (percent):\n\n| metric | value |\n|---|---|\n{rows}"
    else:
        measured = "This checkpoint was not evaluated."
    classes = ", ".join(f"{k} = {v}" for k, v in sorted(id2label.items()))
    text = "\n".join([
        "", f"# {model_name}", "",
        f"A SegFormer student for SAR oil-spill segmentation ({classes}), trained by `dakter distill` of `dakter_hf` "
        "(DAKTer: a joint image + soft-label diffusion model generates extra training pairs).", "",
        "## Training", "", *training, "", "## Results", "", measured, "",
        "## Usage", "", _STUDENT_SNIPPET.format(path=repo_id or "path/to/this/directory",
                                                 num_classes=len(id2label)), "",
    ])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")
