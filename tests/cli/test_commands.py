"""``easel generate / edit / vary / models / eval / bench``, run in this process through the command's dispatcher.

Locally the command must write exactly the bytes the API answers for the
same request; against a server it streams partial images and writes the
completed ones; errors name the command-line flag of the API field.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from cli.main import dispatch

from ..conftest import FAST, KARLO, TINY, LiveServer
from .conftest import clean_env, easel

FAST_FLAGS = ["--prior-steps", "2", "--decoder-steps", "2"]


@pytest.fixture
def tiny_home(tmp_path: Path, tiny_model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """An EASEL_HOME whose easel.toml serves the tiny models (what `easel serve` would serve)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "easel.toml").write_text(
        f'default_model = "{TINY}"\n'
        f'[models.{TINY}]\nfamily = "kandinsky22"\npath = "{tiny_model_dirs["kandinsky"]}"\n'
        f'[models.{KARLO}]\nfamily = "karlo"\npath = "{tiny_model_dirs["karlo"]}"\n'
    )
    monkeypatch.setenv("EASEL_HOME", str(home))
    for name in ("EASEL_MODELS", "EASEL_CONFIG", "EASEL_DEFAULT_MODEL", "EASEL_DEVICE", "EASEL_DTYPE"):
        monkeypatch.delenv(name, raising=False)
    return home


def png(path: Path, size: tuple[int, int], colour=(200, 30, 30), alpha: int = 255) -> Path:
    Image.new("RGBA", size, (*colour, alpha)).save(path)
    return path


def api_bytes(client, **request) -> list[bytes]:
    answer = client.images.generate(model=TINY, response_format="b64_json", **request)
    return [base64.b64decode(item.b64_json) for item in answer.data]


def test_generate_here_writes_what_the_api_answers_with_a_bar_per_stage(tiny_home, tmp_path: Path, capsys, client):
    out = tmp_path / "out"
    argv = ["generate", "a red circle", "--n", "2", "--size", "128x128", "--seed", "11", "--out", str(out), *FAST_FLAGS]
    assert dispatch(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"{out}/a-red-circle-11.png  seed 11", f"{out}/a-red-circle-12.png  seed 12"]
    assert "prior    : 100%" in captured.err and "decoder  : 100%" in captured.err
    files = [(out / f"a-red-circle-{seed}.png").read_bytes() for seed in (11, 12)]
    assert Image.open(io.BytesIO(files[0])).size == (128, 128)
    assert files == api_bytes(client, prompt="a red circle", n=2, size="128x128", extra_body={"seed": 11, **FAST})


def test_edit_here_keeps_the_unmasked_pixels(tiny_home, tmp_path: Path, capsys):
    image = png(tmp_path / "photo.png", (96, 96))
    mask = Image.new("RGBA", (96, 96), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (32, 32, 64, 64))  # transparent: repaint
    mask.save(tmp_path / "mask.png")
    argv = [
        "edit",
        str(image),
        "--mask",
        str(tmp_path / "mask.png"),
        "a yellow star",
        "--seed",
        "3",
        "--out",
        str(tmp_path),
    ]
    assert dispatch([*argv, *FAST_FLAGS]) == 0
    result = Image.open(tmp_path / "photo-edit-3.png").convert("RGB")
    assert result.size == (96, 96)  # the input's own size
    assert result.getpixel((5, 5)) == (200, 30, 30) and result.getpixel((90, 90)) == (200, 30, 30)
    assert "decoder  : 100%" in capsys.readouterr().err


def test_edit_here_without_a_mask_edits_the_whole_image(tiny_home, tmp_path: Path) -> None:
    image = png(tmp_path / "photo.png", (96, 64))
    argv = ["edit", str(image), "make it night", "--seed", "4", "--out", str(tmp_path)]
    assert dispatch([*argv, *FAST_FLAGS]) == 0
    result = Image.open(tmp_path / "photo-edit-4.png").convert("RGB")
    assert result.size == (96, 64)  # the input's own size
    assert result.tobytes() != Image.open(image).convert("RGB").tobytes()


