"""Model backends behind one contract (:mod:`pipelines.base`), and the embedded model's lab (:mod:`pipelines.lab`).

Easel's model code never goes online: the Hugging Face hub is put in offline
mode here, before any submodule can import diffusers or transformers, so every
load reads local files only. ``easel pull`` is the one command that downloads,
and it runs outside this package's import.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
