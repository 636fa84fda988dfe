"""The speed settings (--optimize, --family-dtype, --compile-*) from the command line to the loaded model."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pipelines.speed import OPTIMIZATIONS, SpeedOptions
from server.serving.models import speed_options
from server.settings.loading import load_settings

from ..conftest import FAST, KARLO, TINY, running_server, tiny_settings

MODEL = ["--model", "m=kandinsky22:/nowhere"]


def test_defaults_leave_the_choice_to_the_device_and_warm_up_the_largest_batch():
    settings = load_settings(MODEL, {})
    assert (settings.optimize, settings.family_dtypes, settings.compile_warmup_batches) == (None, (), None)
    assert settings.dtype_for("karlo") is None
    # 1 and 2 make the batch dimension symbolic; 16 is the most images a GPU's pipeline call merges by default.
    assert speed_options(settings) == SpeedOptions(enabled=None, compile_cache_dir=None, warmup_batches=(1, 2, 16))
    larger = load_settings([*MODEL, "--max-batch-images", "32"], {})
    assert speed_options(larger).warmup_batches == (1, 2, 32)
    smaller = load_settings([*MODEL, "--max-batch-images", "4"], {})
    assert speed_options(smaller).warmup_batches == (1, 2, 10)  # one request may still ask for 10 images


def test_flags_variables_and_the_file(tmp_path):
    argv = [*MODEL, "--optimize", "sdpa,channels_last,fused_qkv", "--family-dtype", "karlo=fp16"]
    argv += ["--compile-cache-dir", "/var/cache/easel", "--compile-warmup-batches", "1,4,8", "--dtype", "fp32"]
    settings = load_settings(argv, {})
    expected = SpeedOptions(frozenset({"sdpa", "channels_last", "fused_qkv"}), Path("/var/cache/easel"), (1, 4, 8))
    assert speed_options(settings) == expected
    assert (settings.dtype_for("karlo"), settings.dtype_for("kandinsky22")) == ("float16", "fp32")
    env = {"EASEL_OPTIMIZE": "none", "EASEL_FAMILY_DTYPE": "karlo=float32, kandinsky22=bf16"}
    settings = load_settings(MODEL, env)
    assert settings.optimize == frozenset()
    assert settings.family_dtypes == (("kandinsky22", "bfloat16"), ("karlo", "float32"))
    assert load_settings([*MODEL, "--optimize", ",".join(OPTIMIZATIONS)], {}).optimize == set(OPTIMIZATIONS)
    config = tmp_path / "easel.toml"
    config.write_text(
        'optimize = ["sdpa", "compile"]\nfamily_dtype = {karlo = "float16"}\ncompile_warmup_batches = [1, 8]\n'
    )
    settings = load_settings([*MODEL, "--config", str(config)], {})
    assert (settings.optimize, settings.family_dtypes) == ({"sdpa", "compile"}, (("karlo", "float16"),))
    assert settings.compile_warmup_batches == (1, 8)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--optimize", "sdpa,warp_drive"], "--optimize: unknown optimization warp_drive: use auto, none or any of"),
        (["--family-dtype", "dalle=float16"], "--family-dtype: expected FAMILY=DTYPE with FAMILY one of"),
        (["--family-dtype", "karlo"], "--family-dtype: expected FAMILY=DTYPE with FAMILY one of"),
        (["--family-dtype", "karlo=float8"], "--family-dtype: unknown dtype 'float8': use one of float32, float16"),
        (["--compile-warmup-batches", "0"], "--compile-warmup-batches: expected positive batch sizes like 1,2"),
        (["--compile-warmup-batches", "one"], "--compile-warmup-batches: expected positive batch sizes like 1,2"),
    ],
)
def test_bad_values_stop_the_server_at_start_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        load_settings([*MODEL, *argv], {})
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith(f"easel: error: {message}") and err.count("\n") == 1


def test_settings_reach_the_loader_and_models_report_them(tiny_model_dirs: dict[str, Path]):
    from pipelines.loader import load_backend

    calls = {}

    def loader(name, family, path, **kwargs):
        calls[name] = kwargs
        return load_backend(name, family, path, **kwargs)

    enabled = frozenset({"sdpa", "channels_last", "fused_qkv"})
    settings = tiny_settings(tiny_model_dirs, optimize=enabled, family_dtypes=(("karlo", "float32"),), dtype="fp32")
    with running_server(settings, loader=loader) as live:
        assert calls[KARLO]["dtype"] == "float32" and calls[TINY]["dtype"] == "fp32"
        assert calls[TINY]["optimize"] == SpeedOptions(enabled, None, (1, 2, 16))
        for name in (TINY, KARLO):
            caps = httpx.get(f"{live.api_url}/models/{name}", timeout=10).json()["capabilities"]
            assert caps["optimizations"] == {"enabled": ["channels_last", "fused_qkv", "sdpa"], "warmed_up_batches": []}
        body = {"prompt": "a red circle", "size": "64x64", "seed": 1, "response_format": "b64_json", **FAST}
        response = httpx.post(live.api_url + "/images/generations", json=body, timeout=60)
        assert response.status_code == 200 and len(response.json()["data"]) == 1


def test_a_setting_the_device_cannot_honour_fails_that_model_with_the_reason(tiny_model_dirs: dict[str, Path]):
    settings = tiny_settings(tiny_model_dirs, optimize=frozenset({"sdpa", "cuda_graphs"}))
    with running_server(settings, wait_ready=False) as live:
        body = live.wait_for(lambda body: body["models"][TINY]["status"] == "failed")
        assert "cuda_graphs needs a CUDA device" in body["models"][TINY]["error"]
