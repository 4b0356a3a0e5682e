"""butler-tw: Qlik Sense reload failures and aborts, delivered as webhook calls.

The package is laid out along the alert's path through the daemon::

    intake (UDP)  ->  wireformat (parse)  ->  alert  ->  ratelimit
                  ->  outbox  ->  dispatch (queue, retries)  ->  http (treq + tls)

``config`` turns a Butler ``production.yaml`` into frozen value objects, and
``tap`` wires everything into the ``twistd butler-webhook`` service.
"""

__version__ = "0.1.0"
