"""butler-tw: Qlik Sense reload failures and aborts, delivered as webhook calls.

The package is laid out along the alert's path through the daemon, one
subpackage per stage::

    intake (UDP, gate)  ->  delivery (admission, outbox + stores, dispatcher)
                        ->  channels (the request)  ->  transport (treq + TLS)

- ``core``: the pure values and decisions every stage uses (alert, wire
  format, delivery, retry, dedup, rate limits, allow-list); imports nothing
  else of butler_tw;
- ``config``: a Butler ``production.yaml`` to frozen value objects, and the
  plan of a reload;
- ``web``: ``/health``, ``/metrics`` and ``/deliveries``;
- ``daemon``: the ``twistd butler-webhook`` service (start-up checks, wiring,
  reload, logging);
- ``cli``: the ``butler-tw`` admin command.
"""

__version__ = "0.1.0"
