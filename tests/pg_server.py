"""A throwaway PostgreSQL server for tests and CI: initdb into a temp dir, start, stop.

    python -m tests.pg_server start [--dir DIR]   prints `export WF_TEST_PG_URL=...` lines
    python -m tests.pg_server stop --dir DIR

The server listens on a free loopback port (its socket in the temp dir), with fsync and
synchronous_commit on, and trusts local connections of its superuser `wf`. PostgreSQL
refuses to run as root: when this runs as root the cluster belongs to the `postgres` user
(or `nobody`). `pg_stat_statements` is preloaded for the benchmarks' capacity model.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

SUPERUSER = "wf"
DATABASE = "wf"


def find_bindir() -> Path:
    """The directory holding initdb and pg_ctl: $PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise RuntimeError("no PostgreSQL binaries found (set PG_BIN to the folder holding initdb and pg_ctl)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> str | None:
    """The unprivileged user to run the server as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


class PgServer:
    """One PostgreSQL cluster in `root` (created by `start`, removed by `stop` if we made it)."""

    def __init__(self, root: Path | None = None) -> None:
        self.bindir = find_bindir()
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="wf-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user = _server_user()
        self.port = 0

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*(["runuser", "-u", self.user, "--"] if self.user else []), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def start(self) -> str:
        """initdb (if needed) and start the server; returns its URL."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chmod(self.root, 0o755)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        fresh = not self.data.exists()
        if fresh:
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                      "-E", "UTF8", "--no-sync", "--locale=C")
        self.port = _free_port()
        options = {
            "listen_addresses": "'127.0.0.1'", "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'", "fsync": "on", "synchronous_commit": "on",
            "max_connections": "400", "shared_buffers": "128MB",
            "shared_preload_libraries": "'pg_stat_statements'", "track_io_timing": "on",
        }
        conf = self.data / "postgresql.auto.conf"
        conf.write_text("".join(f"{key} = {value}\n" for key, value in options.items()))
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(conf, entry.pw_uid, entry.pw_gid)
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        if fresh:
            self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, DATABASE)
        return self.url

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is cut; the server comes back on the same port."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-m", "fast", "restart")

    def made_here(self) -> bool:
        """Whether `root` holds only what `start` puts there (a cluster, its log, its sockets)."""
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return False
        return all(e.name in ("data", "server.log") or e.name.startswith(".s.PGSQL.") for e in entries)

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server (fast) and remove its folder, if the folder is one `start` made: a
        wrong `--dir` (an empty one is the current folder) must never delete anything else."""
        if self.data.exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop", check=False)
        if remove and self.made_here():
            shutil.rmtree(self.root, ignore_errors=True)

    @classmethod
    def attach(cls, root: Path, url: str) -> PgServer:
        """The server already running in `root` at `url` (to restart it from a test)."""
        server = cls(root)
        server.port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        return server


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.pg_server")
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.dir is not None and not str(args.dir).strip(".").strip():
        print("pg_server: --dir must name the server's folder (an empty value is the current folder)",
              file=sys.stderr)
        return 2
    if args.command == "start":
        server = PgServer(args.dir)
        try:
            url = server.start()
        except RuntimeError as exc:
            print(f"pg_server: {exc}", file=sys.stderr)
            server.stop()
            return 2
        print(f"export WF_TEST_PG_URL={url}")
        print(f"export WF_TEST_PG_DIR={server.root}")
        return 0
    if args.dir is None:
        print("pg_server: stop needs --dir", file=sys.stderr)
        return 2
    PgServer(args.dir).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
