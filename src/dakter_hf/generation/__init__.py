"""Generated datasets: a trained [`DAKTerPipeline`] becomes a `datasets` dataset of synthetic (image, soft label) pairs.

* [`sampling`](sampling.py): rows, row `i` from seed `seed + i`, in memory ([`generate_rows`], [`generate_dataset`])
  or on disk ([`generate_to_disk`]);
* [`store`](store.py): the resumable, atomic, multi-process writer ([`write_generated_dataset`]);
* [`settings`](settings.py): everything a row depends on, recorded in the manifest and the card;
* [`preview`](preview.py): the preview grid beside a dataset;
* [`mask_conditioned`](mask_conditioned.py): images drawn for the masks of a labelled dataset
  ([`generate_mask_conditioned_to_disk`]), through the same store;
* [`mask_perturbation`](mask_perturbation.py): random layout perturbations of those masks ([`MaskPerturber`]);
* [`concatenate`](concatenate.py): one dataset from several generated ones, e.g. joint and mask-conditioned pairs
  ([`concatenate_generated_datasets`]);
* [`quality`](quality.py): alignment, calibration and mask fidelity of a generator on a labelled real split
  ([`measure_generator_quality`], [`save_generator_quality`]);
* [`calibration`](calibration.py): the soft-label temperature fitted on a labelled real split by NLL and stored as
  the pipeline's default ([`fit_soft_label_temperature`], [`save_soft_label_temperature`]).

The schema of a generated dataset is in [`dakter_hf.data.generated`], the soft-label storage codec in
[`dakter_hf.labels`] and the samplers by name in [`dakter_hf.pipelines.schedulers`]; their names are re-exported
here, where they used to live.
"""

from ..data.generated import (
    MASK_TRANSFORMS,
    PREVIEW_NAME,
    generated_features,
    get_generated_id2label,
    mask_conditioned_features,
)
from ..labels import (
    QUANTIZATION_LEVELS,
    SOFT_LABEL_DTYPES,
    decode_soft_labels,
    encode_soft_labels,
    quantize_soft_labels,
    resolve_id2label,
)
from ..pipelines.schedulers import SCHEDULERS, set_scheduler
from .calibration import SoftLabelCalibration, fit_soft_label_temperature, save_soft_label_temperature
from .concatenate import concatenate_generated_datasets
from .mask_conditioned import apply_mask_transform, generate_mask_conditioned_to_disk, mask_transform_of_row
from .mask_perturbation import MASK_PERTURBATIONS, MaskPerturber, apply_mask_perturbation
from .preview import save_preview
from .quality import (
    QUALITY_NAME,
    measure_generator_quality,
    measure_sample_realism,
    save_generator_quality,
    student_image_features,
)
from .sampling import COMPUTE_DTYPES, compute_autocast, generate_dataset, generate_rows, generate_to_disk
from .settings import generation_settings, unet_fingerprint, unet_memory_format
from .store import (
    MANIFEST_NAME,
    WORK_DIR_SUFFIX,
    GenerationOutput,
    GenerationProgress,
    check_run_arguments,
    split_indices,
    work_dir_for,
    write_generated_dataset,
)


__all__ = [
    "COMPUTE_DTYPES",
    "MANIFEST_NAME",
    "MASK_PERTURBATIONS",
    "MASK_TRANSFORMS",
    "PREVIEW_NAME",
    "QUALITY_NAME",
    "QUANTIZATION_LEVELS",
    "SCHEDULERS",
    "SOFT_LABEL_DTYPES",
    "WORK_DIR_SUFFIX",
    "GenerationOutput",
    "GenerationProgress",
    "SoftLabelCalibration",
    "MaskPerturber",
    "apply_mask_perturbation",
    "apply_mask_transform",
    "check_run_arguments",
    "compute_autocast",
    "concatenate_generated_datasets",
    "decode_soft_labels",
    "encode_soft_labels",
    "fit_soft_label_temperature",
    "generate_dataset",
    "generate_mask_conditioned_to_disk",
    "generate_rows",
    "generate_to_disk",
    "generated_features",
    "generation_settings",
    "get_generated_id2label",
    "mask_conditioned_features",
    "mask_transform_of_row",
    "measure_generator_quality",
    "measure_sample_realism",
    "quantize_soft_labels",
    "resolve_id2label",
    "save_generator_quality",
    "save_preview",
    "save_soft_label_temperature",
    "set_scheduler",
    "split_indices",
    "student_image_features",
    "unet_fingerprint",
    "unet_memory_format",
    "work_dir_for",
    "write_generated_dataset",
]
