"""The speed settings (--optimize, --family-dtype, --compile-*) from the command line to the loaded model."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pipelines.base import OPTIMIZATIONS, SpeedOptions
from server.config import load_settings

from ..conftest import FAST, KARLO, TINY, running_server, tiny_settings

MODEL = ["--model", "m=kandinsky22:/nowhere"]


def test_defaults_leave_the_choice_to_the_device():
    settings = load_settings(MODEL, {})
    assert settings.optimize == SpeedOptions(enabled=None, compile_cache_dir=None, warmup_batches=(1, 2))
    assert settings.family_dtypes == {}


def test_options_and_environment():
    argv = [*MODEL, "--optimize", "sdpa,channels_last,fused_qkv", "--family-dtype", "karlo=float16"]
    argv += ["--compile-cache-dir", "/var/cache/easel", "--compile-warmup-batches", "1,4,8"]
    settings = load_settings(argv, {})
    assert settings.optimize == SpeedOptions(
        frozenset({"sdpa", "channels_last", "fused_qkv"}), "/var/cache/easel", (1, 4, 8)
    )
    assert settings.family_dtypes == {"karlo": "float16"}
    env = {"EASEL_OPTIMIZE": "none", "EASEL_FAMILY_DTYPES": "karlo=float32, kandinsky22=bfloat16"}
    settings = load_settings(MODEL, env)
    assert settings.optimize.enabled == frozenset()
    assert settings.family_dtypes == {"karlo": "float32", "kandinsky22": "bfloat16"}
    assert load_settings([*MODEL, "--optimize", ",".join(OPTIMIZATIONS)], {}).optimize.enabled == set(OPTIMIZATIONS)


@pytest.mark.parametrize(
    "argv",
    [
        ["--optimize", "sdpa,warp_drive"],
        ["--family-dtype", "dalle=float16"],
        ["--family-dtype", "karlo"],
        ["--compile-warmup-batches", "0"],
        ["--compile-warmup-batches", "one"],
    ],
)
def test_bad_values_stop_the_server_at_start(argv, capsys):
    with pytest.raises(SystemExit):
        load_settings([*MODEL, *argv], {})
    assert "error:" in capsys.readouterr().err


def test_settings_reach_the_loader_and_models_report_them(tiny_model_dirs: dict[str, Path]):
    from pipelines.loader import load_backend

    calls = {}

    def loader(name, family, path, **kwargs):
        calls[name] = kwargs
        return load_backend(name, family, path, **kwargs)

    optimize = SpeedOptions(frozenset({"sdpa", "channels_last", "fused_qkv"}))
    settings = tiny_settings(tiny_model_dirs, optimize=optimize, family_dtypes={"karlo": "float32"}, dtype="fp32")
    with running_server(settings, loader=loader) as live:
        assert calls[KARLO]["dtype"] == "float32" and calls[TINY]["dtype"] == "fp32"
        assert calls[TINY]["optimize"] == optimize
        for name in (TINY, KARLO):
            caps = httpx.get(f"{live.api_url}/models/{name}", timeout=10).json()["capabilities"]
            assert caps["optimizations"] == {"enabled": ["channels_last", "fused_qkv", "sdpa"], "warmed_up_batches": []}
        body = {"prompt": "a red circle", "size": "64x64", "seed": 1, "response_format": "b64_json", **FAST}
        response = httpx.post(live.api_url + "/images/generations", json=body, timeout=60)
        assert response.status_code == 200 and len(response.json()["data"]) == 1


def test_a_setting_the_device_cannot_honour_fails_that_model_with_the_reason(tiny_model_dirs: dict[str, Path]):
    settings = tiny_settings(tiny_model_dirs, optimize=SpeedOptions(frozenset({"sdpa", "cuda_graphs"})))
    with running_server(settings, wait_ready=False) as live:
        body = live.wait_for(lambda body: body["models"][TINY]["status"] == "failed")
        assert "cuda_graphs needs a CUDA device" in body["models"][TINY]["error"]
