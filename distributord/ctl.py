"""``distributorctl``: talk to a running distributord over its control socket.

The flags are a contract (``spec/operations.md``): outside tools depend on them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from distributord import __version__


def parser() -> argparse.ArgumentParser:
    """The command line of ``distributorctl``."""
    top = argparse.ArgumentParser(prog="distributorctl", description="Control distributord.")
    top.add_argument("--version", action="version", version=f"distributorctl {__version__}")
    top.add_argument("--socket", metavar="PATH", help="control socket path")
    top.add_argument("--json", action="store_true", help="print JSON instead of tables")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("ping", help="check that the daemon answers")
    commands.add_parser("status", help="battery status")
    commands.add_parser("components", help="managed battery/inverter pairs")
    commands.add_parser("watch", help="follow status changes")
    set_power = commands.add_parser("set-power", help="charge (+) or discharge (-) batteries")
    set_power.add_argument("power", metavar="POWER", help="e.g. -5kW, 1.2MW, 300W")
    set_power.add_argument("--batteries", required=True, metavar="ID[,ID...]")
    set_power.add_argument("--timeout", type=float, metavar="S")
    set_power.add_argument("--no-adjust", action="store_true")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``distributorctl``."""
    args = parser().parse_args(argv)
    print(f"distributorctl {args.command}: not available yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
