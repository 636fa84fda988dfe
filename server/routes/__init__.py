"""HTTP routes, one module per resource, and the state they share; ``server.app.application`` gathers them.

The handlers live in ``server.serving``.
"""
