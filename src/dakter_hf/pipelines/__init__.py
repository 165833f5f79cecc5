"""Pipelines, one task each, all loading any saved DAKTer checkpoint and running any discrete diffusers scheduler:

* [`DAKTerPipeline`]: noise -> SAR images and soft labels (joint sampling);
* [`DAKTerMaskToImagePipeline`]: masks -> SAR images drawn for them;
* [`DAKTerSegmentationPipeline`]: SAR images -> soft labels (the generator as a segmenter).

Also the samplers they are used with by name ([`set_scheduler`]) and their download from the Hub
([`download_pipeline`]).
"""

from .loading import download_pipeline
from .pipeline_dakter import DAKTerPipeline, DAKTerPipelineOutput
from .pipeline_dakter_mask_to_image import DAKTerMaskToImagePipeline, DAKTerMaskToImagePipelineOutput
from .pipeline_dakter_segmentation import DAKTerSegmentationPipeline, DAKTerSegmentationPipelineOutput
from .schedulers import SCHEDULERS, set_scheduler


__all__ = [
    "DAKTerMaskToImagePipeline",
    "DAKTerMaskToImagePipelineOutput",
    "DAKTerPipeline",
    "DAKTerPipelineOutput",
    "DAKTerSegmentationPipeline",
    "DAKTerSegmentationPipelineOutput",
    "SCHEDULERS",
    "download_pipeline",
    "set_scheduler",
]
