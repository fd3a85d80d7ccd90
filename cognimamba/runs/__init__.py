"""The run-dir contract: layout, weights and manifests, checkpoints, metrics, loading, LoRA wrap and merge."""
