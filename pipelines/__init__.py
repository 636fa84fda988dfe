"""Model backends behind one contract (:mod:`pipelines.base`), and the embedded model's lab (:mod:`pipelines.lab`).

Easel's model code never goes online: loading a model puts the Hugging Face hub in offline mode first
(:func:`patches.huggingface_hub.go_offline`, called by :func:`pipelines.loader.load_backend` and the lab's
commands), so every load reads local files only. ``easel pull`` is the one command that downloads, and it never
loads a model.
"""

from patches.torchao import drop_import_notices

drop_import_notices()  # before any submodule imports diffusers, which imports torchao
