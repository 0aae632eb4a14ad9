"""distributord: splits charge/discharge power across a microgrid's batteries.

The layers: :mod:`distributord.core` (pure: no trio, no grpc, no clock), :mod:`distributord.api`
(protobuf adapters), :mod:`distributord.shell` (IO) and :mod:`distributord.cli` (commands).
"""

__version__ = "0.1.0"
