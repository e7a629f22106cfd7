"""Rate limits across languages: checks from Python and Node against two coord
instances, all at once, admit exactly the limit between them."""

import json
import threading

import pytest
from coord.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from google.protobuf import json_format
from harness import finish, node, unique

LIMIT = 40
MONTH_MS = 30 * 24 * 3600 * 1000  # windows this long almost never roll over mid-test

# JSON (camelCase) forms shared by both languages.
ALGORITHMS = {
    "token_bucket": {"tokenBucket": {"capacity": LIMIT, "refillTokens": 1, "refillPeriodMs": MONTH_MS}},
    "gcra": {"gcra": {"rate": 1, "periodMs": MONTH_MS, "burst": LIMIT}},
    "sliding_log": {"slidingLog": {"limit": LIMIT, "windowMs": MONTH_MS}},
    "sliding_window": {"slidingWindow": {"limit": LIMIT, "windowMs": MONTH_MS}},
    "fixed_window": {"fixedWindow": {"limit": LIMIT, "windowMs": MONTH_MS}},
}
PER_LANGUAGE = 60  # 120 checks in all, against a limit of 40


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_decisions_from_python_and_node_sum_to_exactly_the_limit(cluster, algorithm):
    subject = unique(f"interop-{algorithm}")
    spec = ALGORITHMS[algorithm]
    js = node(["ratelimit", "--addr", cluster[1].addr, "--subject", subject, "--limit", json.dumps(spec),
               "--n", str(PER_LANGUAGE), "--concurrency", "8"])

    limit = json_format.ParseDict({"name": "interop", **spec}, ratelimit_pb2.Limit())
    stub = ratelimit_pb2_grpc.RateLimitServiceStub(cluster[0].channel)
    decisions = []
    lock = threading.Lock()

    def checks(n):
        for _ in range(n):
            reply = stub.Check(ratelimit_pb2.CheckRequest(subject=subject, limits=[limit]), timeout=10)
            with lock:
                decisions.append(reply.allowed)

    threads = [threading.Thread(target=checks, args=(PER_LANGUAGE // 6,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (node_result,) = finish(js)

    py_allowed = sum(decisions)
    assert len(decisions) == PER_LANGUAGE
    assert node_result["allowed"] + node_result["denied"] == PER_LANGUAGE
    assert py_allowed + node_result["allowed"] == LIMIT, (py_allowed, node_result)
