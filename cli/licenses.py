"""Model licences as ``easel pull`` tells them: read from each repository's model card, accepted once where needed.

A hub model card (``README.md``) starts with YAML front matter; its
``license:`` key is the licence's hub id (``apache-2.0``,
``creativeml-openrail-m``). An Open RAIL licence carries use restrictions
that whoever runs the model must pass on to the people it serves; for an
API server that is every client. So such a model is pulled only with
``--accept-license``, once: the acceptance is recorded in
``$EASEL_HOME/licenses.json``.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

LICENSES_FILE = "licenses.json"
UNKNOWN = "unknown"
NAMES = {
    "apache-2.0": "Apache License 2.0",
    "mit": "MIT License",
    "creativeml-openrail-m": "CreativeML Open RAIL-M",
    "openrail": "Open RAIL",
    "openrail++": "Open RAIL++-M",
    "bigscience-openrail-m": "BigScience Open RAIL-M",
}
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.DOTALL)
_LICENSE_LINE = re.compile(r"^license:\s*[\"']?([^\"'#\s]+)", re.MULTILINE)


def card_license(card: str) -> str | None:
    """The ``license:`` of a model card's front matter, or None."""
    front = _FRONT_MATTER.match(card)
    found = _LICENSE_LINE.search(front.group(1)) if front else None
    return found.group(1).lower() if found else None


def display(license_id: str) -> str:
    name = NAMES.get(license_id)
    return f"{name} ({license_id})" if name else license_id


def needs_acceptance(license_id: str) -> bool:
    """Open RAIL licences: their use restrictions must be passed on, so the user accepts them explicitly."""
    return "openrail" in license_id


def accepted(home: Path, model: str, license_id: str) -> bool:
    entry = _read(home).get(model)
    return isinstance(entry, dict) and entry.get("license") == license_id


def record_acceptance(home: Path, model: str, license_id: str, link: str) -> Path:
    """Note in ``$EASEL_HOME/licenses.json`` that ``model``'s licence was accepted (and when, and what it linked)."""
    data = _read(home)
    data[model] = {"license": license_id, "text": link, "accepted_at": int(time.time())}
    home.mkdir(parents=True, exist_ok=True)
    path = home / LICENSES_FILE
    temporary = path.with_name(path.name + ".part")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)
    return path


def refusal(model: str, license_id: str, link: str) -> str:
    """What ``easel pull`` says, and stops on, when an Open RAIL model's licence was not accepted yet."""
    return (
        f"{model} is licensed under {display(license_id)}: {link}\n"
        "Its use restrictions bind you, and you must pass them on to everyone your API server serves "
        "(for instance in your terms of service).\n"
        f"To accept the licence, run `easel pull {model} --accept-license` (recorded in $EASEL_HOME/{LICENSES_FILE}, "
        "so later pulls do not ask again)."
    )


def _read(home: Path) -> dict:
    path = home / LICENSES_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:  # a damaged record: the licence is asked for again, and the record rewritten
        return {}
    return data if isinstance(data, dict) else {}
