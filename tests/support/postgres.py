"""A throwaway PostgreSQL 15 server for the test session.

Tests use :class:`PostgresCluster` directly. For poking at a server by hand, run
``python -m tests.support.postgres``: it prints the URL and keeps the server up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from urllib.parse import quote

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

DEFAULT_BINDIR = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "pm_test"
HOST = "127.0.0.1"

# initdb and the server refuse to run as root, so under root they run as the account the
# Debian postgresql packages create.
_SERVICE_ACCOUNT = "postgres"
_READY_TIMEOUT = 60.0
_COMMAND_TIMEOUT = 120.0
_LOG_TAIL_LINES = 40
# Settings that trade durability for speed: the cluster is deleted after the
# session anyway, and only an OS crash (not a killed server) loses data with them.
# synchronous_commit stays on: with it off, kill() would lose the last commits,
# and tests that kill the server expect what was committed to be there after.
_FAST_UNSAFE_SETTINGS = ("fsync=off", "full_page_writes=off")


class PostgresError(RuntimeError):
    """The test PostgreSQL server could not be set up, started or stopped."""


@dataclass(frozen=True)
class PostgresServer:
    """Where a running test server listens and how to log in to it as superuser."""

    host: str
    port: int
    user: str
    password: str

    def url(self, database: str) -> str:
        user = quote(self.user, safe="")
        password = quote(self.password, safe="")
        return f"postgres://{user}:{password}@{self.host}:{self.port}/{quote(database, safe='')}"

    @contextlib.contextmanager
    def connect(self, database: str = "postgres") -> Iterator[psycopg2.extensions.connection]:
        """Yield an autocommit connection, closed on exit.

        psycopg2's own context manager only ends the transaction, so it would leak the
        connection and block DROP DATABASE.
        """
        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database,
            connect_timeout=5,
        )
        try:
            # CREATE/DROP DATABASE cannot run inside a transaction block.
            conn.autocommit = True
            yield conn
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        # FORCE terminates other sessions first; without it a test that leaked a connection
        # would make the drop fail.
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


class PostgresCluster:
    """Owns one temporary PostgreSQL data directory and the server running on it."""

    def __init__(self, bindir: Path = DEFAULT_BINDIR, base: Path | None = None) -> None:
        self._bindir = bindir
        self._base = base
        self._root: Path | None = None
        self._server: PostgresServer | None = None
        self._account: pwd.struct_passwd | None = None

    # -- public API ---------------------------------------------------------------------

    @property
    def server(self) -> PostgresServer:
        if self._server is None:
            raise PostgresError("the cluster is not started")
        return self._server

    @property
    def data_dir(self) -> Path:
        return self._require_root() / "data"

    @property
    def log_file(self) -> Path:
        return self._require_root() / "server.log"

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid from postmaster.pid, or None when no server holds the dir."""
        if self._root is None:
            return None
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first_line)

    def is_running(self) -> bool:
        if self._root is None:
            return False
        return self._pg_ctl("status", check=False).returncode == 0

    def start(self) -> PostgresServer:
        if self._root is not None:
            raise PostgresError("the cluster is already started")
        self._check_binaries()
        if self._base is not None:
            self._base.mkdir(parents=True, exist_ok=True)
        self._root = Path(tempfile.mkdtemp(prefix="pm-postgres-", dir=self._base))
        # Registered before anything can start a server, so a session that dies without
        # reaching stop() still does not leave a postmaster behind.
        atexit.register(self.stop)
        try:
            if os.geteuid() == 0:
                self._account = self._service_account()
                os.chown(self._root, self._account.pw_uid, self._account.pw_gid)
                self._check_account_can_write(self._root)
            password = secrets.token_urlsafe(24)
            self._initdb(password)
            self._server = PostgresServer(HOST, _free_port(), SUPERUSER, password)
            self._launch()
        except BaseException:
            self.stop()
            raise
        return self._server

    def stop(self) -> None:
        root = self._root
        if root is None:
            return
        try:
            if self.postmaster_pid() is not None:
                stopped = self._pg_ctl("stop", "-m", "fast", check=False).returncode == 0
                if not stopped:
                    self._pg_ctl("stop", "-m", "immediate", check=False)
                self._kill_leftover_postmaster()
        finally:
            self._root = None
            self._server = None
            self._account = None
            atexit.unregister(self.stop)
            shutil.rmtree(root, ignore_errors=True)

    def kill(self) -> None:
        """Stop the server without a clean shutdown, keeping its data, as if it crashed."""
        self._require_root()
        self._pg_ctl("stop", "-m", "immediate")

    def restart(self) -> None:
        """Start the server again on the same port and data (after kill(), typically)."""
        self._require_root()
        if self.is_running():
            raise PostgresError("the server is already running")
        self._launch()

    def __enter__(self) -> PostgresCluster:
        if self._root is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------

    def _require_root(self) -> Path:
        if self._root is None:
            raise PostgresError("the cluster is not started")
        return self._root

    def _check_binaries(self) -> None:
        missing = [n for n in ("initdb", "pg_ctl", "postgres") if not (self._bindir / n).is_file()]
        if missing:
            raise PostgresError(
                f"PostgreSQL binaries not found in {self._bindir}: {', '.join(missing)};"
                " run scripts/system-deps.sh"
            )

    @staticmethod
    def _service_account() -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(_SERVICE_ACCOUNT)
        except KeyError:
            raise PostgresError(
                f"running as root needs the {_SERVICE_ACCOUNT!r} system user to run the server"
                " (the postgresql-15 package creates it)"
            ) from None

    def _check_account_can_write(self, path: Path) -> None:
        # Owning the temp dir is not enough: a private ancestor (pytest's tmp_path is one)
        # stops the service account halfway, and initdb's own error for that is obscure.
        probe = subprocess.run(
            self._as_owner(["test", "-w", str(path)]),
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_COMMAND_TIMEOUT,
            check=False,
        )
        if probe.returncode != 0:
            raise PostgresError(
                f"the {_SERVICE_ACCOUNT!r} account cannot write to {path}; choose a base"
                " directory whose parents other users may traverse"
            )

    def _initdb(self, password: str) -> None:
        root = self._require_root()
        pwfile = root / "superuser-password"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if self._account is not None:
            os.chown(pwfile, self._account.pw_uid, self._account.pw_gid)
        try:
            self._run(
                "initdb",
                "--pgdata",
                str(self.data_dir),
                "--username",
                SUPERUSER,
                "--pwfile",
                str(pwfile),
                "--auth-host=scram-sha-256",
                # Local sockets sit in the private temp dir, so trust there is harmless and
                # lets pg_ctl probe readiness without the password.
                "--auth-local=trust",
                "--encoding=UTF8",
                # Fixed locale so results do not depend on the caller's environment.
                "--locale=C",
                "--no-sync",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _launch(self) -> None:
        root = self._require_root()
        server = self.server
        options = ["-h", server.host, "-p", str(server.port), "-k", str(root)]
        for setting in _FAST_UNSAFE_SETTINGS:
            options += ["-c", setting]
        # pg_ctl hands -o to /bin/sh, so each word must be shell-quoted.
        self._pg_ctl(
            "start",
            "-l",
            str(self.log_file),
            "-t",
            str(int(_READY_TIMEOUT)),
            "-o",
            shlex.join(options),
        )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        # pg_ctl -w only proves the socket answers; a real TCP login also proves the
        # password and pg_hba setup the tests will rely on.
        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            try:
                with self.server.connect() as conn, conn.cursor() as cur:
                    cur.execute("SELECT 1")
                return
            except psycopg2.OperationalError as exc:
                if time.monotonic() >= deadline:
                    raise PostgresError(
                        f"PostgreSQL did not accept connections within {_READY_TIMEOUT:.0f}s:"
                        f" {exc}\n{self._log_tail()}"
                    ) from exc
            time.sleep(0.05)

    def _kill_leftover_postmaster(self) -> None:
        # Last resort when pg_ctl could not stop it: removing the data dir under a live
        # postmaster would leave an orphan running until the machine reboots.
        pid = self.postmaster_pid()
        if pid is None:
            return
        # A stale postmaster.pid can name a recycled pid; only kill our own postmaster,
        # whose command line names this data directory.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return
        if os.fsencode(str(self.data_dir)) in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _pg_ctl(
        self, action: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # The server gets its own session so a Ctrl-C aimed at the test run does not shut it
        # down behind our back before stop() runs.
        return self._run(
            "pg_ctl", action, "--pgdata", str(self.data_dir), *args, check=check, new_session=True
        )

    def _run(
        self, tool: str, *args: str, check: bool = True, new_session: bool = False
    ) -> subprocess.CompletedProcess[str]:
        command = self._as_owner([str(self._bindir / tool), *args])
        try:
            result = subprocess.run(
                command,
                cwd=self._require_root(),
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=_COMMAND_TIMEOUT,
                start_new_session=new_session,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresError(f"{tool} {' '.join(args)} timed out\n{self._log_tail()}") from exc
        if check and result.returncode != 0:
            raise PostgresError(
                f"{tool} {' '.join(args)} failed with exit code {result.returncode}:\n"
                f"{result.stdout}{self._log_tail()}"
            )
        return result

    def _as_owner(self, command: list[str]) -> list[str]:
        account = self._account
        if account is None:
            return command
        if shutil.which("runuser"):
            return ["runuser", "-u", account.pw_name, "--", *command]
        if shutil.which("setpriv"):
            return [
                "setpriv",
                f"--reuid={account.pw_uid}",
                f"--regid={account.pw_gid}",
                "--init-groups",
                *command,
            ]
        raise PostgresError("running as root needs runuser or setpriv (util-linux)")

    @staticmethod
    def _environment() -> dict[str, str]:
        # PGDATA, PGPORT and friends from the developer's shell would otherwise redirect
        # pg_ctl and initdb to some other cluster.
        return {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def _log_tail(self) -> str:
        if self._root is None:
            return ""
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no server log)"
        tail = "\n".join(lines[-_LOG_TAIL_LINES:])
        return f"--- last lines of {self.log_file} ---\n{tail}"


def _free_port() -> int:
    # The port is free when we look; another process could take it before the server binds,
    # which pg_ctl would report as a start failure.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.postgres",
        description="Start a throwaway PostgreSQL 15 server and keep it up until Ctrl-C.",
    )
    parser.add_argument("--bindir", type=Path, default=DEFAULT_BINDIR)
    parser.add_argument("--database", help="also create this database and print its URL")
    args = parser.parse_args(argv)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # Turn `kill` into a normal exit so the with-block below still stops the server.
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    with PostgresCluster(bindir=args.bindir) as cluster:
        server = cluster.server
        print(server.url("postgres"), flush=True)
        if args.database:
            print(server.create_database(args.database), flush=True)
        print(f"data directory: {cluster.data_dir}; Ctrl-C to stop", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                signal.pause()


if __name__ == "__main__":
    main()
