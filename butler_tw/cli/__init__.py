"""``butler-tw``: the admin command (check-config, list, replay, send-test, emit, receive).

Imports core, config, channels, transport, delivery and
:mod:`butler_tw.daemon.startup`; never :mod:`butler_tw.daemon.tap`, so the
command does not load the daemon's service tree.
"""
