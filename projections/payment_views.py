"""What a Stripe payment's events do to the `payments` read model.

A payment's money reaches the balance only through the team's own events (`Team.TopUpCredited`,
`Team.TopUpRefunded`, saved in the same transaction as `Payment.Succeeded` or the refund); these
handlers keep the payment itself visible — started, processing, succeeded, failed, canceled or
expired (a Checkout page never paid), and how much of it was reversed — so that a declined card
shows on the team's page and in its audit trail although no balance moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from projections.decoding import LogEntry
from projections.event_classes import Payment
from projections.views import PaymentView

if TYPE_CHECKING:
    from projections.fold import ViewFolder

Handler = Callable[["ViewFolder", LogEntry, Any], None]


def _started(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    payment = PaymentView(payment_id=entry.originator_id, team_id=event.team_id,
                          status="started", amount_nanos=event.amount_nanos,
                          amount_minor=event.amount_minor, currency=event.currency,
                          started_at=event.timestamp, started_by=str(event.actor))
    folder.payments[payment.payment_id] = payment
    folder.touch_payment(payment)


def _object_attached(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    payment = folder.require_payment(entry)
    payment.stripe_object_id = event.stripe_object_id
    if payment.status == "started":
        payment.status = "processing"
    folder.touch_payment(payment)


def _succeeded(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    payment = folder.require_payment(entry)
    payment.status = "succeeded"
    payment.stripe_object_id = event.stripe_object_id
    payment.credited_nanos = event.credited_nanos
    payment.failure_code = payment.failure_message = None
    folder.touch_payment(payment)


def _failed(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    payment = folder.require_payment(entry)
    payment.status = "failed"
    payment.failure_code, payment.failure_message = event.code, event.message
    folder.touch_payment(payment)


def _canceled(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    payment = folder.require_payment(entry)
    payment.status = "canceled"
    folder.touch_payment(payment)


def _expired(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    """A Checkout page that was never paid: visible, no money moved. A success reported after
    it (Stripe's order is not ours) is a later `Succeeded` and wins."""
    payment = folder.require_payment(entry)
    if payment.status != "succeeded":
        payment.status = "expired"
    folder.touch_payment(payment)


def _reversed(folder: ViewFolder, entry: LogEntry, event: Any) -> None:
    """A refund or a lost dispute: the part of the payment given back."""
    payment = folder.require_payment(entry)
    payment.reversed_nanos += event.amount_nanos
    folder.touch_payment(payment)


PAYMENT_HANDLERS: dict[type, Handler] = {
    Payment.Started: _started,
    Payment.StripeObjectAttached: _object_attached,
    Payment.Succeeded: _succeeded,
    Payment.Failed: _failed,
    Payment.Canceled: _canceled,
    Payment.CheckoutExpired: _expired,
    Payment.RefundRecorded: _reversed,
    Payment.DisputeLost: _reversed,
}
