"""coord's generated messages, for what the client takes as is (a
rate-limit ``Limit``, a ``Message``…): ``from coord_client.pb import
ratelimit_pb2``."""

from coord_client._pb.coord.v1 import (
    admin_pb2,
    common_pb2,
    election_pb2,
    leaderboard_pb2,
    lock_pb2,
    pubsub_pb2,
    ratelimit_pb2,
    semaphore_pb2,
)

__all__ = [
    "admin_pb2",
    "common_pb2",
    "election_pb2",
    "leaderboard_pb2",
    "lock_pb2",
    "pubsub_pb2",
    "ratelimit_pb2",
    "semaphore_pb2",
]
