"""A throwaway PostgreSQL server for the tests (a real server, not a mock).

How to use it (fixtures in tests/conftest.py):

* ``pg`` (session scope): a running :class:`PgServer`, started once per test session on a
  free 127.0.0.1 port with its unix socket in its own temp dir, stopped and removed at the end.
  ``pg.dsn`` connects as the test role ``crmsync`` (password auth, not a superuser, owns the
  database ``crmsync``); ``pg.admin_dsn`` as the superuser (trust, over the unix socket only);
  ``pg.password`` is the test role's password, so ``pg.dsn_with(password="wrong")`` must fail.
* ``pg_db`` (function scope): the DSN of a fresh, empty database owned by the test role,
  dropped after the test; use it when a test needs isolation (schemas, stores, locks).
  ``pg.create_database()`` / ``pg.drop_database(name)`` do the same by hand.
* ``pg.sql(statement, dsn=None)``: run one statement (admin by default) and return the rows.

The server binaries are found under /usr/lib/postgresql/*/bin (newest first), else on PATH.
When run as root the cluster runs as the ``postgres`` system user (else ``nobody``), through
``runuser``. Without binaries the tests that use ``pg`` skip with the reason, except under
``CI=true``, where they fail: CI must install Debian's ``postgresql`` (``.ci/run`` does).
The cluster is tuned for tests (fsync off), so never point it at data you want to keep.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

ROLE = "crmsync"
PASSWORD = "crmsync-test-pw"
ADMIN = "pgadmin"


class NoServer(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bin() -> Path:
    """The folder holding initdb, pg_ctl and postgres."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
                   reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    raise NoServer("no PostgreSQL server binaries (initdb, pg_ctl) under "
                   "/usr/lib/postgresql/*/bin or on PATH; install Debian's `postgresql`")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise NoServer("running as root and neither a `postgres` nor a `nobody` user exists")


@dataclass
class PgServer:
    bin: Path
    root: Path  # temp dir: data/, the socket, the log
    port: int
    user: str | None  # the OS user running the server (None: this process's user)

    host = "127.0.0.1"
    role = ROLE
    password = PASSWORD
    database = ROLE

    # ------------------------------------------------------------------ DSNs
    def dsn_with(self, *, user: str = ROLE, password: str | None = PASSWORD,
                 database: str = ROLE, host: str | None = None, port: int | None = None) -> str:
        auth = quote(user) + (f":{quote(password)}" if password is not None else "")
        return (f"postgresql://{auth}@{host or self.host}:{port or self.port}"
                f"/{quote(database)}")

    @property
    def dsn(self) -> str:
        """The test role over TCP, with its password."""
        return self.dsn_with()

    @property
    def admin_dsn(self) -> str:
        """The superuser over the unix socket (trust)."""
        return f"postgresql://{ADMIN}@/postgres?host={quote(str(self.root))}&port={self.port}"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    # ------------------------------------------------------------------ life cycle
    def _cmd(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root)
        if res.returncode:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n"
                               f"{res.stdout}\n{res.stderr}\n{tail}")
        return res

    def start(self) -> PgServer:
        data = self.root / "data"
        pwfile = self.root / "admin.pw"
        pwfile.write_text("unused-admin-pw\n")
        if self.user:
            shutil.chown(self.root, self.user)
            shutil.chown(pwfile, self.user)
        self._cmd(self.bin / "initdb", "-D", data, "-U", ADMIN, "--pwfile", pwfile,
                  "-E", "UTF8", "--locale=C", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--no-sync")
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses={self.host} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200 -c shared_buffers=64MB")
        self._cmd(self.bin / "pg_ctl", "-D", data, "-o", opts, "-l", self.log, "-w",
                  "-t", "60", "start")
        self.sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        self.sql(f"CREATE DATABASE {ROLE} OWNER {ROLE}")
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._cmd(self.bin / "pg_ctl", "-D", self.root / "data", "-m", "immediate",
                      "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ helpers
    def sql(self, statement: str, dsn: str | None = None) -> list[tuple]:
        import psycopg

        with psycopg.connect(dsn or self.admin_dsn, autocommit=True) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str | None = None) -> str:
        """A fresh database owned by the test role; returns its DSN."""
        import uuid

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        return self.dsn_with(database=name)

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_server() -> PgServer:
    """Start a throwaway server (raise NoServer when there are no binaries)."""
    bin_dir = find_bin()
    user = _run_as()
    last: Exception | None = None
    for _ in range(3):  # a free port can be taken between the probe and the start
        root = Path(tempfile.mkdtemp(prefix="crmsync-pg-"))
        server = PgServer(bin=bin_dir, root=root, port=free_port(), user=user)
        try:
            return server.start()
        except RuntimeError as exc:
            last = exc
            server.stop()
    raise RuntimeError(f"could not start a PostgreSQL test server: {last}")
