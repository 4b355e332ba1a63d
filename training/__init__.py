"""Training: data formats, LoRA setup, the worker process and the job store."""
