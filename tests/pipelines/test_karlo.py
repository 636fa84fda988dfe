"""Karlo (unCLIP) backend and the UnCLIP loading fix, on tiny random-weight models."""

from __future__ import annotations

import json
from dataclasses import replace

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from patches.diffusers import register_unclip
from pipelines.base import Cancelled, ImageJob, JobControl, MissingComponent, StagePreset
from pipelines.karlo import KarloBackend
from pipelines.loader import load_backend
from pipelines.tiny import build_tiny_karlo
from pipelines.unclip_compat import UnCLIPPipeline, UnCLIPTextProjModel

FAST = StagePreset(prior_steps=2, prior_guidance=4.0, decoder_steps=4, decoder_guidance=8.0, super_res_steps=2)
NATIVE = (64, 64)  # the tiny model's super-resolution sample_size


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_karlo(tmp_path_factory.mktemp("models") / "tiny-karlo")


@pytest.fixture(scope="module")
def backend(model_dir) -> KarloBackend:
    return load_backend("tiny-karlo", "karlo", model_dir, device="cpu")


def job(task="generate", n=1, seeds=None, **kwargs) -> ImageJob:
    seeds = seeds if seeds is not None else list(range(3, 3 + n))
    return ImageJob(task=task, n=n, width=NATIVE[0], height=NATIVE[1], seeds=seeds, preset=FAST, **kwargs)


def test_saved_pipeline_round_trips(model_dir):
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "UnCLIPPipeline"
    assert index["text_proj"] == ["unclip", "UnCLIPTextProjModel"]  # the published Karlo form
    pipe = UnCLIPPipeline.from_pretrained(model_dir, local_files_only=True)
    assert isinstance(pipe.text_proj, UnCLIPTextProjModel)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    images = pipe(
        "a cat",
        prior_num_inference_steps=2,
        decoder_num_inference_steps=2,
        super_res_num_inference_steps=2,
        generator=generator,
        output_type="np",
    ).images
    assert images.shape == (1, 64, 64, 3)


def test_index_naming_the_class_under_diffusers_loads(tmp_path, model_dir):
    # What diffusers >= 0.38 writes when the module is not registered.
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in model_dir.iterdir():
        (copy / item.name).symlink_to(item)
    (copy / "model_index.json").unlink()
    index = json.loads((model_dir / "model_index.json").read_text())
    index["text_proj"] = ["diffusers", "UnCLIPTextProjModel"]
    (copy / "model_index.json").write_text(json.dumps(index))
    pipe = UnCLIPPipeline.from_pretrained(copy, local_files_only=True)
    assert isinstance(pipe.text_proj, UnCLIPTextProjModel)


def test_registration_is_idempotent():
    register_unclip()
    register_unclip()
    assert diffusers.pipelines.unclip.UnCLIPPipeline is UnCLIPPipeline
    assert diffusers.UnCLIPTextProjModel is UnCLIPTextProjModel


def test_model_info(backend):
    info = backend.info
    assert info.family == "karlo"
    assert info.fixed_native_size == NATIVE
    assert info.native_size_for(1792, 1024) == NATIVE
    assert info.native_area == 64 * 64
    assert info.tasks == {"generate", "variation", "edit"}
    assert (info.edit_modes, info.edit_strength) == (("whole_image",), False)
    assert info.supports_negative_prompt is False
    assert set(info.parameter_counts) == {
        "text_encoder",
        "prior",
        "text_proj",
        "decoder",
        "super_res_first",
        "super_res_last",
        "image_encoder",
    }


def test_generate_batched_reproducible_per_image_seeds(backend, monkeypatch):
    calls = []
    original = backend.pipe.__class__.__call__
    monkeypatch.setattr(
        backend.pipe.__class__, "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    pair = backend.run(job(n=2, seeds=[10, 11], prompt="a red cat"))
    assert len(calls) == 1
    assert [(i.size, i.mode) for i in pair] == [(NATIVE, "RGB")] * 2
    again = backend.run(job(n=2, seeds=[10, 11], prompt="a red cat"))
    assert [i.tobytes() for i in pair] == [i.tobytes() for i in again]
    assert pair[0].tobytes() != pair[1].tobytes()
    single = backend.run(job(n=1, seeds=[11], prompt="a red cat"))
    assert np.abs(np.asarray(pair[1], float) - np.asarray(single[0], float)).max() <= 2


def test_previews_are_upscaled_decoder_estimates(backend):
    seen = []
    backend.run(
        job(n=2, prompt="a cat", preview_count=3),
        JobControl(on_preview=lambda i, ims: seen.append((i, [x.size for x in ims]))),
    )
    assert seen == [(i, [NATIVE, NATIVE]) for i in range(3)]


def test_cancellation_in_every_stage(backend):
    steps_before = {"prior": 0, "decoder": FAST.prior_steps, "super_res": FAST.prior_steps + FAST.decoder_steps}
    for allowed in steps_before.values():
        answers = iter([False] * (allowed + 1) + [True] * 100)  # +1: the check before the first step
        with pytest.raises(Cancelled):
            backend.run(job(prompt="a cat"), JobControl(should_cancel=lambda answers=answers: next(answers)))
    # Every scheduler's step is back to the class method afterwards.
    for scheduler in (backend.pipe.prior_scheduler, backend.pipe.decoder_scheduler, backend.pipe.super_res_scheduler):
        assert "step" not in scheduler.__dict__


def test_variation(backend):
    source = Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8))
    images = backend.run(job(task="variation", n=2, image=source))
    assert [i.size for i in images] == [NATIVE, NATIVE]
    assert images[0].tobytes() != images[1].tobytes()


