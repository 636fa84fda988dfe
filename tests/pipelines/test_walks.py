"""Walks through image-embedding space: GIF frames and input-fidelity mixing, on the tiny Kandinsky model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.base import ImageJob
from pipelines.presets import presets_for
from pipelines.walks import mix_in_image, slerp, walk_positions

FAST_PRESET = presets_for("kandinsky22")["low"].adjusted(prior_steps=2, decoder_steps=2)


@pytest.mark.parametrize("frames", [2, 3, 4, 9, 16])
def test_positions_go_out_and_back_without_neighbours_at_one_place(frames: int):
    positions = walk_positions(frames)
    assert (
        len(positions) == frames and max(positions) == 1.0 and min(positions) <= 0.25
    )  # odd counts start half a frame in
    assert all(a != b for a, b in zip(positions, positions[1:]))
    assert len(set(positions)) == frames // 2 + 1  # out and back: each place but the turning points twice


def test_slerp_keeps_the_ends_and_interpolates_length():
    a = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 2.0]])  # the second row: parallel to a's
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b)
    middle = slerp(a, b, 0.5)
    assert torch.allclose(middle[0].norm(), torch.tensor(2.0))  # lengths 3 and 1: halfway is 2
    assert torch.allclose(middle[0, 0], middle[0, 1])  # the direction halfway round the quarter circle
    assert torch.allclose(middle[1], torch.tensor([1.5, 1.5]))


def test_mixing_in_the_image_moves_only_when_asked():
    prompt, image = torch.randn(2, 8), torch.randn(1, 8)
    assert mix_in_image(prompt, image, 0.0) is prompt
    mixed = mix_in_image(prompt, image, 0.5)
    assert mixed.shape == prompt.shape and not torch.allclose(mixed, prompt)


def _job(frames: int, n: int = 2) -> ImageJob:
    return ImageJob(
        task="generate", n=n, width=64, height=64, seeds=[11, 12][:n], preset=FAST_PRESET, prompt="a red circle",
        frames=frames,
    )  # fmt: skip


def test_frames_come_grouped_per_image_and_each_place_is_decoded_once(tiny_backend, monkeypatch):
    calls = []
    decode = tiny_backend._decode
    monkeypatch.setattr(tiny_backend, "_decode", lambda rows, *rest: calls.append(rows.size) or decode(rows, *rest))
    images = tiny_backend.run(_job(frames=4))
    assert len(images) == 8 and all(isinstance(image, Image.Image) for image in images)
    assert calls == [2, 2, 2]  # places 0, 0.5 and 1; 0.5 twice on the path
    arrays = [np.asarray(image, dtype=np.int16) for image in images]
    for first in (0, 4):  # each image's four frames: 0 -> 0.5 -> 1 -> 0.5
        frames = arrays[first : first + 4]
        assert np.array_equal(frames[1], frames[3]) and not np.array_equal(frames[0], frames[2])
    assert not np.array_equal(arrays[0], arrays[4])  # the two images have their own seeds


def test_an_animation_is_the_same_for_the_same_seed(tiny_backend):
    first = [np.asarray(image) for image in tiny_backend.run(_job(frames=3, n=1))]
    again = [np.asarray(image) for image in tiny_backend.run(_job(frames=3, n=1))]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_only_generations_animate(tiny_backend):
    job = _job(frames=3, n=1)
    job.task = "variation"
    job.image = Image.new("RGB", (64, 64))
    with pytest.raises(ValueError, match="cannot animate"):
        tiny_backend.run(job)
