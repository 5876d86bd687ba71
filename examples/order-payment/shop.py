"""The order -> payment example: an order service that writes an order to its own database
and sends a transactional message about it in one local transaction, and a payment
service that charges each order once.

The order service commits its local transaction first and the message after; if it dies
in between, the broker asks a live order service (check-back) whether the order exists,
and the answer comes from the database. The payment service charges idempotently by the
order id (the message key), so a message delivered twice charges once.
"""

import json
import sqlite3

from rocketmq import (ClientConfiguration, Credentials, FilterExpression, Message,
                      Producer, SimpleConsumer, TransactionChecker,
                      TransactionResolution)

TOPIC = "orders"
PAYMENT_GROUP = "payment-service"


def connect(path):
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    return db


class OrderService:
    """Places orders: a row in its database and a transactional message, both or neither."""

    class Checker(TransactionChecker):
        def __init__(self, db_path):
            self.db_path = db_path
            self.asked = []

        def check(self, message):
            order_id = next(iter(message.keys), "")
            self.asked.append(order_id)
            db = connect(self.db_path)
            try:
                found = db.execute("SELECT 1 FROM orders WHERE id = ?", (order_id,)).fetchone()
            finally:
                db.close()
            return TransactionResolution.COMMIT if found else TransactionResolution.ROLLBACK

    def __init__(self, endpoints, db_path):
        self.db = connect(db_path)
        self.db.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)")
        self.checker = OrderService.Checker(db_path)
        config = ClientConfiguration(endpoints, Credentials())
        self.producer = Producer(config, (TOPIC,), self.checker)
        self.producer.startup()

    def place(self, order_id, amount, valid=True, die_before_commit=None):
        """Places an order. An invalid one is rolled back (its message never reaches
        payment). `die_before_commit` is called after the local commit and before the
        message commit, to show what a crash there does."""
        message = Message()
        message.topic = TOPIC
        message.keys = order_id
        message.body = json.dumps({"order": order_id, "amount": amount}).encode()
        transaction = self.producer.begin_transaction()
        self.producer.send(message, transaction)
        self.db.execute("BEGIN")
        try:
            if not valid:
                raise ValueError(f"order {order_id} is invalid")
            self.db.execute("INSERT INTO orders (id, amount) VALUES (?, ?)", (order_id, amount))
            self.db.execute("COMMIT")
        except Exception:
            self.db.execute("ROLLBACK")
            transaction.rollback()
            return False
        if die_before_commit:
            die_before_commit()
        transaction.commit()
        return True

    def close(self):
        self.producer.shutdown()
        self.db.close()


class PaymentService:
    """Charges each order once, whatever the number of deliveries."""

    def __init__(self, endpoints, db_path):
        self.db = connect(db_path)
        self.db.execute("CREATE TABLE IF NOT EXISTS payments (order_id TEXT PRIMARY KEY, amount INTEGER NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS deliveries (order_id TEXT NOT NULL)")
        config = ClientConfiguration(endpoints, Credentials())
        self.consumer = SimpleConsumer(config, PAYMENT_GROUP, {TOPIC: FilterExpression("*")}, await_duration=5)
        self.consumer.startup()

    def poll(self, invisible_s=20, ack=True):
        """Takes what is there and charges it; returns the orders delivered."""
        delivered = []
        for message in self.consumer.receive(16, invisible_s):
            order = json.loads(bytes(message.body))
            self.db.execute("INSERT INTO deliveries (order_id) VALUES (?)", (order["order"],))
            # Idempotent by the order id: a second delivery charges nothing.
            self.db.execute("INSERT OR IGNORE INTO payments (order_id, amount) VALUES (?, ?)",
                            (order["order"], order["amount"]))
            delivered.append(order["order"])
            if ack:
                self.consumer.ack(message)
        return delivered

    def charged(self):
        return dict(self.db.execute("SELECT order_id, amount FROM payments").fetchall())

    def deliveries(self, order_id):
        return self.db.execute("SELECT COUNT(*) FROM deliveries WHERE order_id = ?", (order_id,)).fetchone()[0]

    def close(self):
        self.consumer.shutdown()
        self.db.close()
