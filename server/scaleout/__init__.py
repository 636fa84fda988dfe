"""Scale-out on Ray Serve: the same API over many replicas, GPUs and machines (``easel serve --ray``).

:mod:`.deployments` builds the Serve application (an ingress running the HTTP
app, a deployment per model), :mod:`.engine` is the ingress's engine,
:mod:`.wire` what crosses Ray, :mod:`.launch` the command, :mod:`.scaling` its options, :mod:`.proxy` the
HTTP proxy's middleware. Needs the ``ray`` extra: ``pip install 'easel[ray]'``.
"""
