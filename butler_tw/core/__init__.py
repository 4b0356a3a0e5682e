"""The pure core: values and clock-injected decisions.

The alert and its wire format (:mod:`.alert`, :mod:`.wireformat`), a delivery
and its webhook key (:mod:`.delivery`), the allow-list decision
(:mod:`.sources`), retries and an attempt's :class:`~.retry.Outcome`
(:mod:`.retry`), de-duplication, rate limits and log throttling
(:mod:`.dedup`, :mod:`.ratelimit`, :mod:`.throttle`), counters
(:mod:`.stats`), URL redaction (:mod:`.redact`) and shared wording
(:mod:`.words`).

No I/O and no reactor: time comes in as an argument or an injected
``IReactorTime``, named in annotations only, so importing core loads no
Twisted at all (``tests/core/test_purity.py`` checks it). Imported by
everything; imports nothing of butler_tw but core.
"""
