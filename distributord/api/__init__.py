"""The protobuf edge: one adapter module per Microgrid API version.

Each converts its version's messages to the core's frozen snapshots and its gRPC status codes to
the core's errors; nothing else imports generated code. They may import protobuf, never grpc's
channel machinery or trio, and are shared by the daemon and the simulator.
"""
