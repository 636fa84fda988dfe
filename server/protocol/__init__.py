"""The wire format: request bodies into typed requests, and the bodies Easel answers with.

Nothing here waits, loads or generates; serving logic lives in :mod:`server.serving`.
"""
