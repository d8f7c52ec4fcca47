"""The ACL TFX pipeline: data -> pre-train -> (pseudo-label) -> adversarial train -> robust
evaluation -> push. See docs/pipeline.md.

``pipeline.pipeline.create_pipeline`` builds it; ``pipeline.local_runner`` runs it with
LocalDagRunner and ``pipeline.vertex_runner`` compiles it for Vertex AI / Kubeflow Pipelines.
Only this package imports TFX; ``acl_tf`` does not.
"""
