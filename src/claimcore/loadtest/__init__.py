"""The load generator: a gRPC client that replays a launch and judges it."""
