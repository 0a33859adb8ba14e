"""Start, check and stop a shared MLflow tracking server (SQLite or PostgreSQL backend).

    python -m lrtransfer.mlflow_server start [--port 5055] [--root outputs/mlflow-server]
    python -m lrtransfer.mlflow_server stop  [--root ...]
    python -m lrtransfer.mlflow_server run   (foreground; what `make mlflow-server` calls)

Jobs then log over HTTP with ``tracking.uri=http://<host>:<port>``. The server binds 127.0.0.1 unless
``--host`` says otherwise; MLflow refuses requests whose Host header is not in ``--allowed-hosts``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .errors import UserError
from .paths import PROJECT_DIR
from .tracking import check_tracking_uri

DEFAULT_ROOT = PROJECT_DIR / "outputs" / "mlflow-server"


def server_command(root: Path, host: str, port: int, backend_uri: str | None, allowed_hosts: str | None,
                   workers: int = 1) -> list[str]:
    backend = backend_uri or f"sqlite:///{root.resolve()}/mlflow.db"
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", backend,
           "--artifacts-destination", str((root / "artifacts").resolve()), "--host", host, "--port", str(port),
           "--workers", str(workers)]
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    return cmd


def wait_until_healthy(url: str, timeout: float = 90.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            check_tracking_uri(url, timeout=2.0)
            return
        except Exception:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with code {proc.returncode}; see its log") from None
            if time.time() > deadline:
                raise TimeoutError(f"mlflow server at {url} not healthy after {timeout:.0f} s") from None
            time.sleep(0.5)


def start(root: Path = DEFAULT_ROOT, host: str = "127.0.0.1", port: int = 5055, backend_uri: str | None = None,
          allowed_hosts: str | None = None) -> str:
    """Start a server in the background (pid file ``root/server.pid``) and wait for /health; -> URL."""
    url = f"http://{host}:{port}"
    try:  # something already listening would answer /health for ours
        socket.create_connection((host, port), timeout=2.0).close()
    except OSError:
        pass
    else:
        raise UserError(f"--port={port}: something already listens at {url}; stop it or choose another port")
    root.mkdir(parents=True, exist_ok=True)
    log = open(root / "server.log", "ab")
    proc = subprocess.Popen(server_command(root, host, port, backend_uri, allowed_hosts), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    (root / "server.pid").write_text(str(proc.pid))
    try:
        wait_until_healthy(url, proc=proc)
    except Exception:
        stop(root)
        raise
    return url


def stop(root: Path = DEFAULT_ROOT) -> bool:
    """Stop the server this module started (by its pid file; its workers go with its process group)."""
    pidfile = root / "server.pid"
    if not pidfile.exists():
        return False
    pid = int(pidfile.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            if _is_zombie(pid):
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pidfile.unlink(missing_ok=True)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["start", "stop", "run"])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="database, artifacts, pid file and log")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5055)
    ap.add_argument("--backend-store-uri", default=None, help="e.g. postgresql://user:pw@host/db (default: SQLite)")
    ap.add_argument("--allowed-hosts", default=None, help="Host headers to accept besides localhost")
    args = ap.parse_args(argv)
    if args.action == "stop":
        print("stopped" if stop(args.root) else f"no server pid file under {args.root}")
        return 0
    if args.action == "start":
        try:
            url = start(args.root, args.host, args.port, args.backend_store_uri, args.allowed_hosts)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"mlflow server at {url} (pid file {args.root / 'server.pid'}); jobs: tracking.uri={url}")
        return 0
    args.root.mkdir(parents=True, exist_ok=True)
    cmd = server_command(args.root, args.host, args.port, args.backend_store_uri, args.allowed_hosts)
    print(f"mlflow server on http://{args.host}:{args.port}; jobs: tracking.uri=http://{args.host}:{args.port}",
          flush=True)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main())
