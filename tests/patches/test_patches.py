"""The library patches: version guards that refuse untested versions, nothing applied on import, state per server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from patches import diffusers as diffusers_patch
from patches import h11 as h11_patch
from patches import huggingface_hub as hub_patch
from patches import torch as torch_patch
from patches import uvicorn as uvicorn_patch
from patches.versions import UntestedVersion, VersionRange, check

REPO = Path(__file__).resolve().parents[2]
ALL_TESTED = [patch.TESTED for patch in (diffusers_patch, h11_patch, hub_patch, torch_patch, uvicorn_patch)]


def test_a_tested_version_passes_and_the_bounds_are_release_numbers():
    tested = VersionRange("uvicorn", "0.55", "0.56", "its internals", "patches.uvicorn")
    for installed in ("0.55.0", "0.55.9", "0.55.1rc1", "0.55.0+local"):
        check(tested, installed)


@pytest.mark.parametrize("installed", ["0.54.9", "0.56.0", "1.0"])
def test_an_untested_version_is_refused_with_what_to_do(installed: str):
    tested = VersionRange("uvicorn", "0.55", "0.56", "the internals of its h11 protocol class", "patches.uvicorn")
    with pytest.raises(UntestedVersion) as refused:
        check(tested, installed)
    assert str(refused.value) == (
        f"uvicorn {installed} is untested: Easel relies on the internals of its h11 protocol class, tested with "
        f"uvicorn>=0.55,<0.56. Install a tested version (pip install 'uvicorn>=0.55,<0.56'), or check that code "
        f"against uvicorn {installed} and widen the range in patches.uvicorn."
    )


@pytest.mark.parametrize("tested", ALL_TESTED, ids=lambda tested: tested.distribution)
def test_the_installed_libraries_are_the_tested_ones(tested: VersionRange):
    check(tested, version(tested.distribution))


@pytest.mark.parametrize("tested", [uvicorn_patch.TESTED, h11_patch.TESTED], ids=lambda tested: tested.distribution)
def test_pyproject_bounds_the_http_libraries_as_their_guards_do(tested: VersionRange):
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.findall(rf'"{tested.distribution}([^"]*)"', pyproject) == [f">={tested.low},<{tested.below}"]


def test_importing_the_patches_and_the_backends_changes_no_library():
    # Patches apply at load: importing every module that carries one leaves diffusers and the hub as they were.
    code = (
        "import os, patches.diffusers, patches.huggingface_hub, patches.torch, patches.uvicorn, patches.h11\n"
        "import pipelines, pipelines.kandinsky, pipelines.karlo, pipelines.kandinsky_mask, pipelines.tiny\n"
        "import diffusers, diffusers.pipelines, huggingface_hub.constants as hub\n"
        "from diffusers.pipelines.kandinsky2_2 import pipeline_kandinsky2_2_inpainting as inpaint\n"
        "assert 'HF_HUB_OFFLINE' not in os.environ and not hub.HF_HUB_OFFLINE\n"
        "assert not hasattr(diffusers.pipelines, 'unclip') and not hasattr(diffusers, 'UnCLIPTextProjModel')\n"
        "assert inpaint.prepare_mask.__module__ == inpaint.__name__\n"
        "print('untouched')\n"
    )
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout.strip()) == (0, "untouched"), done.stderr[-2000:]


def test_going_offline_sets_the_variable_and_an_imported_hub(monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    hub_patch.go_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and hub.HF_HUB_OFFLINE is True and hub.is_offline_mode()


def test_an_explicit_choice_of_online_is_kept(monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    hub_patch.go_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "0" and hub.HF_HUB_OFFLINE is False


def test_serve_refuses_an_untested_http_library_before_listening(monkeypatch, tmp_path, capsys):
    from patches import versions
    from server.__main__ import serve

    installed = {"uvicorn": "0.56.0", "h11": version("h11")}
    monkeypatch.setattr(versions, "_installed", installed.__getitem__)
    with pytest.raises(SystemExit) as stopped:
        serve(["--port", "1"], env={"EASEL_HOME": str(tmp_path)})
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "easel: error: uvicorn 0.56.0 is untested: Easel relies on the internals of its h11 protocol class, tested "
        "with uvicorn>=0.55,<0.56. Install a tested version (pip install 'uvicorn>=0.55,<0.56'), or check that "
        "code against uvicorn 0.56.0 and widen the range in patches.uvicorn.\n"
    )
