"""Start the app the way `make run` does (`prunescope app`), for tests that need a server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, cwd: Path, **popen) -> subprocess.Popen:
    """The launcher from ``cwd`` (not the repository), on ``port``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "app.launch", "app", "--port", str(port)], cwd=cwd, env=env,
                            **popen)


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 90) -> bool:
    """True once the app answers its health check; False if it exited or the time ran out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
        if proc.poll() is not None:
            return False
    return False
