"""Read models built by an older schema version are brought up to this one in place when the
change only adds tables (version 3 adds `payments`, version 4 the views `outbox`), and refused
with the way to rebuild them when it does not."""

from __future__ import annotations

import psycopg
import pytest

from adapters.postgres.view_schema import (
    VIEWS_SCHEMA_VERSION,
    ReadModelSchemaError,
    connect,
    create_tables,
    drop_schema,
    q,
)

SCHEMA = "ledger_views_upgrade_test"


def _version(conn: psycopg.Connection) -> int:  # type: ignore[type-arg]
    row = conn.execute(q("SELECT version FROM {s}.schema_version", SCHEMA)).fetchone()
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

        assert _version(conn) == VIEWS_SCHEMA_VERSION == 4
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
