"""The version guard every patch runs before it touches a library's internals."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib.metadata import version


class UntestedVersion(RuntimeError):
    """An installed library is outside the range a patch was tested with. The message says what to do."""


@dataclass(frozen=True)
class VersionRange:
    """The versions of ``distribution`` a patch module was tested with: ``low <= version < below``."""

    distribution: str
    low: str
    below: str
    relies_on: str  # what the patch uses that the library does not promise, for the message
    module: str  # the patch module, where the range is widened once a new version is checked

    @property
    def requirement(self) -> str:
        return f"{self.distribution}>={self.low},<{self.below}"


def _release(text: str) -> tuple[int, ...]:
    """The release numbers of a version (``0.55.0rc1`` -> ``(0, 55, 0)``): enough to compare against a range."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def check(tested: VersionRange, installed: str | None = None) -> None:
    """Raise :class:`UntestedVersion` unless ``installed`` (default: what is installed) is in ``tested``'s range."""
    found = installed if installed is not None else _installed(tested.distribution)
    if _release(tested.low) <= _release(found) < _release(tested.below):
        return
    raise UntestedVersion(
        f"{tested.distribution} {found} is untested: Easel relies on {tested.relies_on}, tested with "
        f"{tested.requirement}. Install a tested version (pip install '{tested.requirement}'), or check that "
        f"code against {tested.distribution} {found} and widen the range in {tested.module}."
    )


@functools.cache
def _installed(distribution: str) -> str:
    return version(distribution)
