"""Pub/sub across languages: Python publishes, Node subscribes; a recoverable
Node subscriber moves to another coord instance and loses nothing."""

import base64
import json
import threading
import time

from coord.v1 import pubsub_pb2, pubsub_pb2_grpc
from harness import finish, node, unique


def first_line(proc):
    line = proc.stdout.readline()
    assert line, f"{proc.args} printed nothing; stderr:\n{proc.stderr.read()}"
    return json.loads(line)


def test_message_published_from_python_reaches_a_node_subscriber(cluster):
    channel = unique("interop-live")
    js = node(["subscribe", "--addr", cluster[1].addr, "--channel", channel, "--count", "3"])
    assert first_line(js) == {"subscribed": [channel]}

    pubsub = pubsub_pb2_grpc.PubSubServiceStub(cluster[0].channel)
    sent = [bytes([0, 255, 1, 254]), "héllo ✓".encode(), b""]
    for i, payload in enumerate(sent):
        reply = pubsub.Publish(pubsub_pb2.PublishRequest(channel=channel, payload=payload, headers={"seq": str(i)}),
                               timeout=10)
        assert reply.mode == pubsub_pb2.CHANNEL_MODE_EPHEMERAL
        assert reply.receivers >= 1  # the instance serving the Node subscriber

    got = finish(js)
    assert [base64.b64decode(m["payload"]) for m in got] == sent
    assert [m["headers"] for m in got] == [{"seq": str(i)} for i in range(len(sent))]
    assert {m["channel"] for m in got} == {channel}


def test_recoverable_node_subscriber_resumes_on_another_instance_without_loss(cluster):
    channel = "durable." + unique("interop")  # the coord instances run with --pubsub-recoverable-prefixes durable.
    total, break_after = 200, 50
    js = node(["resume", "--channel", channel, "--first", cluster[0].addr, "--second", cluster[1].addr,
               "--total", str(total), "--break-after", str(break_after)])
    assert "subscribed" in first_line(js)

    pubsub = pubsub_pb2_grpc.PubSubServiceStub(cluster[0].channel)
    published = []

    def publish():
        for i in range(total):
            reply = pubsub.Publish(pubsub_pb2.PublishRequest(channel=channel, payload=f"m{i}".encode()), timeout=10)
            published.append((reply.offset, reply.epoch))
            time.sleep(0.004)

    publisher = threading.Thread(target=publish)
    publisher.start()
    out = finish(js)
    publisher.join()

    received = next(line["received"] for line in out if "received" in line)
    assert received == [f"m{i}" for i in range(total)], "every message exactly once, in order"
    broke = next(line for line in out if "broke_after" in line)
    assert broke["broke_after"] == break_after
    # The second subscription started from the position of the last message
    # seen and recovered the gap from history.
    recovery = next(line["recovery"] for line in out if "recovery" in line)
    assert recovery["recovered"] is True, recovery
    assert len({epoch for _, epoch in published}) == 1
    offsets = [offset for offset, _ in published]
    assert offsets == list(range(offsets[0], offsets[0] + total))
    assert int(broke["position"]["offset"]) == offsets[break_after - 1]
