"""distributord: splits charge/discharge power across a microgrid's batteries.

The pure core (no trio, no grpc, no clock): :mod:`distributord.model`,
:mod:`distributord.distribution`, :mod:`distributord.bounds`, :mod:`distributord.planning`.
"""

__version__ = "0.1.0"
