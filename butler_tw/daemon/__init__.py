"""``twistd butler-webhook``: the wiring of every part into one running service.

:mod:`.tap` holds the twistd ``Options`` and ``makeService``; :mod:`.startup`
the start-up checks (shared with ``butler-tw check-config``) and the
allow-list for a start and a reload; :mod:`.pipeline` the live parts a reload
swaps; :mod:`.reloader` SIGHUP; :mod:`.logsetup` the log format and level.

May import every other subpackage but cli. Only :mod:`.tap` may touch the
global reactor (in ``makeService``), and nothing outside the daemon imports
:mod:`.tap`: the CLI uses :mod:`.startup`.
"""
