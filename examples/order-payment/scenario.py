"""Runs the order -> payment story against a running raftmq group and checks it.

Usage: python scenario.py <endpoints> <work-dir>
1. An order placed normally is charged once.
2. The order service dies between its local commit and the message commit: the broker
   checks back with the order service that is running, which finds the order in its
   database and commits; the order is charged once.
3. An invalid order is rolled back: it never reaches payment.
4. The payment service takes an order and dies before acknowledging it: the order is
   delivered again and still charged once.
"""

import multiprocessing
import os
import sys
import time

from shop import OrderService, PaymentService


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


def crashing_order_service(endpoints, db_path, order_id):
    """Places an order and dies right after the local commit, before the message commit."""
    service = OrderService(endpoints, db_path)
    service.place(order_id, 42, die_before_commit=lambda: os._exit(3))


def until(what, deadline_s, check):
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        if check():
            return
    fail(f"{what}: not within {deadline_s} s")


def main():
    endpoints, work = sys.argv[1], sys.argv[2]
    orders_db, payments_db = os.path.join(work, "orders.db"), os.path.join(work, "payments.db")
    orders = OrderService(endpoints, orders_db)
    payments = PaymentService(endpoints, payments_db)

    # 1. A normal order.
    if not orders.place("order-1", 100):
        fail("order-1 was not placed")
    until("order-1 is charged", 30, lambda: payments.poll() and "order-1" in payments.charged())
    print("1. order-1 placed and charged", flush=True)

    # 2. The order service dies between its local commit and the message commit.
    # A process of its own (spawned: gRPC does not survive a fork).
    spawn = multiprocessing.get_context("spawn")
    crash = spawn.Process(target=crashing_order_service, args=(endpoints, orders_db, "order-2"))
    crash.start()
    crash.join(60)
    if crash.exitcode != 3:
        fail(f"the crashing order service exited with {crash.exitcode}, not at its crash point")
    started = time.time()
    until("order-2 is charged after a check-back", 90, lambda: payments.poll() is not None and "order-2" in payments.charged())
    if "order-2" not in orders.checker.asked:
        fail(f"the broker did not check order-2 back with the running order service (asked: {orders.checker.asked})")
    print(f"2. order-2: its service died before the message commit; the check-back committed it "
          f"({time.time() - started:.1f} s later) and it was charged", flush=True)

    # 3. An invalid order is rolled back.
    if orders.place("order-3", 7, valid=False):
        fail("the invalid order-3 was placed")

    # 4. The payment service takes order-4 and dies before acknowledging it.
    orders.place("order-4", 55)
    taken = []
    until("order-4 is delivered", 30, lambda: taken.extend(payments.poll(invisible_s=2, ack=False)) or "order-4" in taken)
    until("order-4 is delivered again", 30, lambda: payments.poll() is not None and payments.deliveries("order-4") >= 2)
    # Anything still to come (order-3 must not).
    for _ in range(3):
        payments.poll()
    charged = payments.charged()
    if charged != {"order-1": 100, "order-2": 42, "order-4": 55}:
        fail(f"charged {charged}, expected order-1, order-2 and order-4 once each and never order-3")
    if payments.deliveries("order-3"):
        fail("the rolled-back order-3 reached payment")
    print("3. order-3 was rolled back and never reached payment", flush=True)
    print(f"4. order-4 was delivered {payments.deliveries('order-4')} times and charged once", flush=True)
    payments.close()
    orders.close()
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
