"""distributord: splits charge/discharge power across a microgrid's batteries.

The layers: :mod:`distributord.core` (pure: no trio, no grpc, no clock), :mod:`distributord.api`
(protobuf adapters), :mod:`distributord.shell` (IO) and :mod:`distributord.cli` (commands).
"""

import time

__version__ = "0.2.0"

STARTED_MONOTONIC = time.monotonic()
"""When this process loaded distributord, on the monotonic clock: ``ping``'s uptime counts
from here (process start, give or take the interpreter's start-up), not from when the daemon
became ready."""
