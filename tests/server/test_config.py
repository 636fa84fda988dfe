"""Configuration: flags beat variables beat easel.toml beat defaults; mistakes are one line before anything listens.

``CONFIG_ERRORS`` is the table in (docs/running.md, "Configuration errors"): each row is
run through ``easel serve``'s own entry point and must print exactly that
line and exit with status 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from server.__main__ import serve
from server.settings.loading import read_settings
from server.settings.options import ConfigError
from weights.registry import register_user_model

from ..conftest import TINY


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def env_for(home: Path, **values: str) -> dict[str, str]:
    return {"EASEL_HOME": str(home), **values}


def write_toml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_flags_beat_variables_beat_the_file_beat_defaults(home: Path):
    write_toml(home / "easel.toml", "port = 7001\nqueue_size = 3\n")
    env = env_for(home, EASEL_PORT="7002")
    settings = read_settings(["--port", "7003"], env)
    assert (settings.port, settings.origins["port"]) == (7003, "--port")
    settings = read_settings([], env)
    assert (settings.port, settings.origins["port"]) == (7002, "EASEL_PORT")
    settings = read_settings([], env_for(home))
    assert (settings.port, settings.origins["port"]) == (7001, f"{home / 'easel.toml'}: port")
    assert settings.queue_size == 3
    settings = read_settings([], env_for(home / "elsewhere"))  # no file there
    assert (settings.port, settings.queue_size, settings.origins) == (8000, 16, {})


def test_the_file_sets_models_aliases_keys_limits_and_defaults(tmp_path: Path, tiny_model_dirs: dict[str, Path]):
    config = write_toml(
        tmp_path / "conf" / "easel.toml",
        f"""
default_model = "karlo"
api_keys = ["sk-file"]
max_body_mb = 2
keep_going = true

[models.tiny]
family = "kandinsky22"
path = "{tiny_model_dirs["kandinsky"]}"

[models.karlo]
family = "karlo"
path = "../karlo-link"

[aliases]
house = "tiny"
""",
    )
    (tmp_path / "karlo-link").symlink_to(tiny_model_dirs["karlo"])
    settings = read_settings(["--config", str(config), "--api-key", "sk-flag"], {"EASEL_API_KEYS": "sk-env"})
    assert [spec.name for spec in settings.models] == ["tiny", "karlo"]
    assert settings.models[1].path == (tmp_path / "karlo-link").resolve()  # relative to the file
    assert settings.default_model_name == "karlo" and settings.keep_going
    assert settings.aliases["house"] == "tiny" and settings.aliases["dall-e-3"] == "karlo"  # OpenAI names: the default
    assert settings.api_keys == ("sk-flag", "sk-env", "sk-file")  # keys add up
    assert settings.max_body_bytes == 2 * 1024 * 1024
    # A higher source that lists models decides the whole set: here the variable, over the registry.
    only = read_settings(
        [], {"EASEL_HOME": str(tmp_path / "x"), "EASEL_MODELS": f"solo=kandinsky22:{tiny_model_dirs['kandinsky']}"}
    )
    assert [spec.name for spec in only.models] == ["solo"] and only.aliases["dall-e-3"] == "solo"


def test_pulled_models_are_served_next_to_the_shipped_one(home: Path, tiny_model_dirs: dict[str, Path]):
    register_user_model(
        home,
        "pulled",
        {"backend": "kandinsky22", "path": str(tiny_model_dirs["kandinsky"]), "source": "pulled from x/y@abc"},
    )
    settings = read_settings([], env_for(home))
    assert [(spec.name, spec.source) for spec in settings.models][1] == ("pulled", "pulled from x/y@abc")
    assert settings.default_model_name == "easel-mini"
    chosen = read_settings(["--default-model", "pulled"], env_for(home))
    assert chosen.aliases["gpt-image-1"] == "pulled"


NOWHERE = "/nowhere/model"
CONFIG_ERRORS = [
    # (command line, environment, the one line printed)
    (["--port", "99999"], {}, "--port: 99999 is not a port number (must be 1-65535)"),
    ([], {"EASEL_PORT": "abc"}, "EASEL_PORT: 'abc' is not an integer"),
    ([], {"EASEL_QUEUE_SIZE": "0"}, "EASEL_QUEUE_SIZE: 0 is out of range (must be at least 1)"),
    (["--max-body-mb", "0"], {}, "--max-body-mb: must be a positive number, got '0'"),
    (["--url-ttl-seconds", "-5"], {}, "--url-ttl-seconds: must be a positive number, got '-5'"),
    (["--log-level", "loud"], {}, "--log-level: 'loud' is not one of debug, info, warning, error"),
    ([], {"EASEL_KEEP_GOING": "maybe"}, "EASEL_KEEP_GOING: 'maybe' is not true or false"),
    (["--model", "m=dalle:/models/m"], {}, "--model: model 'm' has unknown family 'dalle' (known: kandinsky22, karlo)"),
    (["--model", "m=kandinsky22"], {}, "--model: expected NAME=FAMILY:PATH, got 'm=kandinsky22'"),
    (
        ["--model", "m"],
        {},
        "--model: no registered model 'm' (registered: easel-mini; `easel pull --help` lists the models it can "
        "fetch); a model directory is given as NAME=FAMILY:PATH",
    ),
    (
        ["--model", f"m=kandinsky22:{NOWHERE}"],
        {},
        f"--model: model 'm': no directory {NOWHERE}; get one with `easel pull NAME` (see `easel pull --help`) "
        "or point the entry at a saved pipeline",
    ),
    (["--default-model", "nope"], {}, "--default-model: 'nope' is not a served model (easel-mini)"),
    (["--device", "cuda:7"], {}, "--device: device 'cuda:7' requested but CUDA is not available on this machine"),
    (["--device", "tpu"], {}, "--device: unknown device 'tpu': use 'cuda', 'cuda:N', 'mps' or 'cpu'"),
    (["--dtype", "float8"], {}, "--dtype: unknown dtype 'float8': use one of float32, float16, bfloat16"),
    (["--prot", "9000"], {}, "unrecognized arguments: --prot 9000 (see easel serve --help)"),
    (["--config", "/nowhere/easel.toml"], {}, "--config: no file at /nowhere/easel.toml"),
]


@pytest.mark.parametrize(
    "argv, env, line", CONFIG_ERRORS, ids=[" ".join(a) or next(iter(e)) for a, e, _ in CONFIG_ERRORS]
)
def test_each_configuration_error_is_one_line_and_exit_status_2(argv, env, line, home: Path, capsys):
    with pytest.raises(SystemExit) as stopped:
        serve(argv, env_for(home, **env))
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == f"easel: error: {line}\n"
    assert captured.out == ""


NO_RAY_LINE = (
    "--ray: needs Ray Serve, which cannot be imported here (No module named 'ray'); "
    "install the ray extra: pip install -e '.[ray]'"
)


def test_ray_without_the_ray_extra_is_one_line_and_exit_status_2(home: Path):
    # In a process of its own, where importing ray fails as it does without the extra.
    without_ray = """
