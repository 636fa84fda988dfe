"""How ``--ray`` lays the server out on Ray Serve: replicas, autoscaling, resources (no Ray import).

The values are :class:`server.settings.config.Settings` options, whose defaults are the ones declared here;
this is them taken together, with the rules that span several of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class RayServeSettings:
    """How ``--ray`` lays the server out on Ray Serve (docs/ray.md, "Layout")."""

    replicas: int = 1  # per model, when not autoscaling
    min_replicas: int | None = None  # both set: each model autoscales between them
    max_replicas: int | None = None
    target_ongoing_requests: float = 2.0  # per model replica, what the autoscaler aims at
    max_ongoing_requests: int = 4  # jobs a model replica holds at once (running or waiting there); more wait upstream
    replica_cpus: float = 1.0  # Ray CPUs per model replica; also its torch threads (floor, at least 1)
    replica_gpus: float = 0.0  # Ray GPUs per model replica (fractions share a GPU)
    ingress_replicas: int = 1  # replicas of the HTTP app
    downscale_delay_seconds: float | None = None  # idle this long, a model loses a replica (down to zero); Serve's 600

    def __post_init__(self) -> None:
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("--min-replicas and --max-replicas go together (autoscaling between them)")
        if self.max_replicas is not None and not (0 <= (self.min_replicas or 0) <= self.max_replicas >= 1):
            raise ValueError("need 0 <= --min-replicas <= --max-replicas and --max-replicas >= 1")
        if self.replicas < 1 or self.ingress_replicas < 1 or self.max_ongoing_requests < 1:
            raise ValueError("--replicas, --ingress-replicas and --max-ongoing-requests must be at least 1")
        if self.downscale_delay_seconds is not None and not self.autoscaling:
            raise ValueError("--downscale-delay-seconds needs autoscaling: --min-replicas and --max-replicas")
        if self.target_ongoing_requests <= 0 or self.replica_cpus < 0 or self.replica_gpus < 0:
            raise ValueError("--target-ongoing-requests must be positive, --replica-cpus/--replica-gpus not negative")

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None

    def as_options(self) -> dict[str, Any]:
        """The :class:`Settings` fields that serve on Ray laid out so: ``Settings(..., **scaling.as_options())``."""
        return {"use_ray": True, **asdict(self)}
