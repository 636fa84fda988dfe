"""Training easel-mini from scratch: ``python -m pipelines.lab.training.train --out weights/easel-mini``."""
