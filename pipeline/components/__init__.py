"""The pipeline's custom components, one per module (see docs/pipeline.md)."""
