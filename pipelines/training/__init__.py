"""Training easel-mini from scratch: ``python -m pipelines.training.train --out weights/easel-mini``."""
