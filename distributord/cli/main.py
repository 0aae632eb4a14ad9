"""``distributord``: run the daemon, the simulator, or the demo.

The flags are a contract (``spec/operations.md``): outside tools depend on them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

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
    check = commands.add_parser(
        "check-config",
        help="validate a configuration file and print the effective settings (exit 0, or 2)",
    )
    check.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    sim = commands.add_parser("sim", help="serve a simulated microgrid (Microgrid API)")
    sim.add_argument("--port", type=int, metavar="PORT", help="loopback port (default 50051)")
    sim.add_argument("--batteries", type=int, metavar="N", help="a uniform fleet of N (1..1000)")
    sim.add_argument("--scenario", metavar="FILE", help="scenario (TOML, see config/)")
    sim.add_argument("--seed", type=int, metavar="N", help="seeds the fleet's SoCs")
    sim.add_argument(
        "--api",
        metavar="VERSION[,VERSION...]",
        help="serve only these of v1alpha18, v1alpha19, v1 (default: all three)",
    )
    demo = commands.add_parser("demo", help="simulator and daemon in one process, a short scenario")
    demo.add_argument("--batteries", type=int, metavar="N", help="fleet size, 2..1000 (default 6)")
    demo.add_argument("--duration", type=float, metavar="S", help="4..600 s (default 40)")
    demo.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw every battery's SoC and setpoint over time into this PNG "
        "(needs matplotlib: the plots extra)",
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``distributord``."""
    args = parser().parse_args(argv)
    # grpc's C core logs to stderr on its own; keep it to errors (set before grpc is loaded).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if args.command == "demo":
        from distributord.cli.demo import main as demo

        return demo(batteries=args.batteries, duration_s=args.duration, plot=args.plot)
    if args.command == "check-config":
        return check_config(args)
    if args.command == "sim":
        # Imported here: grpc is loaded only by the commands that serve.
        from distributord.sim.server import main as sim

        return sim(
            port=args.port,
            batteries=args.batteries,
            scenario=args.scenario,
            seed=args.seed,
            api=args.api,
        )
    return run(args)


def check_config(args: argparse.Namespace) -> int:
    """``distributord check-config``: the effective settings on stdout (exit 0), or the problem.

    What ``ExecReload=`` runs before it signals the daemon, so that a reload of a bad file fails
    visibly: exit 2 with one line naming the file and the key, as ``run`` does at start. The
    settings are the file and its drop-ins merged, as ``run`` and the reload read them; comment
    lines first name the files read, in order.
    """
    from distributord.core import config as configuration
    from distributord.core.errors import ConfigError
    from distributord.shell.systemd import fatal_line

    try:
        if args.config:
            config = configuration.load_config(args.config)
            files = configuration.config_files(args.config)
        else:
            config, files = configuration.Config(), []
    except ConfigError as error:
        print(fatal_line(f"distributord: {error}"), file=sys.stderr)
        return 2
    if files:
        sys.stdout.write("# The effective settings of these files, later ones overriding:\n")
        sys.stdout.writelines(f"#   {name}\n" for name in files)
    else:
        sys.stdout.write("# The built-in defaults (no --config):\n")
    sys.stdout.write(configuration.to_toml(config))
    return 0


def run(args: argparse.Namespace) -> int:
    """``distributord run``: one clear line and a non-zero exit for what prevents a start."""
    from distributord.core import config as configuration
    from distributord.core.errors import ConfigError, ControlSocketError
    from distributord.shell.control import open_control_socket
    from distributord.shell.systemd import (
        CONTROL_FD_NAME,
        configure_logging,
        fatal_line,
        listen_fds,
    )

    overrides = {"microgrid": args.microgrid, "socket": args.socket, "log_level": args.log_level}
    config_path = Path(args.config) if args.config else None
    try:
        loaded = configuration.load_config(config_path) if config_path else configuration.Config()
        config = configuration.with_overrides(loaded, **overrides)
    except ConfigError as error:
        print(fatal_line(f"distributord: {error}"), file=sys.stderr)
        return 2
    configure_logging(config.logging.level, libraries=config.logging.libraries)
    activated = listen_fds().get(CONTROL_FD_NAME, [])
    with contextlib.ExitStack() as stack:
        # A socket systemd passed in is closed at the end; one bound here is also removed
        # (unless another file has taken its place), whatever the end is.
        try:
            sock = stack.enter_context(
                activated[0] if activated else open_control_socket(config.control.socket)
            )
        except ControlSocketError as error:
            print(fatal_line(f"distributord: {error}"), file=sys.stderr)
            return 1

        import trio

        from distributord.shell.metrics import Metrics, serve_metrics
        from distributord.shell.service import run as serve

        metrics = Metrics()
        if config.metrics.listen != configuration.METRICS_OFF:
            try:
                stack.callback(serve_metrics(metrics, config.metrics.listen).close)
            except (OSError, ValueError) as error:  # UnicodeError: a host name IDNA refuses
                line = f"distributord: metrics.listen: cannot serve on {config.metrics.listen}"
                reason = error.strerror if isinstance(error, OSError) else None
                print(fatal_line(f"{line}: {reason or error}"), file=sys.stderr)
                return 1
        return trio.run(
            functools.partial(
                serve, config, sock, config_path=config_path, overrides=overrides, metrics=metrics
            )
        )


if __name__ == "__main__":
    sys.exit(main())
