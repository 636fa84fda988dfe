"""Bare model names: every place that lists models takes a registered model's name as well as NAME=FAMILY:PATH.

A tiny model is registered in a temporary ``$EASEL_HOME`` as ``easel pull``
would register it; each form (``--model``, ``EASEL_MODELS``, easel.toml's
``models``, ``--default-model``) must find it by name, and a name that is
not registered gets one line saying what to do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from server.__main__ import serve
from server.settings.loading import read_settings
from server.settings.options import ConfigError
from weights.registry import register_user_model

PULLED = "kandinsky-2-2"  # a known pull name, registered here with a tiny model
SHIPPED = Path(__file__).resolve().parents[2] / "weights" / "easel-mini"


@pytest.fixture
def home(tmp_path: Path, tiny_model_dirs: dict[str, Path]) -> Path:
    home = tmp_path / "home"
    entry = {"backend": "kandinsky22", "path": str(tiny_model_dirs["kandinsky"]), "presets": "kandinsky22"}
    register_user_model(home, PULLED, {**entry, "owned_by": "kandinsky-community", "source": "pulled from x/y@abc"})
    return home


def served(argv: list[str], home: Path, **env: str) -> list[tuple[str, str, str | None]]:
    settings = read_settings(argv, {"EASEL_HOME": str(home), **env})
    return [(spec.name, spec.family, spec.presets) for spec in settings.models]


def test_the_flag_takes_bare_names_mixed_with_directories(home: Path, tiny_model_dirs: dict[str, Path]):
    argv = ["--model", PULLED, "--model", f"other=karlo:{tiny_model_dirs['karlo']}", "--model", "easel-mini"]
    assert served(argv, home) == [
        (PULLED, "kandinsky22", "kandinsky22"),
        ("other", "karlo", None),
        ("easel-mini", "kandinsky22", "easel-mini"),
    ]
    settings = read_settings(["--model", PULLED], {"EASEL_HOME": str(home)})
    assert settings.models[0].path == tiny_model_dirs["kandinsky"].resolve()
    assert settings.models[0].owned_by == "kandinsky-community" and settings.models[0].source == "pulled from x/y@abc"
    assert settings.default_model_name == PULLED and settings.aliases["dall-e-2"] == PULLED


def test_the_environment_takes_bare_names(home: Path):
    assert served([], home, EASEL_MODELS=f"{PULLED}, easel-mini") == [
        (PULLED, "kandinsky22", "kandinsky22"),
        ("easel-mini", "kandinsky22", "easel-mini"),
    ]


def test_the_file_takes_a_list_of_names_or_tables_without_a_path(home: Path, tiny_model_dirs: dict[str, Path]):
    (home / "easel.toml").write_text(f'models = ["{PULLED}", "local=karlo:{tiny_model_dirs["karlo"]}"]\n')
    assert served([], home) == [(PULLED, "kandinsky22", "kandinsky22"), ("local", "karlo", None)]
    (home / "easel.toml").write_text(f'[models.{PULLED}]\npresets = "easel-mini"\n\n[models.easel-mini]\n')
    assert served([], home) == [(PULLED, "kandinsky22", "easel-mini"), ("easel-mini", "kandinsky22", "easel-mini")]


def test_the_default_model_takes_a_registered_name_and_serves_it(home: Path):
    settings = read_settings(["--model", "easel-mini", "--default-model", PULLED], {"EASEL_HOME": str(home)})
    assert [spec.name for spec in settings.models] == ["easel-mini", PULLED]
    assert settings.default_model_name == PULLED
    settings = read_settings([], {"EASEL_HOME": str(home), "EASEL_DEFAULT_MODEL": PULLED})
    assert [spec.name for spec in settings.models] == ["easel-mini", PULLED] and settings.default_model_name == PULLED


@pytest.mark.parametrize(
    "argv, env, line",
    [
        (["--model", "karlo"], {}, "--model: model 'karlo' is not pulled yet: run `easel pull karlo` first"),
        (
            [],
            {"EASEL_MODELS": "kandinsky-2-2-inpaint"},
            "EASEL_MODELS: model 'kandinsky-2-2-inpaint' is not pulled yet: run `easel pull kandinsky-2-2-inpaint` "
            "first",
        ),
        (
            ["--default-model", "karlo"],
            {},
            "--default-model: model 'karlo' is not pulled yet: run `easel pull karlo` first",
        ),
        (
            ["--model", "nope"],
            {},
            f"--model: no registered model 'nope' (registered: easel-mini, {PULLED}; `easel pull --help` lists the "
            "models it can fetch); a model directory is given as NAME=FAMILY:PATH",
        ),
    ],
)
def test_a_name_that_is_not_registered_is_one_line(argv, env, line, home: Path, capsys):
    with pytest.raises(SystemExit) as stopped:
        serve(argv, {"EASEL_HOME": str(home), **env})
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"easel: error: {line}\n"


def test_a_file_name_that_is_not_registered_names_the_file(home: Path):
    config = home / "easel.toml"
    config.write_text('models = ["karlo"]\n')
    with pytest.raises(
        ConfigError, match=rf"^{config}: models: model 'karlo' is not pulled yet: run `easel pull karlo`"
    ):
        read_settings([], {"EASEL_HOME": str(home)})
    config.write_text("[models.mystery]\n")
    with pytest.raises(ConfigError, match=rf"^{config}: models.mystery: no registered model 'mystery'"):
        read_settings([], {"EASEL_HOME": str(home)})