import sys

class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ray":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoRay())
from server.__main__ import serve
serve(["--ray"], {"EASEL_HOME": sys.argv[1]})
"""
    done = subprocess.run([sys.executable, "-c", without_ray, str(home)], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr, done.stdout) == (2, f"easel: error: {NO_RAY_LINE}\n", "")


def test_file_mistakes_name_the_file_and_key(home: Path):
    config = write_toml(home / "easel.toml", 'port = "eighty"\n')
    with pytest.raises(ConfigError, match=rf"^{config}: port: 'eighty' is not an integer$"):
        read_settings([], env_for(home))
    write_toml(config, "prot = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) prot"):
        read_settings([], env_for(home))
    write_toml(config, "port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_settings([], env_for(home))
    write_toml(config, '[models.x]\nfamily = "kandinsky22"\n')
    with pytest.raises(ConfigError, match=r"models\.x: needs family"):
        read_settings([], env_for(home))


def test_the_registry_file_is_read_as_before(tiny_model_dirs: dict[str, Path], tmp_path: Path):
    registry = tmp_path / "registry.json"
    registry.write_text(
        json.dumps(
            {"default": TINY, "models": {TINY: {"backend": "kandinsky22", "path": str(tiny_model_dirs["kandinsky"])}}}
        )
    )
    settings = read_settings(["--registry", str(registry)], {"EASEL_HOME": str(tmp_path / "home")})
    assert [spec.name for spec in settings.models] == [TINY] and settings.default_model_name == TINY


def test_the_options_page_lists_every_option_with_its_variable():
    from server.settings.config import OPTIONS

    page = (Path(__file__).resolve().parents[2] / "docs/reference/options.md").read_text()
    rows = {line.split("|")[1].strip() for line in page.splitlines() if line.startswith("| `--")}
    missing = [spec.flag for spec in OPTIONS.values() if f"`{spec.flag}`" not in rows]
    assert missing == []
    for spec in OPTIONS.values():
        assert f"| `{spec.flag}` | `{spec.env}` |" in page


def test_the_ray_options_take_their_defaults_from_ray_serve_settings():
    # Declared once: a default changed on RayServeSettings is the flag's default too.
    from dataclasses import fields

    from server.settings.config import Settings
    from server.settings.ray_serve import RayServeSettings

    declared = {field.name: field.default for field in fields(Settings)}
    assert {field.name: declared[field.name] for field in fields(RayServeSettings)} == {
        field.name: field.default for field in fields(RayServeSettings)
    }
