"""The protobuf edge: one adapter module per Microgrid API version.

Each adapter (``api.v1``; ``api.v1alpha`` for v1alpha18 and v1alpha19) converts its version's
messages to the core's frozen snapshots and its outcomes to the core's errors; nothing else
imports generated code. They may import protobuf and the generated messages, never grpc or trio
(lazily or not: ``tests/test_layering.py`` reads every import), and are shared by the daemon
and the simulator. ``api.adapter`` says what each one offers; ``api.common`` holds what they
share (the telemetry decoder's core, the stub, the serving of telemetry streams).
"""
