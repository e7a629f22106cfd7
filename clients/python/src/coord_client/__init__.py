"""coord_client: coord's locks, read/write locks, semaphores, leader
election, rate limits, leaderboards and pub/sub for Python, with the hard
parts done once: a shared KeepAlive stream that renews every lease the
client holds, loss signalled when coord says so or when no renewal was
confirmed for a whole TTL, failover to other coord instances, and
subscriptions that resume from the last position they yielded.
``coord_client.aio`` has the same API for asyncio.

    from coord_client import Client

    with Client(["coord-0:50051", "coord-1:50051"], namespace="billing") as coord:
        with coord.lock("nightly-report", ttl=10, wait=5) as lock:
            for batch in work():
                lock.check()                      # raises LockLostError if lost
                write(batch, fence=lock.fencing_token)
"""

from coord_client import errors
from coord_client._client import Client, Leaderboard, Leadership, Lock, Permit, Subscription
from coord_client._core import Decision, Tls

__all__ = ["Client", "Decision", "Leaderboard", "Leadership", "Lock", "Permit", "Subscription", "Tls", "errors"]
