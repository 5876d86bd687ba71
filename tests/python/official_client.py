"""Drives the official RocketMQ 5 Python client (rocketmq-python-client) against a running
raftmq group: Producer send, SimpleConsumer receive/ack, tag and SQL92 filtering, delay
messages, transactions with check-back, FIFO consumption, push consumers sharing a topic's
queues and taking over when one leaves, and a FIFO push consumer's dead letter.

Usage: python official_client.py <endpoints> [topic-suffix]
Exits non-zero, with the reason, when anything a user would notice goes wrong.
"""

import os
import subprocess
import sys
import threading
import time
import uuid

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials,
                      FilterExpression, Message, MessageListener, Producer,
                      PushConsumer, SimpleConsumer, TransactionChecker,
                      TransactionResolution)
from rocketmq.grpc_protocol import FilterType


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


def receive_all(consumer, want, deadline_s):
    """Receives and acks until `want` messages (by body) arrived or the deadline passes."""
    got = {}
    deadline = time.time() + deadline_s
    while len(got) < want and time.time() < deadline:
        for m in consumer.receive(16, 15):
            body = bytes(m.body).decode()
            if body in got:
                fail(f"message {body!r} delivered twice after its ack")
            got[body] = m.tag
            consumer.ack(m)
    return got


class CommitOrphans(TransactionChecker):
    """Commits what the broker checks back, and remembers what it was asked about."""

    def __init__(self):
        self.checked = []

    def check(self, message):
        self.checked.append(bytes(message.body).decode())
        return TransactionResolution.COMMIT


class Recorder(MessageListener):
    """A push consumer's listener: records each body it consumes; fails those in `fail`."""

    def __init__(self, fail=()):
        self.got = []
        self.fail = set(fail)
        self.lock = threading.Lock()

    def consume(self, message):
        body = bytes(message.body).decode()
        with self.lock:
            self.got.append(body)
        return ConsumeResult.FAILURE if body in self.fail else ConsumeResult.SUCCESS

    def bodies(self):
        with self.lock:
            return list(self.got)


def wait_until(what, deadline_s, done):
    deadline = time.time() + deadline_s
    while not done():
        if time.time() > deadline:
            fail(f"{what}: not within {deadline_s} s")
        time.sleep(0.1)


def send_bodies(producer, topic, bodies, group=None):
    for body in bodies:
        m = Message()
        m.topic = topic
        m.body = body.encode()
        if group:
            m.message_group = group
        producer.send(m)


