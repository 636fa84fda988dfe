"""torchao: the notices its import logs that concern no part of Easel, dropped by their opening words.

diffusers imports torchao (``--quantize``'s library) whenever it is installed, so these lines would follow every
start: on a CPU build of torch (or without Triton) torchao's GPU kernels cannot load, and weight-only
quantization uses none of them; torchao 0.18 no longer has the tensor types diffusers 0.42 looks for to load
torchao-serialized checkpoints, which Easel never loads; torch 2.13 deprecates how torchao registers two enums.
Only those lines are dropped, so any other warning from these loggers still shows.
"""

from __future__ import annotations

import logging

IMPORT_NOTICES = {  # logger -> the opening words of the notices it logs at import
    "torchao": ("Failed to load ",),
    "torchao.kernel.intmm": ("Warning: Detected no triton",),
    "diffusers.quantizers.torchao.torchao_quantizer": ("Unable to import `torchao` Tensor objects",),
    "torch.utils._pytree": ("<enum 'KernelPreference'> is an Enum subclass", "<enum 'ScaleCalculationMode'> is an"),
}


class _DropNotices(logging.Filter):
    def __init__(self, openings: tuple[str, ...]) -> None:
        super().__init__()
        self.openings = openings

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.openings)


def drop_import_notices() -> None:
    """Filter the notices out; call before diffusers is imported (pipelines' package import does)."""
    for name, openings in IMPORT_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _DropNotices) for existing in logger.filters):
            logger.addFilter(_DropNotices(openings))
