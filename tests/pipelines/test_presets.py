"""The quality tables: the real families start from their published settings; easel-mini's table is its own."""

from __future__ import annotations

from pipelines.base import StagePreset
from pipelines.presets import QUALITIES, presets_for


def test_kandinsky_standard_is_the_model_cards_prior_25_at_4_and_decoder_50_at_4():
    table = presets_for("kandinsky22")
    published = StagePreset(prior_steps=25, prior_guidance=4.0, decoder_steps=50, decoder_guidance=4.0)
    assert table["standard"] == table["auto"] == table["medium"] == published
    # high (and hd) is diffusers' KandinskyV22Pipeline default of 100 decoder steps.
    assert table["high"] == table["hd"] == StagePreset(25, 4.0, 100, 4.0)
    assert [table[q].decoder_steps for q in ("low", "medium", "high", "xhigh", "max")] == [20, 50, 100, 150, 200]


def test_karlo_standard_is_diffusers_unclip_defaults():
    table = presets_for("karlo")
    published = StagePreset(25, 4.0, 25, 8.0, super_res_steps=7)
    assert table["standard"] == table["auto"] == table["medium"] == published


def test_easel_minis_table_is_unchanged():
    table = presets_for("easel-mini")
    steps = {q: (table[q].prior_steps, table[q].decoder_steps) for q in QUALITIES}
    assert steps == {
        "standard": (20, 20), "auto": (20, 20), "medium": (20, 20), "low": (10, 10),
        "high": (25, 50), "hd": (25, 50), "xhigh": (25, 100), "max": (25, 200),
    }  # fmt: skip
    assert {(p.prior_guidance, p.decoder_guidance, p.decoder_guidance_min_timestep) for p in table.values()} == {
        (2.0, 3.0, 600)
    }
