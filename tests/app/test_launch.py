"""`prunescope app` binds 127.0.0.1 wherever it is started from, and says so when asked
for another address."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from app.launch import exposure_warning, is_loopback, streamlit_command
from tests.helpers.browser import free_port, start_app, wait_healthy


def test_the_command_binds_loopback_and_carries_every_setting():
    cmd = streamlit_command()
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    assert Path(cmd[cmd.index("run") + 1]).name == "streamlit_app.py"


def test_another_address_is_announced():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert exposure_warning("127.0.0.1") is None
    w = exposure_warning("0.0.0.0")
    assert "0.0.0.0" in w and "no login" in w and "127.0.0.1" in w


def _listening(port: int) -> list[str]:
    """Local addresses (hex, from /proc/net/tcp*) of sockets listening on ``port``."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(name):
            continue
        for line in open(name).read().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.rsplit(":", 1)
            if state == "0A" and int(p, 16) == port:  # 0A: LISTEN
                out.append(addr)
    return out


def test_the_app_started_from_another_folder_listens_on_loopback_only(tmp_path):
    port = free_port()
    proc = start_app(port, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_healthy(port, proc, 60)
        addrs = _listening(port)
        assert addrs and all(a == "0100007F" for a in addrs), addrs  # 127.0.0.1 only, never 0.0.0.0
    finally:
        proc.terminate()
        proc.wait(10)
    assert b"listening on" not in proc.stderr.read()
