"""The embedding probe: what an image embedding carries, scored on seen and held-out objects."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F


@pytest.mark.model  # fits a probe on 3,000 embeddings: tens of seconds on a busy CPU
def test_embedding_probe_reads_what_an_embedding_encodes_and_nothing_from_noise():
    from pipelines.lab.probe_embeddings import fit_probe, probe_accuracy
    from pipelines.lab.training.data import ATTRIBUTE_CLASSES

    generator = torch.Generator().manual_seed(0)
    objects = torch.stack(
        [torch.randint(1, classes, (3000, 2), generator=generator) for classes in ATTRIBUTE_CLASSES.values()], dim=-1
    )
    objects[:, 1] *= (torch.rand(3000, generator=generator) < 0.5)[:, None]  # about half the scenes have one object
    encoded = torch.cat(
        [
            F.one_hot(objects[:, slot, column], classes)
            for slot in range(2)
            for column, classes in enumerate(ATTRIBUTE_CLASSES.values())
        ],
        dim=1,
    )
    encoded = encoded.float() + 0.1 * torch.randn(encoded.shape, generator=generator)
    noise = torch.randn(encoded.shape, generator=generator)
    train, test = slice(0, 2500), slice(2500, 3000)
    assert ATTRIBUTE_CLASSES["shape"] == 9  # eight shapes (and "none"): chance is 1 in 8
    for embeds, expected in ((encoded, (0.99, 1.0)), (noise, (0.0, 0.3))):
        probes = fit_probe(embeds[train], objects[train], steps=300, seed=0)
        assert expected[0] <= probe_accuracy(probes, embeds[test], objects[test], "shape") <= expected[1]


def test_embedding_probe_command_scores_every_attribute_on_both_sets(tiny_model, tmp_path):
    from pipelines.lab.probe_embeddings import main as probe_main

    out = tmp_path / "probe.json"
    root, _ = tiny_model
    results = probe_main(
        [
            "--model",
            str(root / "model"),
            "--train-scenes",
            "64",
            "--test-scenes",
            "40",
            "--steps",
            "5",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == results
    assert list(results) == ["position", "color", "shape", "size"]
    for row in results.values():
        assert list(row) == [
            "seen, one-object scenes",
            "seen, two-object scenes",
            "held-out, one-object scenes",
            "held-out, two-object scenes",
        ]
        assert all(0.0 <= value <= 1.0 for value in row.values())


def test_embedding_probe_scores_only_the_heldout_objects_of_heldout_scenes():
    from pipelines.lab.probe_embeddings import heldout_mask, probe_accuracy
    from pipelines.lab.scenes import Scene, SceneObject

    # Label slots follow position order, so the held-out red star on the right is slot 1.
    scene = Scene((SceneObject("red", "star", "small", "right"), SceneObject("red", "circle", "small", "left")), "blue")
    single = Scene((SceneObject("blue", "heart", "large", "top"),), "white")
    assert heldout_mask([scene, single]).tolist() == [[False, True], [True, False]]

    class Reads:  # a probe whose shape logits favour class 1 in slot 0 and class 2 in slot 1
        def logits(self, embeds, attribute):
            return torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]).expand(len(embeds), -1, -1)

    objects = torch.tensor([[[1, 1, 1, 1], [2, 1, 2, 1]], [[1, 1, 2, 1], [0, 0, 0, 0]]])
    embeds = torch.zeros(2, 4)
    assert probe_accuracy(Reads(), embeds, objects, "shape") == 2 / 3  # the single scene's object is misread
    assert probe_accuracy(Reads(), embeds, objects, "shape", torch.tensor([[False, True], [True, False]])) == 0.5
