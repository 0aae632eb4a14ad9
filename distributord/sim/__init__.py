"""The simulated microgrid: a real v1 ``Microgrid`` gRPC server with batteries and inverters.

* :mod:`distributord.sim.scenario` — what is simulated (pure: frozen values and a TOML parser);
* :mod:`distributord.sim.world` — the physics (pure: time is an argument);
* :mod:`distributord.sim.server` — the gRPC servicer and :class:`~.server.Simulator`.

This package deliberately re-exports nothing: importing the pure modules must not import grpc.
"""
