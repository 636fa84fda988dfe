"""HTTP routes, one module per resource; each module exposes ``routes``, which ``server.app.ROUTES`` gathers."""
