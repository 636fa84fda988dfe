"""``easel pull NAME``: download a known model, assemble the directory the backends load, check it, register it.

The only code path in Easel that goes online. Model code puts the hub in
offline mode when it is imported (``pipelines/__init__.py`` sets
``HF_HUB_OFFLINE=1``), and ``huggingface_hub`` reads that variable once, at
its own import. So this command keeps the two apart: it imports neither
``pipelines`` nor ``server`` (the layout test checks it), imports
``huggingface_hub`` only after checking the environment, and checks that
the assembled model loads in a separate process (:mod:`cli.check`), which
runs offline like the server and gives the model's memory back when done.

Steps: list each repository's files at its current commit, download the
ones the recipe needs into ``$EASEL_HOME/downloads`` (resumable, checked
against the hub's checksums), link them into
``$EASEL_HOME/models/.NAME.partial`` in the backends' layout, load it, then
move it to ``$EASEL_HOME/models/NAME`` and add it to
``$EASEL_HOME/registry.json``, where ``easel serve`` finds it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from weights.registry import easel_home, register_user_model

from . import licenses, recipes
from .hubfiles import plain_name, select_files, weight_file, write_plain_index
from .recipes import INDEX, RECIPES, Part, Recipe

INTERRUPTED_EXIT_CODE = 130
EASEL_CONFIG = "easel.json"  # pipelines.model_config's file; kept from a repository that has one
MODEL_CARD = "README.md"  # its front matter names the licence


class LicenseNotAccepted(Exception):
    """An Open RAIL licence the user has not accepted: the pull stops before downloading weights."""


def build_parser() -> argparse.ArgumentParser:
    known = "\n".join(f"  {name:<22} {recipe.description}" for name, recipe in RECIPES.items())
    parser = argparse.ArgumentParser(
        prog="easel pull",
        description="Download a known model from the Hugging Face hub into $EASEL_HOME and register it.",
        epilog=f"known models:\n{known}\n\nHF_ENDPOINT names a hub mirror; HF_TOKEN a token.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=sorted(RECIPES), metavar="NAME", help="one of the known models below")
    parser.add_argument("--as", dest="register_as", metavar="NAME", help="register under another name")
    parser.add_argument("--revision", default="main", help="hub revision of every repository (default main)")
    parser.add_argument("--no-check", action="store_true", help="skip loading the model to check it")
    parser.add_argument("--keep-downloads", action="store_true", help="keep $EASEL_HOME/downloads afterwards")
    parser.add_argument(
        "--accept-license",
        action="store_true",
        help="accept an Open RAIL licence (karlo's): its use restrictions pass on to everyone you serve",
    )
    return parser


def run(name: str, argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if "pipelines" in sys.modules:  # see the module docstring: the hub would already be offline
        raise RuntimeError("easel pull must run before model code is imported")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        print("easel pull: error: HF_HUB_OFFLINE is set: unset it to let `easel pull` download", file=sys.stderr)
        return 1
    from .hub import HubError

    recipe = RECIPES[args.name]
    try:
        path = pull(recipe, args.register_as or recipe.name, args)
    except HubError as error:
        print(f"easel pull: error: {error}", file=sys.stderr)
        return 1
    except LicenseNotAccepted as error:
        print(f"easel pull: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\neasel pull: interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    print(f"{args.register_as or recipe.name}: ready in {path}. `easel serve` serves it (`easel models` lists it).")
    return 0


@dataclass
class PartPlan:
    """One repository of a recipe: its commit, its pipeline index, its licence and the files to download."""

    part: Part
    commit: str
    index: dict
    license: str
    license_link: str
    files: list  # hub.RemoteFile: the ones to download
    listing: dict  # name -> hub.RemoteFile: every file in the repository at that commit
    variants: dict[str, str]  # folder -> variant taken where the folder has no plain weights


def pull(recipe: Recipe, name: str, args: argparse.Namespace) -> Path:
    from . import hub

    home = easel_home()
    downloads = home / "downloads"
    with hub.client() as http:
        plans = [_plan(http, part, args.revision, downloads) for part in recipe.parts]
        easel_config = _easel_config(http, plans[0], downloads)
        license_id = _tell_license(recipe, name, plans, home, args.accept_license)
        todo = [file for plan in plans for file in plan.files]
        total = sum(file.size for file in todo)
        repos = ", ".join(f"{plan.part.repo}@{plan.commit[:7]}" for plan in plans)
        _say(f"{name}: {len(todo)} files, {total / 1e9:.2f} GB to download from {repos} ({hub.endpoint()})")
        _tell_checks(plans)
        for number, file in enumerate(todo, 1):
            _say(f"[{number}/{len(todo)}] {file.repo}: {file.name} ({file.size / 1e6:.1f} MB)")
            hub.download(http, file, _repo_dir(downloads, file.repo))
    _say(f"all {len(todo)} files match the hub's checksums" + (" or sizes" if any(f.size_only for f in todo) else ""))
    about = {**easel_config, "license": license_id, "source": _source(recipe, repos)}
    staging = _assemble(recipe, name, plans, home, downloads, about)
    if not args.no_check:
        _check_loads(recipe, staging)
    target = home / "models" / name
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    org = recipe.parts[0].repo.split("/")[0]
    entry = {"family": recipe.family, "path": f"models/{name}", "presets": recipe.presets, "owned_by": org}
    register_user_model(home, name, {**entry, "license": license_id, "source": f"pulled from {repos}"})
    if not args.keep_downloads:
        for plan in plans:
            shutil.rmtree(_repo_dir(downloads, plan.part.repo), ignore_errors=True)
    return target


def _plan(http, part: Part, revision: str, downloads: Path) -> PartPlan:
    """A repository's file list, its index and model card read, and the files the recipe takes from it."""
    from . import hub

    commit, files = hub.repo_files(part.repo, revision)
    if INDEX not in files:
        raise hub.HubError(f"{part.repo}@{commit[:7]} has no {INDEX}: not a diffusers pipeline")
    index = json.loads(hub.download(http, files[INDEX], _repo_dir(downloads, part.repo)).read_text())
    license_id = None
    if MODEL_CARD in files:
        card = hub.download(http, files[MODEL_CARD], _repo_dir(downloads, part.repo)).read_text(errors="replace")
        license_id = licenses.card_license(card)
    text = next((n for n in sorted(files) if n.split(".")[0].upper() in ("LICENSE", "LICENCE")), MODEL_CARD)
    link = f"{hub.endpoint()}/{part.repo}/blob/{commit}/{text}"
    chosen = select_files(sorted(files), recipes.part_folders(part, index))
    picked = [files[file] for file in chosen.files]
    return PartPlan(part, commit, index, license_id or licenses.UNKNOWN, link, picked, files, chosen.variants)


