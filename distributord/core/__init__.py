"""The pure core: synchronous, free of trio, grpc, protobuf and the clock.

Everything that decides what to command lives here, so it can be tested exactly and without IO:
the model, the distribution algorithm, request planning, the status state machine, the control
protocol's codec and the configuration parser.
"""
