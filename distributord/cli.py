"""``distributord``: run the daemon, the simulator, or the demo.

The flags are a contract (``spec/operations.md``): outside tools depend on them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from distributord import __version__


def parser() -> argparse.ArgumentParser:
    """The command line of ``distributord``."""
    top = argparse.ArgumentParser(
        prog="distributord",
        description="Split charge/discharge power across a microgrid's batteries.",
    )
    top.add_argument("--version", action="version", version=f"distributord {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    run.add_argument("--microgrid", metavar="HOST:PORT", help="Microgrid API endpoint")
    run.add_argument("--socket", metavar="PATH", help="control socket path")
    run.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning or error")
    sim = commands.add_parser("sim", help="serve a simulated microgrid (v1 API)")
    sim.add_argument("--port", type=int, metavar="PORT")
    sim.add_argument("--batteries", type=int, metavar="N")
    sim.add_argument("--scenario", metavar="FILE")
    sim.add_argument("--seed", type=int, metavar="N")
    demo = commands.add_parser("demo", help="simulator and daemon in one process, a short scenario")
    demo.add_argument("--batteries", type=int, metavar="N")
    demo.add_argument("--duration", type=float, metavar="S")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``distributord``."""
    args = parser().parse_args(argv)
    if args.command == "demo":
        # Until the daemon exists the demo is the algorithm's benchmark.
        from distributord.bench.distribution import main as bench

        return bench(["--rounds", "3"])
    if args.command == "sim":
        # Imported here: grpc is loaded only by the commands that serve.
        from distributord.sim.server import main as sim

        return sim(port=args.port, batteries=args.batteries, scenario=args.scenario, seed=args.seed)
    print(f"distributord {args.command}: not available yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
