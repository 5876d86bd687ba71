"""Sends messages with the official RocketMQ 5 Python client (rocketmq-python-client 5.1.2)
and receives them back, checking every one arrives once.

Usage: python python-smoke.py ENDPOINTS [TOPIC] [COUNT]
  ENDPOINTS  host:port;host:port (any nodes of the cluster)
  TOPIC      default smoke-<random>; created on first use when the broker allows it
  COUNT      messages to send, default 20
Prints the broker group each message went to and came from; exits non-zero on failure.
"""

import sys
import time
import uuid
from collections import Counter

from rocketmq import ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    endpoints = sys.argv[1]
    run = uuid.uuid4().hex[:8]
    topic = sys.argv[2] if len(sys.argv) > 2 else f"smoke-{run}"
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    config = ClientConfiguration(endpoints, Credentials())

    producer = Producer(config, (topic,))
    producer.startup()
    sent, to_broker = set(), Counter()
    started = time.time()
    for i in range(count):
        m = Message()
        m.topic = topic
        body = f"smoke-{run}-{i}"
        m.body = body.encode()
        m.tag = "smoke"
        m.keys = f"smoke-{run}-{i}"
        receipt = producer.send(m)
        if not receipt.message_id:
            sys.exit(f"FAIL: send {i} returned no message id")
        sent.add(body)
        to_broker[str(receipt.message_queue).split(".")[0]] += 1  # "<broker>.<topic>.<queue>"
    print(f"sent {count} messages to {topic} in {time.time() - started:.2f} s; by broker group: {dict(to_broker)}",
          flush=True)
    producer.shutdown()

    consumer = SimpleConsumer(config, f"smoke-{run}", {topic: FilterExpression("smoke")}, await_duration=5)
    consumer.startup()
    got, from_endpoint = set(), Counter()
    deadline = time.time() + 60
    while got != sent and time.time() < deadline:
        for m in consumer.receive(16, 15):
            body = bytes(m.body).decode()
            if not body.startswith(f"smoke-{run}-"):
                continue
            if body in got:
                sys.exit(f"FAIL: {body} delivered twice after its ack")
            got.add(body)
            from_endpoint[str(m.endpoints)] += 1
            consumer.ack(m)
    consumer.shutdown()
    print(f"received and acked {len(got)} of {count}; by endpoint: {dict(from_endpoint)}", flush=True)
    if got != sent:
        sys.exit(f"FAIL: {len(sent - got)} messages not received within 60 s: {sorted(sent - got)[:5]} ...")
    print("OK", flush=True)


if __name__ == "__main__":
    main()
