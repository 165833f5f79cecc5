"""Pipelines: [`DAKTerPipeline`], noise -> SAR images and soft labels with any diffusers scheduler; the samplers it
is used with by name ([`set_scheduler`]); its download from the Hub ([`download_pipeline`])."""

from .loading import download_pipeline
from .pipeline_dakter import DAKTerPipeline, DAKTerPipelineOutput
from .schedulers import SCHEDULERS, set_scheduler


__all__ = ["DAKTerPipeline", "DAKTerPipelineOutput", "SCHEDULERS", "download_pipeline", "set_scheduler"]
