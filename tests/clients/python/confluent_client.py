#!/usr/bin/env python3
"""confluent-kafka (the wheel's bundled, current librdkafka) against Freshet."""
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import common


def produce(a):
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(a.topic, num_partitions=common.PARTITIONS, replication_factor=1)])[a.topic].result(30)
    producer = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": 5})
    errors, acked = [], []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.append((msg.partition(), msg.offset()))

    for r in common.expected(a.client, a.count):
        producer.produce(a.topic, key=r["key"], value=r["value"], partition=r["partition"], headers=r["headers"], on_delivery=on_delivery)
        producer.poll(0)
    if producer.flush(30) != 0 or errors:
        common.fail(f"not acknowledged: {errors}")
    if len(set(acked)) != a.count:
        common.fail(f"{len(acked)} acknowledgements for {a.count} records")
    print(f"ok: {a.count} records acknowledged")


def verify(a):
    consumer = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "freshet-verify", "enable.auto.commit": False})
    consumer.assign([TopicPartition(a.topic, p, OFFSET_BEGINNING) for p in range(common.PARTITIONS)])
    got, end = [], common.deadline()
    while len(got) < a.count and time.time() < end:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            common.fail(f"consume error: {msg.error()}")
        got.append((msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers() or []))
    extra = consumer.poll(1.0)
    if extra is not None and not extra.error():
        common.fail(f"an extra record at {extra.partition()}-{extra.offset()}")
    consumer.close()
    common.check(got, a.client, a.count)


if __name__ == "__main__":
    a = common.args()
    produce(a) if a.mode == "produce" else verify(a)