def _easel_config(http, plan: PartPlan, downloads: Path) -> dict:
    """A repository made for Easel declares its sizes in easel.json; the first part's is kept."""
    from . import hub

    if EASEL_CONFIG not in plan.listing:
        return {}
    config = hub.download(http, plan.listing[EASEL_CONFIG], _repo_dir(downloads, plan.part.repo))
    return json.loads(config.read_text())


def _tell_license(recipe: Recipe, name: str, plans: list[PartPlan], home: Path, accept: bool) -> str:
    """Say the model's licence; stop unless an Open RAIL licence is accepted (now, or by an earlier pull)."""
    found = list(dict.fromkeys(plan.license for plan in plans))
    license_id = " + ".join(found)
    where = ", ".join(f"{plan.part.repo}: {plan.license}" for plan in plans) if len(found) > 1 else plans[0].part.repo
    _say(f"{name}: licence {' + '.join(map(licenses.display, found))} (model card of {where})")
    for plan in plans:
        if not licenses.needs_acceptance(plan.license) or licenses.accepted(home, recipe.name, plan.license):
            continue
        if not accept:
            raise LicenseNotAccepted(licenses.refusal(name, plan.license, plan.license_link))
        path = licenses.record_acceptance(home, recipe.name, plan.license, plan.license_link)
        _say(f"{name}: you accepted {licenses.display(plan.license)} ({plan.license_link}); recorded in {path}")
    if licenses.UNKNOWN in found:
        _say(f"{name}: a model card names no licence: read the repositories' terms before you serve it")
    return license_id


def _tell_checks(plans: list[PartPlan]) -> None:
    """One line per repository whose weights can only be checked by size, and per folder that had only variants."""
    for plan in plans:
        unhashed = [file.name for file in plan.files if file.size_only]
        if unhashed:
            _say(
                f"{plan.part.repo}: the hub gives no SHA-256 for {len(unhashed)} file(s) (stored with Xet): "
                f"checked by size only: {', '.join(unhashed)}"
            )
        for folder, variant in plan.variants.items():
            _say(f"{plan.part.repo}: {folder}/ has only variant weights: taking the {variant} ones")


def _repo_dir(downloads: Path, repo: str) -> Path:
    return downloads / repo.replace("/", "--")


def _source(recipe: Recipe, repos: str) -> dict:
    return {"pulled_from": repos, "pulled_at": int(time.time()), "recipe": recipe.name}


def _assemble(recipe: Recipe, name: str, plans: list[PartPlan], home: Path, downloads: Path, about: dict) -> Path:
    """The model directory in the backends' layout, under a temporary name, from the downloaded files."""
    staging = home / "models" / f".{name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for plan in plans:
        for file in plan.files:
            folder, _, rest = file.name.partition("/")
            source = _repo_dir(downloads, plan.part.repo) / file.name
            target = staging / (plan.part.prefix + folder) / plain_name(rest)
            kind = weight_file(rest)
            if kind is not None and kind.index and kind.variant is not None:  # its shards are renamed too
                write_plain_index(source, target)
            else:
                recipes.place(source, target)
    recipes.write_json(staging / INDEX, recipes.assembled_index(recipe, [plan.index for plan in plans]))
    recipes.write_json(staging / EASEL_CONFIG, about)
    _say(f"assembled {staging}")
    return staging


def _check_loads(recipe: Recipe, directory: Path) -> None:
    """Load the model in a separate, offline process, as the server would."""
    from .hub import HubError

    _say("checking that it loads (a separate process, offline; --no-check skips this) ...")
    command = [sys.executable, "-m", "cli.check", recipe.family, str(directory), "--presets", recipe.presets]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 0:
        _say(done.stdout.strip())
        return
    # The downloads stay (they are removed only after success), so running the command again is quick.
    shutil.rmtree(directory, ignore_errors=True)
    again = "run the same command again to retry it, or add --no-check to skip it"
    if done.returncode < 0:  # killed, most often by the kernel for want of memory
        raise HubError(f"the load check was killed by {_signal_name(-done.returncode)} (out of memory?); {again}")
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise HubError(f"the assembled model did not load: {last}; {again}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
