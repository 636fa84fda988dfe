"""Every place Easel reaches past a library's public API, one module per library, each behind a version guard.

Nothing here runs on import. Each module's functions are called when something loads: the server's connection
protocol when a server is built (:mod:`.uvicorn`, :mod:`.h11`), a model's pipelines when a model loads
(:mod:`.diffusers`, :mod:`.huggingface_hub`). Each first checks that the installed version is one Easel was
tested with (:mod:`.versions`), and stops with a message that says which versions are tested and what to do.
This package imports no Easel code.
"""
