"""Model backends behind one contract (:mod:`pipelines.base`), and the embedded model's lab (:mod:`pipelines.lab`).

Easel's model code never goes online: the Hugging Face hub is put in offline
mode here, before any submodule can import diffusers or transformers, so every
load reads local files only. ``easel pull`` is the one command that downloads,
and it runs outside this package's import.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# diffusers imports torchao (--quantize's library) whenever it is installed, and these lines follow at every
# start. None concerns Easel: on a CPU build of torch (or without Triton) torchao's GPU kernels cannot load,
# and weight-only quantization uses none of them; torchao 0.18 no longer has the tensor types diffusers 0.42
# looks for to load torchao-serialized checkpoints, which Easel never loads; torch 2.13 deprecates how torchao
# registers two enums. Those lines, and only those, are dropped (logger -> the message's opening words).
_TORCHAO_IMPORT_NOTICES = {
    "torchao": ("Failed to load ",),
    "torchao.kernel.intmm": ("Warning: Detected no triton",),
    "diffusers.quantizers.torchao.torchao_quantizer": ("Unable to import `torchao` Tensor objects",),
    "torch.utils._pytree": ("<enum 'KernelPreference'> is an Enum subclass", "<enum 'ScaleCalculationMode'> is an"),
}


def _drop_torchao_import_notices() -> None:
    import logging

    class DropNotices(logging.Filter):
        def __init__(self, openings: tuple[str, ...]) -> None:
            super().__init__()
            self.openings = openings

        def filter(self, record: logging.LogRecord) -> bool:
            return not record.getMessage().startswith(self.openings)

    for name, openings in _TORCHAO_IMPORT_NOTICES.items():
        logging.getLogger(name).addFilter(DropNotices(openings))


_drop_torchao_import_notices()
