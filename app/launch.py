"""``prunescope app``: start the explorer, bound to 127.0.0.1 unless another address is asked for.

``streamlit run`` reads ``.streamlit/config.toml`` from the current folder only; started
anywhere else it would listen on every interface, without a login. The launcher passes
every setting on the command line, so the app is the same from any folder. The console
script ``prunescope`` is this module's :func:`main`: it adds the ``app`` command to the
core CLI and runs it.
"""
from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent / "streamlit_app.py"
DEFAULT_ADDRESS = "127.0.0.1"
SETTINGS = {  # the same as .streamlit/config.toml, so the folder the app is started from does not matter
    "server.headless": "true", "server.maxUploadSize": "200", "server.runOnSave": "false",
    "browser.gatherUsageStats": "false", "client.toolbarMode": "viewer", "theme.base": "light",
    "theme.primaryColor": "#2f6fde",
    # the Prune page's sliders are given the plan's value as their fallback (value=) while their
    # session key holds the same value: intended, so no warning stack in the server log
    "global.disableWidgetStateDuplicationWarning": "true",
}


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def streamlit_command(address: str = DEFAULT_ADDRESS, port: int = 8501) -> list[str]:
    """The command line that runs the app on ``address:port``."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", address,
           "--server.port", str(port)]
    for k, v in SETTINGS.items():
        cmd += [f"--{k}", v]
    return cmd


def exposure_warning(address: str) -> str | None:
    """What to tell a person who binds the app to a non-loopback address (None for loopback)."""
    if is_loopback(address):
        return None
    return (f"prunescope app: listening on {address}: anyone who can reach this machine on that address can "
            "use the app and read your models (there is no login). Leave out --address to stay on 127.0.0.1.")


def _app_args(p) -> None:
    p.add_argument("--address", default=DEFAULT_ADDRESS,
                   help="interface to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")


def cmd_app(args):
    from core.cli.common import UsageError

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be in 1..65535, got {args.port}")
    warning = exposure_warning(args.address)
    if warning:
        print(warning, file=sys.stderr)
    cmd = streamlit_command(args.address, args.port)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)  # the app replaces this process (signals reach streamlit directly)


def main(argv: list[str] | None = None) -> int:
    """The ``prunescope`` console script: the core CLI plus the ``app`` command."""
    from core.cli import COMMANDS
    from core.cli import main as core_main

    if "app" not in COMMANDS:
        cmd_app.cli_help = "start the explorer in a browser (bound to 127.0.0.1 unless --address)"
        cmd_app.cli_arguments = _app_args
        COMMANDS.register("app", cmd_app)
    return core_main(argv)


if __name__ == "__main__":
    sys.exit(main())
