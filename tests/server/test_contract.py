"""The newest fields as parsed and turned into jobs, without a server: what each one sets."""

from __future__ import annotations

import pytest

from pipelines.base import ModelInfo
from pipelines.presets import QUALITIES, complexities_for, presets_for
from server.http.errors import APIError
from server.protocol.fields import FieldReader
from server.protocol.images import GenerationRequest, frame_delay, is_openai_image_name
from server.protocol.tables import SVG

INFO = ModelInfo(
    name="m", family="kandinsky22", native_area=64 * 64, size_multiple=16, min_side=64, max_side=1024,
    fixed_native_size=None, tasks=frozenset({"generate"}), presets=presets_for("easel-mini"),
    parameter_counts={}, device="cpu", dtype="float32", complexities=complexities_for("easel-mini"),
    supports_animation=True,
)  # fmt: skip


def job_for(**fields):
    return GenerationRequest.parse({"prompt": "a red circle", **fields}).to_job(INFO, "gpt-image")


def test_complexity_sets_the_prior_and_quality_the_decoder():
    plain = job_for(quality="low").preset
    planned = job_for(quality="low", complexity="high").preset
    assert (plain.prior_steps, planned.prior_steps) == (10, 40)
    assert planned.decoder_steps == plain.decoder_steps == 10
    assert job_for(complexity="high", prior_steps=3).preset.prior_steps == 3  # the extension still wins


@pytest.mark.parametrize("family", ["kandinsky22", "karlo", "easel-mini"])
def test_every_family_has_every_quality_with_xhigh_and_max_above_high(family: str):
    presets = presets_for(family)
    assert set(presets) == set(QUALITIES)
    steps = [presets[name].decoder_steps for name in ("high", "xhigh", "max")]
    assert steps == sorted(set(steps))


def test_gif_fields():
    job = job_for(output_format="gif", frame_count=5)
    assert (job.frames, job.n) == (5, 1)
    assert job_for().frames == 1
    assert GenerationRequest.parse({"prompt": "p", "output_format": "gif"}).options.frames == 9  # OpenAI's default


@pytest.mark.parametrize("asked, encoded", [(200, 200), (123, 120), (125, 130), (1, 10), (10**9, 655_350)])
def test_frame_delay_rounds_to_ten_ms(asked: int, encoded: int):
    assert frame_delay(asked) == encoded


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"safety_identifier": "s", "user": "u"}, "s"),  # a non-empty safety_identifier wins
        ({"safety_identifier": "", "user": "u"}, "u"),
        ({"safety_identifier": None, "user": "u"}, "u"),
        ({"user": ""}, None),
        ({}, None),
    ],
)
def test_safety_identifier_follows_openai(fields: dict, expected: str | None):
    assert GenerationRequest.parse({"prompt": "p", **fields}).options.safety_identifier == expected


def test_form_brackets_nest_into_objects():
    reader = FieldReader({"svg[model]": "vtracer", "svg[reasoning][effort]": "high", "n": "2"}, form=True)
    assert reader.read(SVG) == {"model": "vtracer", "reasoning": {"effort": "high"}}
    with pytest.raises(APIError) as caught:
        FieldReader({"svg": "x", "svg[model]": "vtracer"}, form=True)
    assert caught.value.param == "svg"


@pytest.mark.parametrize(
    "name, openai",
    [
        ("gpt-image-1", True),
        ("gpt-image-2.5-flare-2026-09-08", True),
        ("gpt-image-9-turbo", True),
        ("chatgpt-image-latest", True),
        ("gpt-image", False),
        ("gpt-image-", False),
        ("gpt-images-1", False),
        ("dall-e-4", False),
        ("gpt-image-1/x", False),
        ("gpt-image-" + "1" * 60, False),
    ],
)
def test_openai_names_by_rule(name: str, openai: bool):
    assert is_openai_image_name(name) is openai
