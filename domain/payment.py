"""Payments: a team's top-up through Stripe, from the moment it starts to its refunds.

A `Payment` records what the ledger asked Stripe for and what Stripe reported back. It never
moves the balance itself: the team's balance changes only through `Team.credit_top_up` and
`Team.refund_top_up`, saved in the same transaction as the payment's own event, so a payment
that failed or was cancelled is visible here and changes no balance.

Lifecycle: started -> (Stripe object attached) -> succeeded | failed | canceled; a succeeded
payment may be refunded in parts, and reversed by a lost dispute. Stripe reports in any order
and more than once (a webhook can arrive before the API answer is recorded, or twice): every
step is idempotent and tolerant of order, so a repeat changes nothing and a late "attached"
after "succeeded" is a no-op.

`PaymentBook` is the per-team index of payments (one event per started payment), so that a team's
payments can be listed without scanning the log.

Ids are deterministic (`uuid5` over the team and the caller's request key), so a retried start
finds the payment it already began instead of beginning a second one; the Stripe idempotency key
is derived from the payment's `Started` event, so the retry sends the same key to Stripe.
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidInputError, InvalidStateError
from domain.ids import LEDGER_NAMESPACE
from domain.money import check_amount_nanos, check_currency

REQUEST_KEY_LENGTH_MAX = 200
STRIPE_ID_LENGTH_MAX = 255
FAILURE_TEXT_LENGTH_MAX = 500
ACTOR_LENGTH_MAX = 200
# Payments the book keeps in its index; a team that tops up more than this starts a new page
# of history only in the audit trail (the listing shows the latest ones).
BOOK_PAYMENTS_MAX = 100_000


class PaymentStatus(StrEnum):
    STARTED = "started"  # recorded; Stripe asked (or about to be asked)
    PROCESSING = "processing"  # Stripe accepted the request, the money is not settled yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"  # a Checkout Session that nobody paid before it expired


FINAL_STATUSES = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED,
                            PaymentStatus.CANCELED, PaymentStatus.EXPIRED})
# The payment method of a payment made through Stripe Checkout: the customer picks the card on
# Stripe's page, so none is known when the payment starts.
CHECKOUT_METHOD = "checkout"
# Stripe's hosted URLs (a Checkout page, a receipt) are long but bounded.
STRIPE_URL_LENGTH_MAX = 5000


def payment_id_for(team_id: UUID, request_key: str) -> UUID:
    return uuid5(LEDGER_NAMESPACE, f"payment:{team_id}:{request_key}")


def payment_book_id_for(team_id: UUID) -> UUID:
    return uuid5(LEDGER_NAMESPACE, f"payment-book:{team_id}")


def _check_text(name: str, value: object, length_max: int) -> str:
    if not isinstance(value, str) or not value or len(value) > length_max \
            or not value.isprintable():
        raise InvalidInputError(f"{name} must be 1 to {length_max} printable characters")
    return value


def _short(text: str | None) -> str:
    """Stripe's failure messages are outside input: keep them bounded and printable."""
    cleaned = "".join(c for c in (text or "") if c.isprintable())
    return cleaned[:FAILURE_TEXT_LENGTH_MAX]


def check_stripe_url(name: str, value: object) -> str:
    """A URL Stripe gave us, shown as a link: https only, printable, bounded."""
    text = _check_text(name, value, STRIPE_URL_LENGTH_MAX)
    if not text.startswith("https://") and not text.startswith("http://127.0.0.1"):
        raise InvalidInputError(f"{name} must be an https:// URL")
    return text


