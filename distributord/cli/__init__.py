"""The commands: ``distributord`` (run, sim, demo) and ``distributorctl``."""

import os
import sys


def discard_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again.

    For a reader of our pipe that stopped (``| head``): the recipe from the ``signal``
    module's documentation on SIGPIPE.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor behind stdout: nothing to protect
        pass
