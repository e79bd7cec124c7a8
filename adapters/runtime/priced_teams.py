"""One builder for "a team with priced accounts", the setup that the demo, the tests and the
benchmarks all need: register a team, create a package (or reuse it), open accounts, assign the
package from a moment, and optionally credit a top-up and set a credit limit.

Every step is idempotent (deterministic keys, idempotency keys, the top-up keyed by its id), so
`ledger demo` can run again on the same data folder and get the same team back. It goes through
the `Ledger`'s public commands only: what it builds is what an admin would build.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from domain.errors import InvalidInputError
from domain.package import Package
from domain.pricing import PriceTerms
from services.actor import Actor
from services.ledger import Ledger

DEFAULT_CURRENCY = "USD"
DEFAULT_TIMEZONE = "UTC"
# Without `since`, the package is in force from this long before now, so usage of the last
# hours prices at once.
PRICED_SINCE_DEFAULT = timedelta(days=1)
PRICED_ACCOUNTS_MAX = 100_000
SETUP_OPERATOR = Actor.operator("setup-operator")
# Settled top-ups are credited by the Stripe webhook's system actor in production; the builder
# credits them the same way.
TOP_UP_ACTOR = Actor.system("stripe")


@dataclass(frozen=True)
class PricedAccount:
    account_id: UUID
    terms: PriceTerms


@dataclass(frozen=True)
class PricedTeam:
    team_id: UUID
    package_id: UUID
    accounts: list[PricedAccount]

    @property
    def account_ids(self) -> list[UUID]:
        return [account.account_id for account in self.accounts]


def numbered_keys(prefix: str, count: int) -> list[str]:
    """`count` account keys: `<prefix>0`, `<prefix>1`, ..."""
    if not 0 <= count <= PRICED_ACCOUNTS_MAX:
        raise ValueError(f"count of accounts must be 0 to {PRICED_ACCOUNTS_MAX}, got {count}")
    return [f"{prefix}{n}" for n in range(count)]


def ensure_package(ledger: Ledger, key: str, terms: PriceTerms, operator: Actor,
                   currency: str = DEFAULT_CURRENCY) -> UUID:
    """The package `key`: created with `terms`, or the one an earlier run created."""
    try:
        return ledger.create_package(package_key=key, name=key.title(), currency=currency,
                                     terms=terms, actor=operator)
    except InvalidInputError:
        if ledger.exists(Package.create_id(key)):
            return Package.create_id(key)
        raise


def open_priced_team(ledger: Ledger, *, team_key: str, terms: PriceTerms,
                     account_keys: Sequence[str], owner: Actor, package_key: str | None = None,
                     since: datetime | None = None, timezone: str = DEFAULT_TIMEZONE,
                     currency: str = DEFAULT_CURRENCY, operator: Actor = SETUP_OPERATOR,
                     top_up_minor: int = 0, credit_limit_nanos: int | None = None) -> PricedTeam:
    """A team `team_key` owned by `owner`, with one account per key (named by its key) on the
    package `package_key` (default `<team_key>-package`) in force since `since` (default: a day
    ago); a top-up of `top_up_minor` (minor units of `currency`) credited if positive; the
    credit limit set if given."""
    if len(account_keys) > PRICED_ACCOUNTS_MAX:
        raise ValueError(f"at most {PRICED_ACCOUNTS_MAX} accounts, got {len(account_keys)}")
    if top_up_minor < 0:
        raise ValueError(f"top_up_minor must be 0 or more, got {top_up_minor}")
    package_id = ensure_package(ledger, package_key or f"{team_key}-package", terms, operator,
                                currency)
    team_id = ledger.register_team(team_key=team_key, name=team_key.title(), currency=currency,
                                   timezone=timezone, actor=owner,
                                   idempotency_key=f"team:{team_key}")
    if top_up_minor:
        ledger.credit_top_up(team_id, f"setup-top-up:{team_key}", top_up_minor, currency,
                             TOP_UP_ACTOR)
    if credit_limit_nanos is not None:
        ledger.set_credit_limit(team_id, credit_limit_nanos, owner,
                                idempotency_key=f"credit-limit:{team_key}")
    starts = since or datetime.now(UTC) - PRICED_SINCE_DEFAULT
    accounts = []
    for key in account_keys:
        account_id = ledger.open_account(team_id, account_key=key, name=key, actor=owner,
                                         idempotency_key=f"account:{team_key}:{key}")
        if not ledger.get_account(account_id).assignments:
            ledger.assign_package(account_id, package_id, owner, effective_from=starts)
        accounts.append(PricedAccount(account_id, terms))
    return PricedTeam(team_id, package_id, accounts)
