"""A throwaway PostgreSQL cluster for the tests: started once per session, a fresh
database per test.

:class:`PgCluster` runs Debian's PostgreSQL binaries (``initdb`` and ``pg_ctl``, from
PATH or ``/usr/lib/postgresql/*/bin``) on a data directory in a temporary directory:
listening on a free loopback port only, its unix socket in that directory, ``fsync``
and ``synchronous_commit`` on (the tests check durability), password authentication
on TCP (the DSN carries a random password). As root the server runs as the
unprivileged ``postgres`` user (``initdb`` refuses root) and the directory is
theirs. Tests may stop and start it mid-test (:meth:`PgCluster.stop`,
:meth:`PgCluster.start`): the port, the data and the password stay.

Fixtures (registered in ``tests/conftest.py``):

- ``pg_cluster`` (session): the running cluster; removed at the end of the session.
- ``pg_dsn``: a fresh, empty database for one test, as a libpq URI. Dropped after
  the test (the cluster is started again first if the test left it stopped).

Without PostgreSQL the tests that use these fixtures are skipped, unless
``PROCTOR_REQUIRE_PG=1`` (as in CI, ``.ci/run``): then they fail.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest

__all__ = ["PgCluster", "PgUnavailableError", "find_pg_bin", "pg_cluster", "pg_dsn"]

SUPERUSER = "postgres"
_TIMEOUT = 120  # seconds for pg_ctl and initdb: generous, the machine is shared


class PgUnavailableError(Exception):
    """PostgreSQL cannot be run here (binaries or the unprivileged user missing)."""


def find_pg_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: PATH first, then the newest
    ``/usr/lib/postgresql/*/bin``.

    Raises:
        PgUnavailableError: neither has both programs.
    """
    initdb = shutil.which("initdb")
    if initdb is not None:
        real = Path(initdb).resolve().parent
        if (real / "pg_ctl").is_file():
            return real
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for candidate in reversed(versions):
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise PgUnavailableError("initdb and pg_ctl are neither on PATH nor in /usr/lib/postgresql/*/bin")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgCluster:
    """One PostgreSQL cluster in a temporary directory (see the module docstring)."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        """Create the cluster's directory and run ``initdb``; :meth:`start` starts it.

        Raises:
            PgUnavailableError: no binaries, or running as root without a
                ``postgres`` user to run the server as.
            subprocess.CalledProcessError: ``initdb`` failed.
        """
        self.bin = bin_dir or find_pg_bin()
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam(SUPERUSER)
            except KeyError as e:
                raise PgUnavailableError(
                    "running as root, and there is no 'postgres' user to run the server as "
                    "(apt-get install postgresql creates it)"
                ) from e
        # Not under pytest's tmp_path: its parents are root-only (0700), and the
        # server's user must reach its own directory.
        self.root = Path(tempfile.mkdtemp(prefix="proctor-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_file = self.root / "server.log"
        self.password = secrets.token_urlsafe(18)
        self.port = _free_port()
        self._databases = itertools.count(1)
        try:
            self.socket_dir.mkdir()
            pwfile = self.root / "pw"
            pwfile.write_text(self.password + "\n")
            if self._user is not None:
                for p in (self.root, self.socket_dir, pwfile):
                    os.chown(p, self._user.pw_uid, self._user.pw_gid)
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            )
            pwfile.unlink()
            settings = {
                "listen_addresses": "'127.0.0.1'",
                "port": str(self.port),
                "unix_socket_directories": f"'{self.socket_dir}'",
                # Durability is what the tests check: never turn these off for speed.
                "fsync": "on",
                "synchronous_commit": "on",
                "full_page_writes": "on",
                "max_connections": "200",
                "shared_buffers": "32MB",
                "log_min_messages": "warning",
            }
            with (self.data / "postgresql.conf").open("a") as f:
                f.write("\n# proctor test cluster\n")
                f.writelines(f"{k} = {v}\n" for k, v in settings.items())
        except BaseException:
            self.remove()
            raise

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        user: dict[str, Any] = {}
        if self._user is not None:
            user = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        try:
            return subprocess.run(
                [str(self.bin / program), *args],
                cwd=self.root,  # the server's user may not read the caller's directory
                capture_output=True,
                text=True,
                check=True,
                timeout=_TIMEOUT,
                **user,
            )
        except subprocess.CalledProcessError as e:
            log = self.log_file.read_text(errors="replace")[-4000:] if self.log_file.exists() else ""
            raise RuntimeError(
                f"{program} {' '.join(args)} exited {e.returncode}:\n{e.stdout}\n{e.stderr}\n"
                f"server log:\n{log}"
            ) from e

    # -- the server's life -----------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._reap_killed_postmaster()
        self._run(
            "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", str(_TIMEOUT)
        )

    def _reap_killed_postmaster(self) -> None:
        """A postmaster killed by a test is our zombie when this process is a child
        subreaper (pytest becomes one once a test contains a command in process): reap it,
        or the new postmaster takes the old ``postmaster.pid`` for a live server."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clients disconnected, clean shutdown) or
        ``immediate`` (as a crash: recovery from the WAL on the next start)."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"expected a pg_ctl stop mode (smart, fast, immediate), found {mode!r}")
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w", "-t", str(_TIMEOUT))

    def running(self) -> bool:
        """Whether the server is up (``pg_ctl status``)."""
        self._reap_killed_postmaster()
        try:
            self._run("pg_ctl", "status", "-D", str(self.data))
        except RuntimeError:
            return False
        return True

    def remove(self) -> None:
        """Stop the server if it runs (as a crash: nothing is kept) and delete everything."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases -------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URI for ``dbname`` over TCP on loopback, with the password."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def sql(self, statement: str, *, dbname: str = "postgres") -> None:
        """Run one statement in autocommit mode (CREATE/DROP DATABASE need it)."""
        import psycopg

        with psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=30) as conn:
            conn.execute(statement.encode())

    def create_database(self) -> str:
        """Create a fresh, empty database and return its name."""
        name = f"proctor_test_{next(self._databases)}"
        self.sql(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- fixtures --------------------------------------------------------------------


def _unavailable_or_required(reason: str) -> NoReturn:
    message = (
        f"PostgreSQL tests cannot run: {reason}. Install the server (apt-get install "
        "postgresql, or scripts/setup) to run them."
    )
    if os.environ.get("PROCTOR_REQUIRE_PG") == "1":
        pytest.fail(f"{message} PROCTOR_REQUIRE_PG=1 is set, so this is a failure, not a skip.")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A running throwaway PostgreSQL cluster for the whole session."""
    try:
        import psycopg  # noqa: F401 - only checks that the driver is installed
    except ImportError:
        _unavailable_or_required("the psycopg driver is not installed")
    try:
        cluster = PgCluster()
    except PgUnavailableError as e:
        _unavailable_or_required(str(e))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh database for one test, as a libpq URI (dropped afterwards)."""
    if not pg_cluster.running():
        pg_cluster.start()  # one test's failure must not fail every later one at set-up
    name = pg_cluster.create_database()
    yield pg_cluster.dsn(name)
    if not pg_cluster.running():
        pg_cluster.start()  # a test stopped it: the next test needs it again
    pg_cluster.drop_database(name)


def pg_params(*backends: str) -> Sequence[Any]:
    """``pytest.param`` values for a backend parametrization, PostgreSQL marked
    ``postgres`` (so ``-m 'not postgres'`` leaves it out)."""
    return [pytest.param(b, marks=pytest.mark.postgres) if b == "postgresql" else b for b in backends]
