"""Domain errors: the failures a caller can cause, each with a message that names what to fix.

Expected failures are these errors, raised on purpose and handled by the edges (HTTP answers,
rejected-subject messages). Assertions are kept for our own bugs only.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error a caller can cause. `code` is stable; the message is for people."""

    code = "ledger_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(LedgerError):
    code = "not_found"


class TeamNotFoundError(NotFoundError):
    code = "unknown_team"


class AccountNotFoundError(NotFoundError):
    code = "unknown_account"


class PackageNotFoundError(NotFoundError):
    code = "unknown_package"


class InvoiceNotFoundError(NotFoundError):
    code = "unknown_invoice"


class InvalidInputError(LedgerError):
    """A value is out of range or malformed; the message names the field and the allowed range."""

    code = "invalid_input"


class InvalidAmountError(InvalidInputError):
    code = "invalid_amount"


class InvalidUsageError(InvalidInputError):
    code = "invalid_usage"


class PermissionDeniedError(LedgerError):
    code = "permission_denied"


class InvalidStateError(LedgerError):
    """The command is valid in general but not in the aggregate's current state."""

    code = "invalid_state"


class AccountClosedError(InvalidStateError):
    code = "account_closed"


class LastOwnerError(InvalidStateError):
    code = "last_owner"


class NoPackageInForceError(InvalidStateError):
    code = "no_package_in_force"


class CurrencyMismatchError(InvalidStateError):
    code = "currency_mismatch"


class IdempotencyConflictError(LedgerError):
    """The same idempotency key came back with different content."""

    code = "idempotency_conflict"


class ConcurrentUpdateError(LedgerError):
    """A command kept losing to concurrent changes of the same aggregates, up to its bound.

    Nothing was changed; the command may be sent again (with the same idempotency key)."""

    code = "concurrent_update"
