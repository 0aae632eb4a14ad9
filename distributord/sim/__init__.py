"""The simulated microgrid: a real ``Microgrid`` gRPC server (v1alpha18, v1alpha19, v1, one port).

* :mod:`distributord.sim.scenario` — what is simulated (pure: frozen values and a TOML parser);
* :mod:`distributord.sim.world` — the physics (pure: time is an argument);
* :mod:`distributord.sim.record` — what each inverter was commanded and held (pure);
* :mod:`distributord.sim.servicer` — a version's service on the gRPC server (the grpc glue of
  the adapters' served methods);
* :mod:`distributord.sim.server` — :class:`~.server.Simulator`, served through every version's
  adapter (:mod:`distributord.api`).

This package deliberately re-exports nothing: importing the pure modules must not import grpc.
"""
