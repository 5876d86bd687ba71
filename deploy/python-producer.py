"""Closed-loop producers on the official RocketMQ 5 Python client (rocketmq-python-client
5.1.2), recording every send as `mqadmin bench produce --record` does, so that `mqadmin
check` judges a drill run with the official client as it judges one with ours.

Usage: python python-producer.py ENDPOINTS TOPIC RECORD [PRODUCERS] [BODY_SIZE]
  ENDPOINTS  host:port;host:port
  TOPIC      an existing topic
  RECORD     the record file to write (A and F lines, times in µs since the epoch)
  PRODUCERS  threads, each with its own Producer, each waiting for its ack (default 8)
  BODY_SIZE  bytes per body (default 1024)
Runs until SIGTERM or SIGINT, then lets the sends in flight finish and prints a summary.
"""

import signal
import sys
import threading
import time

from rocketmq import ClientConfiguration, Credentials, Message, Producer

M64 = (1 << 64) - 1


def pattern_body(producer: int, seq: int, size: int) -> bytes:
    """The body `mqadmin bench` sends: its name, then a pattern derived from both."""
    b = bytearray(f"p{producer}-s{seq}:".encode())
    x = ((producer << 40) ^ seq ^ 0x9E3779B97F4A7C15) & M64
    while len(b) < size:
        x ^= (x << 13) & M64
        x ^= x >> 7
        x ^= (x << 17) & M64
        b.append(ord("a") + x % 26)
    return bytes(b[: max(size, 1)])


def now_us() -> int:
    return time.time_ns() // 1000


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    endpoints, topic, record = sys.argv[1], sys.argv[2], sys.argv[3]
    producers = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 1024
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    out = open(record, "w", buffering=1 << 20)
    lock = threading.Lock()
    counts = {"acked": 0, "failed": 0}

    def write(line: str):
        with lock:
            out.write(line.replace("\n", " ")[:4096] + "\n")

    def run(p: int):
        producer = Producer(ClientConfiguration(endpoints, Credentials()), (topic,))
        producer.startup()
        seq = 0
        while not stop.is_set():
            m = Message()
            m.topic = topic
            m.body = pattern_body(p, seq, size)
            start = now_us()
            try:
                r = producer.send(m)
                # The receipt names the queue the client picked, but this client always picks
                # queue 0 and the broker spreads its sends (the answer does not say where): the
                # record claims no position ("-"), and the checker places the message by its
                # deliveries.
                queue = str(r.message_queue).rsplit(".", 1)[-1]
                write(f"A {start} {now_us()} {p} {seq} {queue} - {r.message_id}")
                with lock:
                    counts["acked"] += 1
            except Exception as e:  # the client's own retries are over: outcome unknown
                write(f"F {start} {now_us()} {p} {seq} {type(e).__name__}: {e}")
                with lock:
                    counts["failed"] += 1
            seq += 1
        producer.shutdown()

    threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in range(producers)]
    started = time.time()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
    out.close()
    print(f"python producers: acked {counts['acked']}, failed {counts['failed']} in {time.time() - started:.1f} s",
          flush=True)


if __name__ == "__main__":
    main()
