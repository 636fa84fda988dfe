"""How much data and how many steps each component gets.

``full`` is the shipped recipe (its measured time is in docs/lab.md and in
weights/easel-mini/easel.json);
``tiny`` runs a few steps of everything in seconds, to check the whole path
end to end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class Budget:
    pool_scenes: int  # rendered train-split scenes every component draws from
    tokenizer_captions: int  # captions the BPE merges are learnt from
    clip_steps: int
    clip_batch: int
    movq_steps: int
    movq_batch: int
    prior_steps: int
    prior_batch: int
    decoder_steps: int
    decoder_batch: int

    def as_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, assignments: list[str]) -> Budget:
        """This budget with ``field=N`` assignments applied (``--set decoder_steps=4500``)."""
        names = [f.name for f in fields(self)]
        changes: dict[str, int] = {}
        for assignment in assignments:
            name, _, value = assignment.partition("=")
            if name not in names:
                raise ValueError(f"--set {assignment}: {name!r} is not a budget field ({', '.join(names)})")
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"--set {assignment}: the value must be a whole number of at least 1")
            changes[name] = int(value)
        return replace(self, **changes)


def trained_by(field: str) -> str | None:
    """The component a budget field belongs to, or None for the data every component shares."""
    component = field.split("_", 1)[0]
    return component if component in ("clip", "movq", "prior", "decoder") else None


BUDGETS: dict[str, Budget] = {
    "full": Budget(
        pool_scenes=40_000,
        tokenizer_captions=40_000,
        clip_steps=1600,  # 800 entangled two-object shapes (docs/lab.md, "Where the remaining error comes from")
        clip_batch=128,
        movq_steps=1000,
        movq_batch=32,
        prior_steps=600,
        prior_batch=128,
        decoder_steps=2800,
        decoder_batch=64,
    ),
    "tiny": Budget(
        pool_scenes=48,
        tokenizer_captions=200,
        clip_steps=3,
        clip_batch=16,
        movq_steps=3,
        movq_batch=8,
        prior_steps=3,
        prior_batch=16,
        decoder_steps=3,
        decoder_batch=8,
    ),
}
