"""--quantize and --step-cache from the command line, variables and easel.toml to the loaded model and /v1/models."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
from openai import OpenAI

from pipelines.speed import SpeedOptions
from server.app.preflight import check_before_listening
from server.serving.models import speed_options
from server.settings.loading import load_settings
from server.settings.options import ConfigError

from ..conftest import FAST, KARLO, TINY, running_server, tiny_settings

MODEL = ["--model", "m=kandinsky22:/nowhere"]
REPO = Path(__file__).resolve().parents[2]


def test_off_by_default_and_set_by_flag_variable_or_file(tmp_path):
    assert speed_options(load_settings(MODEL, {})) == SpeedOptions(warmup_batches=(1, 2, 16))
    settings = load_settings([*MODEL, "--quantize", "int8", "--step-cache", "3"], {})
    assert (speed_options(settings).quantize, speed_options(settings).step_cache) == ("int8", 3)
    settings = load_settings(MODEL, {"EASEL_QUANTIZE": "INT8", "EASEL_STEP_CACHE": "2"})
    assert (settings.quantize, settings.step_cache) == ("int8", 2)
    config = tmp_path / "easel.toml"
    config.write_text('quantize = "int8"\nstep_cache = 2\n')
    settings = load_settings([*MODEL, "--config", str(config)], {})
    assert (settings.quantize, settings.step_cache) == ("int8", 2)


def test_a_model_entry_sets_its_own(tmp_path):
    config = tmp_path / "easel.toml"
    config.write_text(
        'quantize = "int8"\nstep_cache = 2\n'
        '[models.small]\nfamily = "kandinsky22"\npath = "/nowhere"\nquantize = "none"\nstep_cache = 4\n'
        '[models.plain]\nfamily = "kandinsky22"\npath = "/elsewhere"\n'
        '[models.k]\nfamily = "karlo"\npath = "/k"\n'
    )
    settings = load_settings(["--config", str(config)], {})
    small, plain, karlo = settings.models
    assert (speed_options(settings, small).quantize, speed_options(settings, small).step_cache) == ("none", 4)
    assert (speed_options(settings, plain).quantize, speed_options(settings, plain).step_cache) == ("int8", 2)
    # The options' step cache reaches the families with a UNet decoder only (/v1/models says which).
    assert (speed_options(settings, karlo).quantize, speed_options(settings, karlo).step_cache) == ("int8", 0)
    assert settings.savings_for(small)[2:] == (f"{config}: models.small.quantize", f"{config}: models.small.step_cache")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--quantize", "int4"], "--quantize: unknown quantization 'int4': use one of none, int8, fp8"),
        (["--step-cache", "-1"], "--step-cache: expected 0 (off) or a whole number of steps N >= 1, got '-1'"),
        (["--step-cache", "often"], "--step-cache: expected 0 (off) or a whole number of steps N >= 1, got 'often'"),
    ],
)
def test_bad_values_stop_the_server_at_start_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        load_settings([*MODEL, *argv], {})
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err == f"easel: error: {message}\n"


def test_a_bad_model_entry_names_it(tmp_path, capsys):
    config = tmp_path / "easel.toml"
    config.write_text('[models.small]\nfamily = "kandinsky22"\npath = "/nowhere"\nquantize = "nf4"\n')
    with pytest.raises(SystemExit):
        load_settings(["--config", str(config)], {})
    err = capsys.readouterr().err
    assert (
        err
        == f"easel: error: {config}: models.small.quantize: unknown quantization 'nf4': use one of none, int8, fp8\n"
    )


def test_what_this_machine_or_model_cannot_take_is_refused_before_listening(tiny_model_dirs):
    with pytest.raises(ConfigError) as refused:
        check_before_listening(tiny_settings(tiny_model_dirs, quantize="fp8"))
    assert str(refused.value) == (
        f"--quantize: model '{TINY}': fp8 quantization needs an NVIDIA GPU with float8 support "
        "(compute capability 8.9+), not cpu"
    )
    compiled = tiny_settings(tiny_model_dirs, step_cache=2, optimize=frozenset({"sdpa", "compile"}))
    with pytest.raises(ConfigError, match=r"^--step-cache: model '.*': step caching cannot be combined with compile"):
        check_before_listening(compiled)
    check_before_listening(tiny_settings(tiny_model_dirs, quantize="int8", step_cache=2))  # Karlo: int8 only


def test_fp8_on_this_cpu_stops_easel_serve_with_one_line(tiny_model_dirs, tmp_path):
    model = f"t=kandinsky22:{tiny_model_dirs['kandinsky']}"
    done = subprocess.run(
        [sys.executable, "-m", "server", "--model", model, "--quantize", "fp8"],
        cwd=REPO, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EASEL_HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.endswith(
        "easel: error: --quantize: model 't': fp8 quantization needs an NVIDIA GPU with float8 support "
        "(compute capability 8.9+), not cpu\n"
    )


def test_models_report_them_and_images_reproduce(tiny_model_dirs):
    settings = tiny_settings(tiny_model_dirs, quantize="int8", step_cache=2)
    with running_server(settings) as live:
        client = OpenAI(base_url=live.api_url, api_key="any", max_retries=0)
        tiny = client.models.retrieve(TINY).model_extra["capabilities"]["optimizations"]
        assert tiny["step_cache"] == 2 and tiny["quantize"]["mode"] == "int8" and tiny["quantize"]["layers"] > 0
        assert tiny["quantize"]["weight_bytes_after"] < tiny["quantize"]["weight_bytes_before"]
        karlo = client.models.retrieve(KARLO).model_extra["capabilities"]["optimizations"]
        assert "step_cache" not in karlo and karlo["quantize"]["mode"] == "int8"
        extra = {"seed": 7, **FAST}
        images = [
            client.images.generate(prompt="a red circle", model=TINY, size="256x256", n=1, response_format="b64_json",
                                   extra_body=extra).data[0].b64_json
            for _ in range(2)
        ]  # fmt: skip
        assert images[0] == images[1]
        from io import BytesIO

        from PIL import Image

        assert Image.open(BytesIO(base64.b64decode(images[0]))).size == (256, 256)
