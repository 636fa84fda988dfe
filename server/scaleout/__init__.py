"""Scale-out on Ray Serve: the same API over many replicas, GPUs and machines (``easel serve --ray``).

:mod:`.deployments` builds the Serve application (an ingress running the HTTP
app, a deployment per model), :mod:`.engine` is the ingress's engine,
:mod:`.wire` what crosses Ray, :mod:`.figures` the replicas' metrics on their way to the ingress,
:mod:`.launch` the command (its options: :mod:`server.settings.ray_serve`), :mod:`.proxy` the HTTP proxy's
middleware.
Needs the ``ray`` extra: ``pip install 'easel[ray]'``.
"""

from __future__ import annotations


def why_ray_serve_is_missing() -> str | None:
    """None when Ray Serve can be imported here; else the import error, for a one-line message at start."""
    try:
        import ray.serve  # noqa: F401  (seconds to import, but serving on Ray imports it next anyway)
    except ImportError as error:
        return str(error)
    return None
