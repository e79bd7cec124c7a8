"""The aggregates, typed for naming their event classes in handler tables.

eventsourcing makes each `@event("Name")` class when the aggregate's class body runs, so mypy
cannot see `Team.TopUpCredited`; these aliases let tables name the classes themselves (not their
names as strings), and a renamed or removed event still fails when the table is built, at import.
"""

from __future__ import annotations

from typing import Any

from domain.account import Account as _Account
from domain.auto_recharge import AutoRechargePolicy as _AutoRechargePolicy
from domain.invoice import Invoice as _Invoice
from domain.package import Package as _Package
from domain.payment import Payment as _Payment
from domain.payment import PaymentBook as _PaymentBook
from domain.team import Team as _Team

Team: Any = _Team
Account: Any = _Account
Invoice: Any = _Invoice
Package: Any = _Package
Payment: Any = _Payment
PaymentBook: Any = _PaymentBook
AutoRechargePolicy: Any = _AutoRechargePolicy
