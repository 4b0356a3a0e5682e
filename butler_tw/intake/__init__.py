"""UDP to :class:`~butler_tw.core.alert.Alert`: the socket, the gate in front of the parser.

:mod:`.udp` reads datagrams (the log-appender protocol); :mod:`.gate` admits
or refuses each (allow-list, per-source limit, size); :mod:`.sourcelimit` is
the per-source limit; :mod:`.resolve` resolves the allow-list's host names
(blocking at start and reload, in a thread every few minutes).

Imports core only, and Twisted.
"""
