"""``python -m cli``: the same as the ``easel`` command."""

from .main import main

main()