def test_negative_prompt_masked_edit_and_strength_are_refused(backend):
    with pytest.raises(ValueError, match="negative_prompt"):
        backend.run(job(prompt="a cat", negative_prompt="a dog"))
    mask = Image.new("L", NATIVE, 255)
    with pytest.raises(ValueError, match="repaints the whole image only"):
        backend.run(job(task="edit", prompt="a cat", image=Image.new("RGB", NATIVE), mask=mask))
    with pytest.raises(ValueError, match="strength must be 1"):
        backend.run(job(task="edit", prompt="a cat", image=Image.new("RGB", NATIVE), strength=0.5))


def _picture(seed: int) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((48, 80, 3)) * 255).astype(np.uint8))


def _edit(backend, weight: float, **kwargs) -> list[bytes]:
    edit = job(task="edit", n=2, prompt="a cat", image=_picture(0), input_image_weight=weight, **kwargs)
    images = backend.run(edit)
    assert [image.size for image in images] == [NATIVE, NATIVE]
    return [image.tobytes() for image in images]


def test_whole_image_edit_mixes_the_input_embedding_into_the_prior_sample(backend):
    mixed = _edit(backend, 0.6)
    assert mixed == _edit(backend, 0.6)  # same seeds, same images
    assert mixed[0] != mixed[1]  # each image its own seed
    # Weight 0 is the prompt's own prior sample: exactly the generation for the same seeds.
    generated = [image.tobytes() for image in backend.run(job(n=2, prompt="a cat"))]
    assert _edit(backend, 0.0) == generated
    assert mixed[0] != generated[0] and mixed[1] != generated[1]
    assert not backend.pipe.text_proj._forward_pre_hooks  # the mix is gone after the call


def test_whole_image_edit_reference_images_and_their_weights_count(backend):
    alone = _edit(backend, 0.6)
    with_reference = _edit(backend, 0.6, references=[_picture(1)])
    assert with_reference != alone
    assert _edit(backend, 0.6, references=[_picture(1)], image_weights=(1.0, 3.0)) != with_reference


def test_a_cancelled_edit_leaves_no_mix_behind(backend):
    answers = iter([False] * (FAST.prior_steps + 2) + [True] * 100)  # cancelled in the decoder, after the mix
    edit = job(task="edit", prompt="a cat", image=_picture(0), input_image_weight=0.6)
    with pytest.raises(Cancelled):
        backend.run(edit, JobControl(should_cancel=lambda: next(answers)))
    assert not backend.pipe.text_proj._forward_pre_hooks
    assert "step" not in backend.pipe.decoder_scheduler.__dict__


def test_a_guidance_interval_in_a_preset_is_refused_not_ignored(backend):
    interval = job(prompt="a cat")
    interval = replace(interval, preset=replace(interval.preset, decoder_guidance_min_timestep=500))
    with pytest.raises(ValueError, match="guidance"):
        backend.run(interval)


def test_variation_without_image_encoder_names_what_is_missing(tmp_path):
    path = build_tiny_karlo(tmp_path / "no-encoder", with_image_encoder=False)
    backend = load_backend("bare-karlo", "karlo", path, device="cpu")
    assert "image_encoder" not in backend.info.parameter_counts
    with pytest.raises(MissingComponent, match="image_encoder, feature_extractor"):
        backend.run(job(task="variation", image=Image.new("RGB", (32, 32))))
    with pytest.raises(MissingComponent, match="cannot edit images: its directory lacks image_encoder"):
        backend.run(job(task="edit", prompt="a cat", image=Image.new("RGB", (32, 32))))
    assert len(backend.run(job(prompt="still generates"))) == 1


def test_missing_directory_says_how_to_get_karlo(tmp_path):
    with pytest.raises(FileNotFoundError, match="`easel pull karlo`"):
        load_backend("karlo", "karlo", tmp_path / "absent")


def test_half_precision_on_cpu_is_refused(model_dir):
    with pytest.raises(ValueError, match="float32"):
        load_backend("tiny-karlo", "karlo", model_dir, device="cpu", dtype="float16")
