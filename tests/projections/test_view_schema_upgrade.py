"""Read models built by an older schema version are brought up to this one in place when the
change only adds tables (version 3 adds `payments`, version 4 the views `outbox`) or columns
(version 5: holders and kinds of accounts, and package assignments, filled from the log by the
projection runner), and refused with the way to rebuild them when it does not."""

from __future__ import annotations

import psycopg
import pytest

from adapters.postgres.view_schema import (
    LIVE_SCHEMA,
    VIEWS_SCHEMA_VERSION,
    ReadModelSchemaError,
    connect,
    create_tables,
    drop_schema,
    q,
)
from adapters.runtime.projection_process import open_runner
from tests.projections.history import OWNER, ledger_at, make_team

SCHEMA = "ledger_views_upgrade_test"


def _version(conn: psycopg.Connection, schema: str = SCHEMA) -> int:  # type: ignore[type-arg]
    row = conn.execute(q("SELECT version FROM {s}.schema_version", schema)).fetchone()
    assert row is not None
    return int(row[0])


def _table_rows(conn: psycopg.Connection, table: str) -> int:  # type: ignore[type-arg]
    row = conn.execute(q(f"SELECT count(*) FROM {{s}}.{table}", SCHEMA)).fetchone()
    assert row is not None
    return int(row[0])


def test_version_2_read_models_gain_the_payments_and_outbox_tables_and_keep_their_rows(
        database_url: str) -> None:
    with connect(database_url) as conn:
        drop_schema(conn, SCHEMA)
        create_tables(conn, SCHEMA)
        conn.execute(q("INSERT INTO {s}.top_ups VALUES (gen_random_uuid(), 'pi_1', 1, 1, 'USD', "
                       "now(), 0, 7)", SCHEMA))
        conn.execute(q("DROP TABLE {s}.payments", SCHEMA))
        conn.execute(q("DROP TABLE {s}.outbox", SCHEMA))
        conn.execute(q("UPDATE {s}.schema_version SET version = 2", SCHEMA))

        create_tables(conn, SCHEMA)

        assert _version(conn) == VIEWS_SCHEMA_VERSION == 5
        assert _table_rows(conn, "payments") == 0
        assert _table_rows(conn, "outbox") == 0
        assert _table_rows(conn, "top_ups") == 1
        drop_schema(conn, SCHEMA)


def test_version_3_read_models_gain_the_outbox_table_and_keep_their_rows(
        database_url: str) -> None:
    with connect(database_url) as conn:
        drop_schema(conn, SCHEMA)
        create_tables(conn, SCHEMA)
        conn.execute(q("INSERT INTO {s}.top_ups VALUES (gen_random_uuid(), 'pi_1', 1, 1, 'USD', "
                       "now(), 0, 7)", SCHEMA))
        conn.execute(q("DROP TABLE {s}.outbox", SCHEMA))
        conn.execute(q("UPDATE {s}.schema_version SET version = 3", SCHEMA))

        create_tables(conn, SCHEMA)

        assert _version(conn) == VIEWS_SCHEMA_VERSION
        conn.execute(q("INSERT INTO {s}.outbox (position, subject, payload) "
                       "VALUES (1, 'ledger.views.balance.t', '{{}}')", SCHEMA))
        assert _table_rows(conn, "outbox") == 1
        assert _table_rows(conn, "top_ups") == 1
        drop_schema(conn, SCHEMA)


def test_read_models_of_a_version_with_no_in_place_upgrade_are_refused_with_the_fix(
        database_url: str) -> None:
    with connect(database_url) as conn:
        drop_schema(conn, SCHEMA)
        create_tables(conn, SCHEMA)
        conn.execute(q("UPDATE {s}.schema_version SET version = 1", SCHEMA))
        with pytest.raises(ReadModelSchemaError, match=f"DROP SCHEMA {SCHEMA} CASCADE"):
            create_tables(conn, SCHEMA)
        drop_schema(conn, SCHEMA)


def test_version_4_read_models_gain_holders_kinds_and_assignments_filled_from_the_log(
        database_url: str) -> None:
    with ledger_at(database_url) as ledger:
        team = make_team(ledger, "upgrade", accounts=2)
        ledger.add_member(team.team_id, "ann", "member", OWNER)
        ledger.add_member(team.team_id, "bob", "member", OWNER)
        ledger.assign_account_holder(team.account_ids[0], "ann", OWNER)
        ledger.assign_account_holder(team.account_ids[1], "ann", OWNER)
        ledger.assign_account_holder(team.account_ids[1], "bob", OWNER)
        with open_runner(database_url) as runner:
            runner.catch_up()
            expected = (runner.store.accounts_of(team.team_id),
                        runner.store.assignments_of(team.team_id))
        assert [a.holder_user_id for a in expected[0]] == ["ann", "bob"]
        assert len(expected[1]) == 2 and expected[0][0].kind
        with connect(database_url) as conn:  # the tables as version 4 had them
            conn.execute(q("ALTER TABLE {s}.accounts DROP COLUMN holder_user_id, "
                           "DROP COLUMN kind", LIVE_SCHEMA))
            conn.execute(q("DROP TABLE {s}.package_assignments, {s}.backfill", LIVE_SCHEMA))
            conn.execute(q("UPDATE {s}.schema_version SET version = 4", LIVE_SCHEMA))
            # Version 4 did not fold holder changes: a row's position was its Opened event's.
            conn.execute(q("UPDATE {s}.accounts a SET position = (SELECT min(position) FROM "
                           "{s}.audit WHERE aggregate_id = a.account_id)", LIVE_SCHEMA))

        with open_runner(database_url) as runner:
            runner.catch_up()
            assert [a.row() for a in runner.store.accounts_of(team.team_id)] == [
                a.row() for a in expected[0]], "the same rows as a fold of version 5"
            assert runner.store.assignments_of(team.team_id) == expected[1]
        ledger.assign_account_holder(team.account_ids[0], None, OWNER)  # after the upgrade
        with open_runner(database_url) as runner:
            runner.catch_up()
            accounts = runner.store.accounts_of(team.team_id)
        assert [a.holder_user_id for a in accounts] == [None, "bob"]
        with connect(database_url) as conn:
            assert _version(conn, LIVE_SCHEMA) == VIEWS_SCHEMA_VERSION
            assert conn.execute(q("SELECT count(*) FROM {s}.backfill", LIVE_SCHEMA)
                                ).fetchone() == (0,)
