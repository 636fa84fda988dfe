"""Model-card licences and their acceptance record, as ``easel pull`` reads and writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.licenses import accepted, card_license, needs_acceptance, record_acceptance


@pytest.mark.parametrize(
    "card, found",
    [
        ("---\nlicense: apache-2.0\nprior:\n- kandinsky-community/kandinsky-2-2-prior\n---\n# Kandinsky", "apache-2.0"),
        ("---\ntags:\n- text-to-image\nlicense: creativeml-openrail-m\n---\n", "creativeml-openrail-m"),
        ('---\nlicense: "MIT"  # quoted\n---\n', "mit"),
        ("# no front matter\nlicense: apache-2.0\n", None),
        ("---\ntags: [a]\n---\nlicense: apache-2.0\n", None),  # outside the front matter
        ("", None),
    ],
)
def test_the_licence_is_the_front_matters_license_key(card: str, found: str | None):
    assert card_license(card) == found


def test_open_rail_licences_need_acceptance_which_is_recorded_per_model(tmp_path: Path):
    assert needs_acceptance("creativeml-openrail-m") and needs_acceptance("openrail++")
    assert not needs_acceptance("apache-2.0") and not needs_acceptance("mit")
    assert not accepted(tmp_path, "karlo", "creativeml-openrail-m")
    record_acceptance(tmp_path, "karlo", "creativeml-openrail-m", "https://example/LICENSE")
    assert accepted(tmp_path, "karlo", "creativeml-openrail-m")
    assert not accepted(tmp_path, "karlo", "openrail++")  # another licence is asked for again
    (tmp_path / "licenses.json").write_text("{not json")
    assert not accepted(tmp_path, "karlo", "creativeml-openrail-m")  # a damaged record asks again, no traceback
