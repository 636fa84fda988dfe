"""The top layer: the ASGI application put together, the checks before it listens, and uvicorn running it."""
