"""Cloud TPU pod slices: `python -m launch.tpu.pod` (gcloud) and the all-hosts sweep runner."""
