"""Pipelines: [`DAKTerPipeline`], noise -> SAR images and soft labels with any diffusers scheduler."""

from .pipeline_dakter import DAKTerPipeline, DAKTerPipelineOutput


__all__ = ["DAKTerPipeline", "DAKTerPipelineOutput"]
