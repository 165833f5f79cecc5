from .pipeline_dakter import DAKTerPipeline, DAKTerPipelineOutput

__all__ = ["DAKTerPipeline", "DAKTerPipelineOutput"]
