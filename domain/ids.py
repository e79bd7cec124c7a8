"""Deterministic identifiers: the same natural key always gives the same aggregate id.

Creating an aggregate under a key that already exists fails on the event store's uniqueness
constraint, so a retried creation cannot make a second team, account or invoice.
"""

from __future__ import annotations

from uuid import UUID, uuid5

LEDGER_NAMESPACE = UUID("6f1c2a8e-5b7d-4c1e-9a43-2d8f0b6e71c4")


def team_id_for(key: str) -> UUID:
    return uuid5(LEDGER_NAMESPACE, f"team:{key}")


def account_id_for(team_id: UUID, key: str) -> UUID:
    return uuid5(LEDGER_NAMESPACE, f"account:{team_id}:{key}")


def package_id_for(key: str) -> UUID:
    return uuid5(LEDGER_NAMESPACE, f"package:{key}")


def invoice_id_for(team_id: UUID, period_start: str, period_end: str) -> UUID:
    return uuid5(LEDGER_NAMESPACE, f"invoice:{team_id}:{period_start}:{period_end}")
