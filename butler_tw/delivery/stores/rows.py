"""An alert and its delivery as both stores keep them: a row of plain columns, fields as JSON."""

from __future__ import annotations

import json
from typing import Any, Sequence

from butler_tw.core.alert import FIELD_ORDER, Alert, EventKind
from butler_tw.core.delivery import Delivery, State


def alert_to_json(alert: Alert) -> str:
    return json.dumps({name: value for name, value in alert.fields() if name != "event"}, ensure_ascii=False)


def alert_from_row(kind: str, fields: str) -> Alert:
    data = json.loads(fields)
    return Alert(kind=EventKind(kind), **{k: data.get(k, "") for k in FIELD_ORDER if k != "event"})


def delivery_from_row(row: Sequence[Any]) -> Delivery:
    (kind, fields, webhookKey, acceptedAt, attempts, dueAt, state, lastOutcome) = row
    return Delivery(
        alert=alert_from_row(kind, fields),
        webhookKey=webhookKey,
        acceptedAt=acceptedAt,
        attempts=attempts,
        dueAt=dueAt,
        state=State(state),
        lastOutcome=lastOutcome,
    )


def outcome_row(delivery: Delivery, now: float) -> tuple[Any, ...]:
    """The parameters of a store's ``UPDATE deliveries`` after an attempt: attempts, due_at, state,
    last_outcome, updated_at, then the id."""
    return (delivery.attempts, delivery.dueAt, delivery.state.value, delivery.lastOutcome, now, delivery.id)
