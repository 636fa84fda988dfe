"""HTTP routes, one module per resource; ``server.app`` gathers them. The handlers live in ``server.serving``."""
