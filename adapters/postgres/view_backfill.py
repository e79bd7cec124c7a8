"""Filling the version-5 columns of read models folded before version 5 (holders, kinds and
package assignments of accounts), once, from the log.

Upgrading the tables from version 2-4 (`view_schema.ADDITIVE_UPGRADES`) adds the columns and
the `package_assignments` table empty and leaves a marker row; the events that fill them were
folded already, when the read models had no place for them. The projection runner calls
`backfill_holders_and_packages` before it folds on: in one transaction, with the tracking row
locked (no batch can commit meanwhile), it decodes the account events that carry holders, kinds
and assignments up to the tracking position, writes them (a holder change moves the account
row's position, as the version-5 fold does, so `ledger replay` finds the rows equal), and
removes the marker. Events after
that position are folded as usual. The one-time cost is a scan of the events table by topic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.utils import get_topic
from psycopg import sql

from adapters.postgres.view_schema import (
    BACKFILL_TABLE,
    EVENTS_TABLE,
    HOLDERS_BACKFILL,
    TRACKING_NAME,
    q,
)
from projections.decoding import LogEntry
from projections.event_classes import Account

_OPENED, _HOLDER, _PACKAGE = (get_topic(Account.Opened), get_topic(Account.HolderAssigned),
                              get_topic(Account.PackageAssigned))


def backfill_holders_and_packages(conn: psycopg.Connection[Any], schema: str,
                                  decode: Callable[[LogEntry], Any]) -> int:
    """Fill holders, kinds and assignments up to the tracking position if the marker says so;
    returns how many events were read (0: nothing to do)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (schema,))
        pending = conn.execute(q(f"SELECT 1 FROM {{s}}.{BACKFILL_TABLE} WHERE name = %s",
                                 schema), (HOLDERS_BACKFILL,)).fetchone()
        if pending is None:
            return 0
        tracked = conn.execute(q("SELECT notification_id FROM {s}.tracking WHERE name = %s "
                                 "FOR UPDATE", schema), (TRACKING_NAME,)).fetchone()
        position = int(tracked[0]) if tracked else 0
        rows = conn.execute(sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM public.{t} WHERE topic = ANY(%s) AND notification_id <= %s "
            "ORDER BY notification_id").format(t=sql.Identifier(EVENTS_TABLE)),
            ([_OPENED, _HOLDER, _PACKAGE], position)).fetchall()
        holders: dict[UUID, list[Any]] = {}  # [holder, kind, position of the last change]
        assignments: list[tuple[Any, ...]] = []
        for row in rows:
            entry = LogEntry._make(row)
            event = decode(entry)
            if entry.topic == _OPENED:
                holders[entry.originator_id] = [
                    event.holder_user_id, str(getattr(event.kind, "value", event.kind)), 0]
            elif entry.topic == _HOLDER:  # a change of holder moves the row's position too
                holders.setdefault(entry.originator_id, [None, "", 0])[0::2] = [
                    event.user_id, entry.position]
            else:
                assignments.append((entry.originator_id, event.effective_from, event.package_id,
                                    event.package_version, event.package_name, entry.position))
        if holders:
            conn.execute(q(
                "UPDATE {s}.accounts a SET holder_user_id = v.holder, kind = v.kind, "
                "position = greatest(a.position, v.position) "
                "FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::bigint[]) "
                "AS v(id, holder, kind, position) WHERE a.account_id = v.id", schema),
                (list(holders), *([h[i] for h in holders.values()] for i in range(3))))
        if assignments:
            columns = [list(c) for c in zip(*assignments, strict=True)]
            conn.execute(q(
                "INSERT INTO {s}.package_assignments SELECT v.id, v.at, a.team_id, v.package, "
                "v.version, v.name, v.position FROM unnest(%s::uuid[], %s::timestamptz[], "
                "%s::uuid[], %s::integer[], %s::text[], %s::bigint[]) "
                "AS v(id, at, package, version, name, position) "
                "JOIN {s}.accounts a ON a.account_id = v.id ON CONFLICT DO NOTHING", schema),
                columns)
        conn.execute(q(f"DELETE FROM {{s}}.{BACKFILL_TABLE} WHERE name = %s", schema),
                     (HOLDERS_BACKFILL,))
        return len(rows)
