"""Fixtures of the lab's tests: one tiny training run, shared by every module that needs a trained model."""

from __future__ import annotations

import pytest

from pipelines.lab.training.train import main as train_main


@pytest.fixture(scope="session")  # tests/lanes.py keeps its tests on one xdist worker: one training per run
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    args = ["--out", str(root / "model"), "--budget", "tiny", "--workdir", str(root / "runs"), "--seed", "3"]
    train_main(args)
    return root, args
