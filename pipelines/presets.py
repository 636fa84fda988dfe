"""Quality presets and the effect of ``style``: the one place steps and guidance are declared.

OpenAI's quality names map onto steps and guidance per model family. ``auto``
and ``standard`` are the family's default; ``hd`` is an alias of ``high``;
``xhigh`` and ``max`` spend more decoder steps than ``high``. ``complexity``
sets the prior's steps and guidance alone (:data:`PriorPreset`), so planning
and rendering effort can be chosen apart.
``style`` scales decoder guidance (:meth:`StagePreset.adjusted`): ``vivid``
(OpenAI's default) pushes harder toward the prompt, which gives more
saturated, higher-contrast images; ``natural`` eases off for softer ones.
"""

from __future__ import annotations

from typing import Literal, get_args

from .base import PriorPreset, StagePreset

Quality = Literal["standard", "hd", "low", "medium", "high", "xhigh", "max", "auto"]
Complexity = Literal["low", "medium", "high"]
Style = Literal["vivid", "natural"]
QUALITIES: tuple[Quality, ...] = get_args(Quality)
COMPLEXITIES: tuple[Complexity, ...] = get_args(Complexity)
STYLES: tuple[Style, ...] = get_args(Style)

STYLE_DECODER_GUIDANCE_FACTOR: dict[Style, float] = {"vivid": 1.0, "natural": 0.75}


def _mini(prior_steps: int, decoder_steps: int) -> StagePreset:
    """An easel-mini preset: prior guidance 2, decoder guidance 3 applied only at t >= 600 (both measured)."""
    return StagePreset(
        prior_steps=prior_steps,
        prior_guidance=2.0,
        decoder_steps=decoder_steps,
        decoder_guidance=3.0,
        decoder_guidance_min_timestep=600,
    )


_FAMILY_PRESETS: dict[str, dict[str, StagePreset]] = {
    # From the published settings (docs/models.md): standard is the model card's prior 25 steps at guidance 4 and
    # decoder 50 at 4; high is diffusers' KandinskyV22Pipeline default of 100 decoder steps.
    "kandinsky22": {
        "low": StagePreset(prior_steps=10, prior_guidance=4.0, decoder_steps=20, decoder_guidance=4.0),
        "medium": StagePreset(prior_steps=25, prior_guidance=4.0, decoder_steps=50, decoder_guidance=4.0),
        "high": StagePreset(prior_steps=25, prior_guidance=4.0, decoder_steps=100, decoder_guidance=4.0),
        "xhigh": StagePreset(prior_steps=25, prior_guidance=4.0, decoder_steps=150, decoder_guidance=4.0),
        "max": StagePreset(prior_steps=25, prior_guidance=4.0, decoder_steps=200, decoder_guidance=4.0),
    },
    # diffusers' UnCLIPPipeline defaults as standard: prior 25 at 4.0, decoder 25 at 8.0, super-resolution 7.
    "karlo": {
        "low": StagePreset(
            prior_steps=10, prior_guidance=4.0, decoder_steps=10, decoder_guidance=8.0, super_res_steps=4
        ),
        "medium": StagePreset(
            prior_steps=25, prior_guidance=4.0, decoder_steps=25, decoder_guidance=8.0, super_res_steps=7
        ),
        "high": StagePreset(
            prior_steps=40, prior_guidance=4.0, decoder_steps=50, decoder_guidance=8.0, super_res_steps=14
        ),
        "xhigh": StagePreset(
            prior_steps=40, prior_guidance=4.0, decoder_steps=100, decoder_guidance=8.0, super_res_steps=25
        ),
        "max": StagePreset(
            prior_steps=40, prior_guidance=4.0, decoder_steps=150, decoder_guidance=8.0, super_res_steps=40
        ),
    },
    # The embedded miniature model (Kandinsky 2.2 format, trained by pipelines/lab/training). Its decoder is
    # guided only at t >= 600 (kandinsky._GuidanceInterval); both choices measured (docs/lab.md, "Evaluate").
    # xhigh and max: more decoder steps, not measured to score better than high (docs/limits.md, "Known gaps").
    "easel-mini": {
        name: _mini(prior_steps, decoder_steps)
        for name, prior_steps, decoder_steps in (
            ("low", 10, 10),
            ("medium", 20, 20),
            ("high", 25, 50),
            ("xhigh", 25, 100),
            ("max", 25, 200),
        )
    },
}

# complexity: the prior's steps at the family's usual guidance (easel-mini's measured best is 2).
_FAMILY_COMPLEXITIES: dict[str, dict[str, PriorPreset]] = {
    "kandinsky22": {name: PriorPreset(steps, 4.0) for name, steps in (("low", 10), ("medium", 25), ("high", 50))},
    "karlo": {name: PriorPreset(steps, 4.0) for name, steps in (("low", 10), ("medium", 25), ("high", 50))},
    "easel-mini": {name: PriorPreset(steps, 2.0) for name, steps in (("low", 10), ("medium", 20), ("high", 40))},
}

_ALIASES = {"standard": "medium", "auto": "medium", "hd": "high"}


def complexities_for(family: str) -> dict[str, PriorPreset]:
    """Every complexity name mapped to the prior's steps and guidance for this family."""
    return dict(_FAMILY_COMPLEXITIES[family])


def presets_for(family: str) -> dict[str, StagePreset]:
    """Every quality name (OpenAI's eight) mapped to a preset for this family."""
    table = _FAMILY_PRESETS[family]
    full = dict(table)
    for alias, target in _ALIASES.items():
        full[alias] = table[target]
    return full
