"""The throwaway PostgreSQL test server itself: loopback only, password auth, no superuser."""

from __future__ import annotations

import psycopg
import pytest


def test_server_runs_with_a_password_role_on_loopback(pg):
    with psycopg.connect(pg.dsn) as conn:
        user, superuser, addr = conn.execute(
            "SELECT current_user, usesuper, inet_server_addr()::text FROM pg_user"
            " WHERE usename = current_user").fetchone()
    assert (user, superuser) == ("crmsync", False)
    assert addr.startswith("127.0.0.1")
    listen = pg.sql("SHOW listen_addresses")[0][0]
    assert listen == "127.0.0.1"


def test_wrong_password_is_refused(pg):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.dsn_with(password="wrong"), connect_timeout=5)


def test_fresh_database_per_test(pg_db, pg):
    with psycopg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.commit()
    name = pg_db.rsplit("/", 1)[1]
    assert pg.sql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") == [(1,)]