class Payment(Aggregate):
    @staticmethod
    def create_id(team_id: UUID, request_key: str) -> UUID:
        return payment_id_for(team_id, request_key)

    @event("Started")
    def __init__(self, team_id: UUID, request_key: str, amount_nanos: int, amount_minor: int,
                 currency: str, payment_method_id: str, actor: str) -> None:
        self.team_id = team_id
        self.request_key = request_key
        self.amount_nanos = amount_nanos
        self.amount_minor = amount_minor
        self.currency = currency
        self.payment_method_id = payment_method_id
        self.started_by = actor
        self.status = PaymentStatus.STARTED
        self.stripe_object_id: str | None = None
        self.failure_code: str | None = None
        self.failure_message: str | None = None
        self.credited_nanos = 0
        self.refunds: dict[str, int] = {}  # Stripe refund id -> refunded nanos
        self.disputes_lost: dict[str, int] = {}  # Stripe dispute id -> reversed nanos
        self.checkout_session_id: str | None = None
        self.checkout_url: str | None = None
        self.checkout_expires_at: int | None = None  # Unix seconds, as Stripe gives it
        self.receipt_url: str | None = None

    @classmethod
    def start(cls, *, team_id: UUID, request_key: str, amount_nanos: int, amount_minor: int,
              currency: str, payment_method_id: str, actor: str) -> Payment:
        _check_text("request_key", request_key, REQUEST_KEY_LENGTH_MAX)
        check_amount_nanos("amount_nanos", amount_nanos)
        check_currency(currency)
        if type(amount_minor) is not int or amount_minor <= 0:
            raise InvalidInputError("amount_minor must be a whole number above zero")
        _check_text("payment_method_id", payment_method_id, STRIPE_ID_LENGTH_MAX)
        _check_text("actor", actor, ACTOR_LENGTH_MAX)
        return cls(team_id=team_id, request_key=request_key, amount_nanos=amount_nanos,
                   amount_minor=amount_minor, currency=currency,
                   payment_method_id=payment_method_id, actor=actor)

    @property
    def stripe_idempotency_key(self) -> str:
        """The key every request that creates this payment at Stripe carries: derived from the
        `Started` event (this aggregate's id at version 1), so a retry reuses it."""
        return f"ledger-payment-{self.id}-v1-create"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def refunded_nanos(self) -> int:
        return sum(self.refunds.values())

    @property
    def reversed_nanos(self) -> int:
        """Refunded plus lost in disputes: what no longer counts of the credit."""
        return self.refunded_nanos + sum(self.disputes_lost.values())

    def attach_stripe_object(self, stripe_object_id: str, actor: str) -> bool:
        """Record the Stripe object that carries this payment; False if already known."""
        _check_text("stripe_object_id", stripe_object_id, STRIPE_ID_LENGTH_MAX)
        if self.stripe_object_id == stripe_object_id:
            return False
        if self.stripe_object_id is not None:
            raise InvalidStateError(
                f"payment {self.id} is carried by Stripe object {self.stripe_object_id}, "
                f"not {stripe_object_id}")
        self._stripe_object_attached(stripe_object_id=stripe_object_id, actor=actor)
        return True

    @event("StripeObjectAttached")
    def _stripe_object_attached(self, stripe_object_id: str, actor: str) -> None:
        self.stripe_object_id = stripe_object_id
        if self.status == PaymentStatus.STARTED:
            self.status = PaymentStatus.PROCESSING

    def succeed(self, stripe_object_id: str, credited_nanos: int, actor: str) -> bool:
        """Stripe reports the money received; False if this was already recorded."""
        self.attach_stripe_object(stripe_object_id, actor)
        check_amount_nanos("credited_nanos", credited_nanos)
        if self.status == PaymentStatus.SUCCEEDED:
            return False
        self._succeeded(stripe_object_id=stripe_object_id, credited_nanos=credited_nanos,
                        actor=actor)
        return True

    @event("Succeeded")
    def _succeeded(self, stripe_object_id: str, credited_nanos: int, actor: str) -> None:
        self.status = PaymentStatus.SUCCEEDED
        self.credited_nanos = credited_nanos
        self.failure_code = None
        self.failure_message = None

    def fail(self, stripe_object_id: str | None, code: str | None, message: str | None,
             actor: str) -> bool:
        """Stripe declined or could not take the money; False if nothing new is learnt.

        A failed attempt may be followed by a success (Stripe retries a PaymentIntent with a
        new method), but a success is never followed by a failure: that report is stale."""
        if stripe_object_id is not None:
            self.attach_stripe_object(stripe_object_id, actor)
        if self.status in FINAL_STATUSES:
            return False
        self._failed(code=_short(code) or "unknown", message=_short(message), actor=actor)
        return True

    @event("Failed")
    def _failed(self, code: str, message: str, actor: str) -> None:
        self.status = PaymentStatus.FAILED
        self.failure_code = code
        self.failure_message = message

    def cancel(self, stripe_object_id: str, actor: str) -> bool:
        self.attach_stripe_object(stripe_object_id, actor)
        if self.status in (PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED):
            return False
        self._canceled(actor=actor)
        return True

    @event("Canceled")
    def _canceled(self, actor: str) -> None:
        self.status = PaymentStatus.CANCELED

    # Stripe Checkout ------------------------------------------------------------------------

    @property
    def is_checkout(self) -> bool:
        return self.payment_method_id == CHECKOUT_METHOD

    def open_checkout_session(self, session_id: str, url: str | None, expires_at: int | None,
                              actor: str) -> bool:
        """Record the Checkout Session that collects this payment; False if already known.

        Order-tolerant: a webhook about the session may record it (without its URL) before the
        answer of the call that created it is recorded; that later record is then a no-op."""
        _check_text("checkout_session_id", session_id, STRIPE_ID_LENGTH_MAX)
        if url is not None:
            check_stripe_url("checkout_url", url)
        if expires_at is not None and (type(expires_at) is not int or expires_at <= 0):
            raise InvalidInputError("checkout expires_at must be a Unix time in seconds")
        if self.checkout_session_id == session_id:
            return False
        if self.checkout_session_id is not None:
            raise InvalidStateError(
                f"payment {self.id} is collected by Checkout Session "
                f"{self.checkout_session_id}, not {session_id}")
        self._checkout_session_opened(session_id=session_id, url=url, expires_at=expires_at,
                                      actor=actor)
        return True

    @event("CheckoutSessionOpened")
    def _checkout_session_opened(self, session_id: str, url: str | None,
                                 expires_at: int | None, actor: str) -> None:
        self.checkout_session_id = session_id
        self.checkout_url = url
        self.checkout_expires_at = expires_at

    def expire_checkout(self, session_id: str, actor: str) -> bool:
        """Stripe reports the Checkout Session expired unpaid: visible, no money moved. False
        if nothing is new (already final: a success reported earlier is never undone)."""
        self.open_checkout_session(session_id, None, None, actor)
        if self.is_final:
            return False
        self._checkout_expired(session_id=session_id, actor=actor)
        return True

    @event("CheckoutExpired")
    def _checkout_expired(self, session_id: str, actor: str) -> None:
        self.status = PaymentStatus.EXPIRED

    def record_receipt(self, receipt_url: str, actor: str) -> bool:
        """The Stripe receipt of the charge that paid this payment; False if already known."""
        check_stripe_url("receipt_url", receipt_url)
        if self.receipt_url == receipt_url:
            return False
        self._receipt_recorded(receipt_url=receipt_url, actor=actor)
        return True

    @event("ReceiptRecorded")
    def _receipt_recorded(self, receipt_url: str, actor: str) -> None:
        self.receipt_url = receipt_url

    def record_refund(self, refund_id: str, amount_nanos: int, actor: str) -> bool:
        """A (partial) refund Stripe settled; False if this refund is already recorded."""
        _check_text("refund_id", refund_id, STRIPE_ID_LENGTH_MAX)
        check_amount_nanos("amount_nanos", amount_nanos)
        if refund_id in self.refunds:
            return False
        self._check_reversible(refund_id, amount_nanos)
        self._refund_recorded(refund_id=refund_id, amount_nanos=amount_nanos, actor=actor)
        return True

    def _check_reversible(self, reversal_id: str, amount_nanos: int) -> None:
        if self.status != PaymentStatus.SUCCEEDED:
            raise InvalidStateError(f"payment {self.id} did not succeed; nothing to reverse")
        if self.reversed_nanos + amount_nanos > self.credited_nanos:
            raise InvalidStateError(
                f"{reversal_id} of {amount_nanos} nanos exceeds the "
                f"{self.credited_nanos - self.reversed_nanos} nanos left on payment {self.id}")

    @event("RefundRecorded")
    def _refund_recorded(self, refund_id: str, amount_nanos: int, actor: str) -> None:
        self.refunds[refund_id] = amount_nanos

    def record_dispute_lost(self, dispute_id: str, amount_nanos: int, actor: str) -> bool:
        """A dispute the team's card holder won: the disputed amount is reversed. False if
        this dispute is already recorded."""
        _check_text("dispute_id", dispute_id, STRIPE_ID_LENGTH_MAX)
        check_amount_nanos("amount_nanos", amount_nanos)
        if dispute_id in self.disputes_lost:
            return False
        self._check_reversible(dispute_id, amount_nanos)
        self._dispute_lost(dispute_id=dispute_id, amount_nanos=amount_nanos, actor=actor)
        return True

    @event("DisputeLost")
    def _dispute_lost(self, dispute_id: str, amount_nanos: int, actor: str) -> None:
        self.disputes_lost[dispute_id] = amount_nanos


class PaymentBook(Aggregate):
    """The index of one team's payments, in the order they started."""

    @staticmethod
    def create_id(team_id: UUID) -> UUID:
        return payment_book_id_for(team_id)

    @event("Opened")
    def __init__(self, team_id: UUID) -> None:
        self.team_id = team_id
        self.payment_ids: list[UUID] = []

    def list_payment(self, payment_id: UUID) -> None:
        if len(self.payment_ids) >= BOOK_PAYMENTS_MAX:
            raise InvalidStateError(
                f"team {self.team_id} has {BOOK_PAYMENTS_MAX} payments in its book; "
                "raise BOOK_PAYMENTS_MAX in domain/payment.py to list more")
        self._payment_listed(payment_id=payment_id)

    @event("PaymentListed")
    def _payment_listed(self, payment_id: UUID) -> None:
        self.payment_ids.append(payment_id)