def test_vary_here_names_each_file_by_its_seed(tiny_home, tmp_path: Path, capsys):
    image = png(tmp_path / "input.png", (64, 64), colour=(20, 160, 40))
    assert (
        dispatch(
            [
                "vary",
                str(image),
                "--n",
                "2",
                "--seed",
                "7",
                "--size",
                "64x64",
                "--decoder-steps",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines() == [f"{tmp_path}/input-variation-{s}.png  seed {s}" for s in (7, 8)]


def test_generate_on_a_server_streams_partials_and_writes_the_final_images(
    api_server: LiveServer, tmp_path: Path, capsys, client
):
    steps = {"prior_steps": 2, "decoder_steps": 4}
    argv = ["generate", "a blue square", "--server", api_server.url, "--api-key", "k", "--model", TINY, "--seed", "21"]
    argv += [
        "--size",
        "96x96",
        "--n",
        "2",
        "--partial-images",
        "2",
        "--prior-steps",
        "2",
        "--decoder-steps",
        "4",
        "--out",
        str(tmp_path),
    ]
    assert dispatch(argv) == 0
    captured = capsys.readouterr()
    assert "stream" in captured.err and "partial 2" in captured.err and "image 2/2" in captured.err
    files = [(tmp_path / f"a-blue-square-{seed}.png").read_bytes() for seed in (21, 22)]
    assert files == api_bytes(client, prompt="a blue square", n=2, size="96x96", extra_body={"seed": 21, **steps})


def test_edit_and_vary_on_a_server(api_server: LiveServer, tmp_path: Path, capsys):
    image = png(tmp_path / "in.png", (64, 64))
    mask = png(tmp_path / "mask.png", (64, 64), alpha=0)  # all transparent: repaint everything
    server = ["--server", api_server.url, "--seed", "1", "--out", str(tmp_path), "--decoder-steps", "2"]
    assert dispatch(["edit", str(image), "--mask", str(mask), "a circle", "--prior-steps", "2", *server]) == 0
    assert dispatch(["vary", str(image), "--n", "2", "--size", "64x64", *server]) == 0
    assert {p.name for p in tmp_path.glob("in-*.png")} == {"in-edit-1.png", "in-variation-1.png", "in-variation-2.png"}
    assert Image.open(tmp_path / "in-edit-1.png").size == (64, 64)


def test_errors_are_one_line_naming_the_flag(api_server: LiveServer, tiny_home, tmp_path: Path, capsys):
    remote = ["--server", api_server.url, "--model", KARLO, "--negative-prompt", "blue", "--out", str(tmp_path)]
    assert dispatch(["generate", "a green square", *remote]) == 1
    assert capsys.readouterr().err == (
        f"easel generate: error: 400: Model '{KARLO}' does not support negative_prompt. (--negative-prompt)\n"
    )
    assert dispatch(["generate", "a green square", "--size", "5x5", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.endswith("(--size)\n")
    assert dispatch(["generate", "a green square", "--model", "nope", "--out", str(tmp_path)]) == 1
    assert "no model or alias 'nope'" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_the_step_cache_flag_reaches_the_field_checks(api_server: LiveServer, tmp_path: Path, capsys):
    remote = ["--server", api_server.url, "--out", str(tmp_path), "--decoder-step-cache"]
    assert dispatch(["generate", "a green square", "--model", KARLO, *remote, "2"]) == 1
    assert capsys.readouterr().err.startswith(f"easel generate: error: 400: Model '{KARLO}' (karlo) has no decoder")
    assert dispatch(["vary", str(_picture(tmp_path)), *remote, "0"]) == 1
    assert capsys.readouterr().err.endswith("expected 1 to 200. (--decoder-step-cache)\n")
    assert [path.name for path in tmp_path.iterdir()] == ["in.png"]


def _picture(folder: Path) -> Path:
    path = folder / "in.png"
    Image.new("RGB", (64, 64), "red").save(path)
    return path


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--partial-images", "1"], "--partial-images needs --server"),
        (["--server", "http://127.0.0.1:9", "--device", "cpu"], "--device runs here, not with --server"),
    ],
)
def test_a_flag_that_would_go_unused_is_refused(argv, line, capsys):
    with pytest.raises(SystemExit) as stopped:
        dispatch(["generate", "a red circle", *argv])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"easel: error: {line} (see easel generate --help)\n"


def test_models_lists_family_size_parameters_native_size_and_origin(tiny_home, capsys, tiny_backend):
    assert dispatch(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "FAMILY", "LICENCE", "SIZE", "PARAMETERS", "DTYPE", "NATIVE", "FROM"]
    assert table[1].startswith(f"{TINY} (default) [14 aliases]") and "64x64" in table[1]
    assert dispatch(["models", "--json"]) == 0
    rows = {row["name"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows[TINY]["parameters"] == sum(tiny_backend.info.parameter_counts.values())  # read from the headers alone
    assert rows[TINY]["stored_dtypes"] == ["float32"] and rows[TINY]["license"] is None
    assert rows[KARLO]["native_size"] == "64x64" and rows[KARLO]["family"] == "karlo"
    assert rows[TINY]["source"] == f"{tiny_home / 'easel.toml'}: models.{TINY}"


def test_lab_and_benchmark_commands_pass_their_arguments_through(capsys, tmp_path: Path):
    # A process of its own: here the lab's modules are imported already, which a real `easel eval` never meets.
    helped = easel("eval", "--help", env=clean_env(tmp_path))
    assert helped.returncode == 0 and "--images-per-prompt" in helped.stdout  # the evaluation script's own help
    assert dispatch(["bench"]) == 2
    assert dispatch(["bench", "nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def test_generate_here_loads_with_the_servers_speed_settings_but_no_warm_up(tiny_home, tmp_path, capsys, monkeypatch):
    from pipelines import loader
    from pipelines.speed import SpeedOptions

    config = tiny_home / "easel.toml"
    config.write_text('optimize = "sdpa,fused_qkv"\nfamily_dtype = "kandinsky22=fp32"\n' + config.read_text())
    load_backend, calls = loader.load_backend, []
    monkeypatch.setattr(
        loader, "load_backend", lambda *args, **kwargs: calls.append(kwargs) or load_backend(*args, **kwargs)
    )
    assert dispatch(["generate", "a red circle", "--size", "64x64", "--out", str(tmp_path), *FAST_FLAGS]) == 0
    assert (
        calls[0]["optimize"] == SpeedOptions(frozenset({"sdpa", "fused_qkv"}), None, ())
        and calls[0]["dtype"] == "float32"
    )
    config.write_text('optimize = "sdpa,cuda_graphs"\n' + config.read_text().split("\n", 2)[2])
    assert dispatch(["generate", "a red circle", "--out", str(tmp_path), *FAST_FLAGS]) == 1
    assert "cuda_graphs needs a CUDA device" in capsys.readouterr().err


def test_generate_takes_a_pulled_models_bare_name_and_names_easel_pull_for_one_not_pulled(
    tiny_home: Path, tiny_model_dirs: dict[str, Path], tmp_path: Path, capsys
):
    from weights.registry import register_user_model

    assert dispatch(["generate", "a red circle", "--model", "karlo", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        "easel generate: error: --model: model 'karlo' is not pulled yet: run `easel pull karlo` first (--model)\n"
    )
    # Registered as `easel pull` does, though easel.toml lists other models: found by its name all the same.
    entry = {"backend": "kandinsky22", "path": str(tiny_model_dirs["kandinsky"])}
    register_user_model(tiny_home, "kandinsky-2-2", entry)
    argv = ["generate", "a red circle", "--model", "kandinsky-2-2", "--size", "64x64", "--out", str(tmp_path)]
    assert dispatch([*argv, *FAST_FLAGS]) == 0, capsys.readouterr().err
    assert [Image.open(path).size for path in tmp_path.glob("*.png")] == [(64, 64)]
