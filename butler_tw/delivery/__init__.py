"""An accepted alert to attempts: admission, the outbox, dispatching, and what attempts came to.

:mod:`.admission` sheds, de-duplicates, routes and rate-limits an alert into
one delivery per webhook; :mod:`.outbox` is the :class:`~.outbox.IOutbox`
seam, with its implementations in :mod:`.stores`; :mod:`.dispatcher` queues,
times and retries the deliveries of one webhook, recording into
:mod:`.attempts`; :mod:`.service` runs them; :mod:`.replay` decides what
``butler-tw replay`` re-queues.

Imports core and config, intake (the gate admission runs first), channels
(a delivery's request) and transport (sending it). Never web, daemon or cli:
those read delivery, not the other way round.
"""