def push_consumers(config, endpoints, suffix, mqadmin):
    """Two push consumers share a topic's queues; when one shuts down the other takes its
    queues and receives everything sent after. A FIFO push consumer whose listener keeps
    failing a message forwards it to the dead-letter topic and goes on with the next."""
    topic, group = f"pypush-{suffix}", f"group-push-{suffix}"
    producer = Producer(config, (topic,))
    producer.startup()
    first, second = Recorder(), Recorder()
    sub = {topic: FilterExpression("*")}
    c1 = PushConsumer(config, group, first, sub, consumption_thread_count=2)
    c1.startup()
    c2 = PushConsumer(config, group, second, sub, consumption_thread_count=2)
    c2.startup()
    # A trickle of messages: the first consumer may hold every queue until its next
    # assignment query (every 5 s); from then on the two share them.
    batch1 = []
    deadline = time.time() + 40
    while not (first.bodies() and second.bodies()) or len(batch1) < 40:
        if time.time() > deadline:
            fail(f"push: the consumers did not share the queues: {len(first.bodies())} and {len(second.bodies())}")
        body = f"p1-{len(batch1)}"
        send_bodies(producer, topic, [body])
        batch1.append(body)
        time.sleep(0.1)
    wait_until(f"push consumers receive the first {len(batch1)}", 60,
               lambda: set(batch1) <= set(first.bodies()) | set(second.bodies()))
    print(f"push consumers: {len(batch1)} messages shared {len(first.bodies())} / {len(second.bodies())}",
          flush=True)
    c2.shutdown()
    left = time.time()
    batch2 = [f"p2-{i}" for i in range(20)]
    send_bodies(producer, topic, batch2)
    wait_until("the remaining push consumer receives all sent after the other left", 60,
               lambda: set(batch2) <= set(first.bodies()))
    print(f"push consumers: after one left the other received all 20 new messages in {time.time() - left:.1f} s",
          flush=True)
    total = first.bodies() + second.bodies()
    if len(total) != len(set(total)):
        fail("push: a message consumed successfully was delivered again")
    c1.shutdown()
    producer.shutdown()

    if not mqadmin:
        return
    topic, group = f"pypushfifo-{suffix}", f"group-pushfifo-{suffix}"
    out = subprocess.run([mqadmin, "--endpoints", endpoints, "group", "update", group, "--fifo", "true",
                          "--max-attempts", "2"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        fail(f"mqadmin group update failed: {out.stdout}{out.stderr}")
    producer = Producer(config, (topic,))
    producer.startup()
    send_bodies(producer, topic, ["f/0", "f/1", "f/2"], group="order-f")
    listener = Recorder(fail=("f/1",))
    fifo = PushConsumer(config, group, listener, {topic: FilterExpression("*")}, consumption_thread_count=2)
    fifo.startup()
    wait_until("the FIFO push consumer goes past its failing message", 90, lambda: "f/2" in listener.bodies())
    if listener.bodies() != ["f/0", "f/1", "f/1", "f/2"]:
        fail(f"FIFO push: expected f/0, f/1 twice (max attempts 2), then f/2; got {listener.bodies()}")
    fifo.shutdown()
    out = subprocess.run([mqadmin, "--endpoints", endpoints, "dlq", "list", group],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0 or "f/1" not in out.stdout:
        fail(f"FIFO push: f/1 is not in the dead letters: {out.stdout}{out.stderr}")
    print("FIFO push consumer: f/0, f/1 failed twice and forwarded to the dead-letter topic, then f/2", flush=True)
    producer.shutdown()


def main():
    endpoints = sys.argv[1]
    suffix = sys.argv[2] if len(sys.argv) > 2 else uuid.uuid4().hex[:8]
    topic = f"pytopic-{suffix}"
    config = ClientConfiguration(endpoints, Credentials())

    producer = Producer(config, (topic,))
    producer.startup()
    sent = {}
    for i in range(20):
        msg = Message()
        msg.topic = topic
        msg.body = f"body-{i}".encode()
        msg.tag = "TagA" if i % 2 == 0 else "TagB"
        msg.keys = f"key-{i}"
        msg.add_property("n", str(i))
        receipt = producer.send(msg)
        if not receipt.message_id:
            fail(f"send {i} returned no message id")
        sent[f"body-{i}"] = msg.tag
    print(f"sent {len(sent)} messages to {topic}", flush=True)

    # Delay messages (delivery_timestamp in ms, and in seconds as the client's examples once
    # showed) become visible once each, never before their time.
    delay_topic = f"pydelay-{suffix}"
    delay_producer = Producer(config, (delay_topic,))
    delay_producer.startup()
    due = {}
    for unit, at in (("ms", int(time.time() * 1000) + 3_000), ("s", int(time.time()) + 4)):
        later = Message()
        later.topic = delay_topic
        later.body = f"later-{unit}".encode()
        later.delivery_timestamp = at
        delay_producer.send(later)
        due[f"later-{unit}"] = at / 1000 if unit == "ms" else at
    delayed = SimpleConsumer(config, f"group-delay-{suffix}", {delay_topic: FilterExpression("*")}, await_duration=5)
    delayed.startup()
    seen = {}
    deadline = time.time() + 60
    while len(seen) < len(due) and time.time() < deadline:
        for m in delayed.receive(16, 15):
            body = bytes(m.body).decode()
            if body in seen:
                fail(f"delay message {body!r} delivered twice")
            seen[body] = time.time()
            delayed.ack(m)
    if set(seen) != set(due):
        fail(f"delay messages: expected {sorted(due)}, got {sorted(seen)}")
    for body, at in seen.items():
        if at < due[body]:
            fail(f"delay message {body!r} delivered {due[body] - at:.3f} s before its time")
    print("delay messages: " + ", ".join(f"{b} {seen[b] - due[b]:.3f} s after its time" for b in sorted(seen)),
          flush=True)
    delayed.shutdown()
    delay_producer.shutdown()

    # Transactions: a committed half message is delivered, a rolled-back one never; one left
    # open is checked back over the producer's Telemetry stream and its checker commits it.
    tx_topic = f"pytx-{suffix}"
    checker = CommitOrphans()
    tx_producer = Producer(config, (tx_topic,), checker)
    tx_producer.startup()
    for body, end in (("tx-commit", "commit"), ("tx-rollback", "rollback"), ("tx-orphan", None)):
        half = Message()
        half.topic = tx_topic
        half.body = body.encode()
        transaction = tx_producer.begin_transaction()
        tx_producer.send(half, transaction)
        if end == "commit":
            transaction.commit()
        elif end == "rollback":
            transaction.rollback()
    tx_consumer = SimpleConsumer(config, f"group-tx-{suffix}", {tx_topic: FilterExpression("*")}, await_duration=5)
    tx_consumer.startup()
    got = receive_all(tx_consumer, 2, 60)
    if set(got) != {"tx-commit", "tx-orphan"}:
        fail(f"transactions: expected tx-commit and tx-orphan (after its check-back), got {sorted(got)}")
    if checker.checked != ["tx-orphan"]:
        fail(f"transactions: the broker checked back {checker.checked}, expected only the orphan")
    late = tx_consumer.receive(16, 3)
    if late:
        fail(f"transactions: a rolled-back or repeated message was delivered: {[bytes(m.body) for m in late]}")
    print("transactions: commit delivered, rollback never, the orphan committed by its check-back", flush=True)
    tx_consumer.shutdown()
    tx_producer.shutdown()

    # FIFO: a consumer group configured for orderly consumption gets each message group in
    # send order, one message of a group at a time.
    mqadmin = os.environ.get("RAFTMQ_MQADMIN")
    if mqadmin:
        fifo_topic, fifo_group = f"pyfifo-{suffix}", f"group-fifo-{suffix}"
        out = subprocess.run([mqadmin, "--endpoints", endpoints, "group", "update", fifo_group, "--fifo", "true"],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            fail(f"mqadmin group update --fifo true failed: {out.stdout}{out.stderr}")
        fifo_producer = Producer(config, (fifo_topic,))
        fifo_producer.startup()
        for i in range(5):
            for g in ("a", "b"):
                m = Message()
                m.topic = fifo_topic
                m.body = f"{g}/{i}".encode()
                m.message_group = f"order-{g}"
                fifo_producer.send(m)
        fifo_consumer = SimpleConsumer(config, fifo_group, {fifo_topic: FilterExpression("*")}, await_duration=5)
        fifo_consumer.startup()
        expected = {"a": 0, "b": 0}
        deadline = time.time() + 60
        while min(expected.values()) < 5 and time.time() < deadline:
            in_batch = set()
            for m in fifo_consumer.receive(16, 15):
                g, i = bytes(m.body).decode().split("/")
                if g in in_batch:
                    fail(f"FIFO: two messages of group {g} in flight at once")
                in_batch.add(g)
                if int(i) != expected[g]:
                    fail(f"FIFO: group {g} delivered {i} when {expected[g]} was next")
                fifo_consumer.ack(m)
                expected[g] = int(i) + 1
        if min(expected.values()) < 5:
            fail(f"FIFO: not every message arrived in time: next expected {expected}")
        print("FIFO: both message groups received in order, one message of a group at a time", flush=True)
        fifo_consumer.shutdown()
        fifo_producer.shutdown()

    # A consumer group that takes TagA only sees the even messages.
    only_a = SimpleConsumer(config, f"group-a-{suffix}", {topic: FilterExpression("TagA")}, await_duration=5)
    only_a.startup()
    got = receive_all(only_a, 10, 60)
    want_a = {b for b, t in sent.items() if t == "TagA"}
    if set(got) != want_a:
        fail(f"tag filter: expected {sorted(want_a)}, got {sorted(got)}")
    if any(t != "TagA" for t in got.values()):
        fail(f"tag filter delivered other tags: {got}")
    print("tag filter: received exactly the 10 TagA messages", flush=True)

    # SQL92 over user properties and the tag: n > 10 AND TAGS = 'TagA' is 12, 14, 16, 18.
    sql = SimpleConsumer(config, f"group-sql-{suffix}",
                         {topic: FilterExpression("n > 10 AND TAGS = 'TagA'", FilterType.SQL)}, await_duration=5)
    sql.startup()
    got = receive_all(sql, 4, 60)
    if set(got) != {"body-12", "body-14", "body-16", "body-18"}:
        fail(f"SQL92 filter: expected body-12, -14, -16, -18, got {sorted(got)}")
    print("SQL92 filter: received exactly the 4 messages with n > 10 and tag TagA", flush=True)
    sql.shutdown()
    bad = SimpleConsumer(config, f"group-badsql-{suffix}",
                         {topic: FilterExpression("n > ", FilterType.SQL)}, await_duration=5)
    bad.startup()
    try:
        bad.receive(16, 15)
        fail("a receive with a malformed SQL92 filter was not refused")
    except Exception as e:  # the client raises its own exception type for the status
        if "column" not in str(e):
            fail(f"a malformed SQL92 filter was refused without saying where: {e}")
        print(f"malformed SQL92 filter refused: {e}", flush=True)
    bad.shutdown()

    # A second group receives everything; after acks nothing comes back.
    everyone = SimpleConsumer(config, f"group-all-{suffix}", {topic: FilterExpression("*")}, await_duration=5)
    everyone.startup()
    got = receive_all(everyone, 20, 60)
    if set(got) != set(sent):
        fail(f"expected all {len(sent)} messages, got {len(got)}: missing {sorted(set(sent) - set(got))}")
    print("simple consumer: received and acked all 20 messages", flush=True)

    # The broker knows its live clients: `mqadmin group clients` lists this consumer.
    mqadmin = os.environ.get("RAFTMQ_MQADMIN")
    if mqadmin:
        out = subprocess.run([mqadmin, "--endpoints", endpoints, "group", "clients", f"group-all-{suffix}"],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0 or "SIMPLE_CONSUMER" not in out.stdout or "PYTHON" not in out.stdout:
            fail(f"mqadmin group clients did not list the Python simple consumer: {out.stdout}{out.stderr}")
        print("mqadmin group clients lists the Python simple consumer", flush=True)
    again = everyone.receive(16, 15)
    if again:
        fail(f"acked messages were delivered again: {[bytes(m.body) for m in again]}")
    print("no redelivery after ack", flush=True)

    everyone.shutdown()
    only_a.shutdown()
    producer.shutdown()

    push_consumers(config, endpoints, suffix, mqadmin)
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
