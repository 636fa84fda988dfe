"""The ``easel`` command: serve, make images from the terminal, manage models, and run the lab.

Each subcommand lives in its own module and is imported only when run, so
``easel --help`` is instant and ``easel pull`` never imports model code
(which puts the hub offline). The server never imports this package.
"""
