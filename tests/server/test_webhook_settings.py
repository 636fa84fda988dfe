"""Webhook settings: flags, variables and easel.toml; each mistake one line, before anything listens."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from server.__main__ import serve
from server.settings.loading import read_settings

SECRET = "whsec_" + base64.b64encode(b"easel-webhook-test-key-32-bytes!").decode()
A, B = "http://127.0.0.1:9001/hooks", "https://hooks.example.com/easel?token=t"


def env_for(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"EASEL_HOME": str(tmp_path / "home"), **values}


def test_urls_come_from_repeated_flags_a_variable_or_the_file(tmp_path: Path):
    flags = read_settings(["--webhook-url", A, "--webhook-url", B, "--webhook-secret", SECRET], env_for(tmp_path))
    assert (flags.webhook_urls, flags.webhook_secret, flags.origins["webhook_urls"]) == (
        (A, B),
        SECRET,
        "--webhook-url",
    )
    assert (flags.webhook_attempts, flags.webhook_timeout_seconds) == (10, 600.0)
    variables = env_for(tmp_path, EASEL_WEBHOOK_URL=f"{A},{B}", EASEL_WEBHOOK_SECRET=SECRET, EASEL_WEBHOOK_ATTEMPTS="3")
    from_env = read_settings([], variables)
    assert (from_env.webhook_urls, from_env.webhook_attempts) == ((A, B), 3)
    config = tmp_path / "easel.toml"
    config.write_text(f'webhook_url = ["{A}"]\nwebhook_secret = "{SECRET}"\nwebhook_timeout_seconds = 30\n')
    from_file = read_settings(["--config", str(config)], env_for(tmp_path))
    assert (from_file.webhook_urls, from_file.webhook_timeout_seconds) == ((A,), 30.0)
    assert read_settings([], env_for(tmp_path)).webhook_urls == ()


MISTAKES = [
    (
        ["--webhook-url", "ftp://example.com/x", "--webhook-secret", SECRET],
        "--webhook-url: 'ftp://example.com/x' is not an http(s) URL",
    ),
    (
        ["--webhook-url", "hooks.example.com", "--webhook-secret", SECRET],
        "--webhook-url: 'hooks.example.com' is not an http(s) URL",
    ),
    (["--webhook-url", A], "--webhook-url: needs --webhook-secret (events are always signed)"),
    (["--webhook-secret", SECRET], "--webhook-secret: needs --webhook-url"),
    (["--webhook-attempts", "3"], "--webhook-attempts: needs --webhook-url"),
    (
        ["--webhook-url", A, "--webhook-secret", SECRET, "--webhook-attempts", "0"],
        "--webhook-attempts: 0 is out of range (must be 1-100)",
    ),
]
BAD_SECRETS = ["s3cret-but-not-whsec", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode(), "whsec_"]


@pytest.mark.parametrize("argv, line", MISTAKES, ids=[m[1].split(":")[0] + str(i) for i, m in enumerate(MISTAKES)])
def test_each_webhook_mistake_is_one_line_and_exit_status_2(argv, line, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as stopped:
        serve(argv, env_for(tmp_path))
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"easel: error: {line}\n"


@pytest.mark.parametrize("secret", BAD_SECRETS)
def test_a_malformed_secret_is_refused_in_one_line_that_does_not_repeat_it(secret, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as stopped:
        serve(["--webhook-url", A], env_for(tmp_path, EASEL_WEBHOOK_SECRET=secret))
    assert stopped.value.code == 2
    line = capsys.readouterr().err
    expected = "EASEL_WEBHOOK_SECRET: not a webhook secret: expected whsec_ followed by the base64 of at least 16 bytes"
    assert line == f"easel: error: {expected}\n"  # the whole line: the secret is not in it


def test_secrets_stay_out_of_the_settings_repr(tmp_path: Path):
    """A Settings object lands in logs and tracebacks: its repr shows neither the webhook secret nor an API key."""
    settings = read_settings(
        ["--webhook-url", A, "--webhook-secret", SECRET, "--api-key", "sk-easel-test-key"], env_for(tmp_path)
    )
    assert settings.webhook_secret == SECRET and settings.api_keys == ("sk-easel-test-key",)
    shown = repr(settings)
    assert "webhook_urls=" in shown and SECRET not in shown and "sk-easel-test-key" not in shown
