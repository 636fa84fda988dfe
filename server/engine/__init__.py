"""Where jobs run: the :class:`~server.engine.base.Engine` interface that serving depends on, and its implementations.

:mod:`server.engine.local` runs jobs in this process, on a worker per device.
"""
