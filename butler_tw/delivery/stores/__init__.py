"""Where the outbox keeps deliveries: :mod:`.memory` (lost at exit) and :mod:`.sqlite` (durable).

Each implements :class:`~butler_tw.delivery.outbox.IOutbox`. Imports core,
:mod:`butler_tw.delivery.outbox` and :mod:`butler_tw.delivery.replay`, and no
other part of delivery.
"""
