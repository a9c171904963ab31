"""claimcore: a launch-second voucher claim engine.

Stateless grpc.aio front nodes route each claim by campaign shard to a
Cython token bucket and a micro-batcher, backed by Redis Lua scripts that
hold all state. See docs/architecture.md.
"""

__version__ = "0.1.0"
