"""benchmarks/real_size_stage.py: its command line, and ``--quantize`` going through the loader's quantization."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import real_size_stage
from benchmarks.real_size_stage import parse_arguments
from pipelines.tiny import build_tiny_kandinsky


def test_the_command_line_keeps_its_positional_form_and_takes_a_quantization():
    assert parse_arguments(["unet", "/m", "float32"]) == {
        "stage": "unet",
        "model_dir": Path("/m"),
        "dtype_name": "float32",
        "sides": (512, 768),
        "convert": True,
        "quantize": "none",
    }
    parsed = parse_arguments(["prior", "/m", "bfloat16", "none", "--as-libraries-read", "--quantize", "int8"])
    assert (parsed["sides"], parsed["convert"], parsed["quantize"]) == ((), False, "int8")
    assert parse_arguments(["unet", "/m", "float32", "512", "--quantize", "int8"])["sides"] == (512,)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["unet", "/m", "float32", "--quantize", "int4"], "invalid choice: 'int4'"),
        (["unet", "/m", "float32", "5x5"], "sides: comma-separated whole numbers or none, not '5x5'"),
        (["vae", "/m", "float32"], "invalid choice: 'vae'"),
    ],
)
def test_bad_arguments_stop_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as stopped:
        parse_arguments(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_fp8_is_refused_on_a_cpu_before_anything_loads(tmp_path: Path):
    with pytest.raises(ValueError, match="fp8 quantization needs an NVIDIA GPU"):
        real_size_stage.main("unet", tmp_path / "absent", "float32", (), quantize="fp8")


@pytest.fixture(scope="module")
def tiny_kandinsky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_kandinsky(tmp_path_factory.mktemp("tiny") / "kandinsky")


def test_int8_quantizes_the_stage_as_the_loader_does_and_reports_its_size(tiny_kandinsky: Path):
    plain = real_size_stage.main("unet", tiny_kandinsky, "float32", ())
    quantized = real_size_stage.main("unet", tiny_kandinsky, "float32", (), quantize="int8")
    assert plain["quantize"]["mode"] == "none" and plain["quantize"]["layers"] == 0
    assert "after_quantize" not in plain
    report = quantized["quantize"]
    assert report["mode"] == "int8" and report["layers"] > 0
    assert report["weight_bytes_before"] == plain["quantize"]["weight_bytes_after"]
    assert report["weight_bytes_after"] < report["weight_bytes_before"] / 2
    assert set(quantized["after_quantize"]) == {"peak_rss", "anonymous", "file_mapped"}


def test_compute_float32_keeps_bfloat16_weights_and_hooks_every_layer(tiny_kandinsky: Path):
    assert parse_arguments(["unet", "/m", "bfloat16", "none", "--compute", "float32"])["compute"] == "float32"
    plain = real_size_stage.main("unet", tiny_kandinsky, "bfloat16", ())
    wide = real_size_stage.main("unet", tiny_kandinsky, "bfloat16", (), compute="float32", quantize="int8")
    assert "layers_cast" not in plain and wide["compute_dtype"] == "float32" and wide["layers_cast"] > 0
    assert wide["quantize"]["layers"] > 0  # quantized from float32 first, the rest hooked
    assert set(wide["after_casting_hooks"]) == {"peak_rss", "anonymous", "file_mapped"}
