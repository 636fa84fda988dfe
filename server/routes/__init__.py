"""HTTP routes, one module per resource; each module exposes ``routes``.

``server.app.ROUTE_MODULES`` lists the modules the app serves.
"""
