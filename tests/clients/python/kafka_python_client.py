#!/usr/bin/env python3
"""kafka-python (a pure-Python client) against Freshet."""
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

import common


def produce(a):
    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, request_timeout_ms=30000)
    admin.create_topics([NewTopic(a.topic, num_partitions=common.PARTITIONS, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=a.bootstrap, acks="all", linger_ms=5, retries=5)
    futures = []
    for r in common.expected(a.client, a.count):
        futures.append(producer.send(a.topic, key=r["key"], value=r["value"], partition=r["partition"], headers=r["headers"]))
    producer.flush(30)
    acked = {(f.get(timeout=30).partition, f.get(timeout=30).offset) for f in futures}
    if len(acked) != a.count:
        common.fail(f"{len(acked)} acknowledgements for {a.count} records")
    producer.close()
    print(f"ok: {a.count} records acknowledged")


def verify(a):
    consumer = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=None, enable_auto_commit=False)
    parts = [TopicPartition(a.topic, p) for p in range(common.PARTITIONS)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    got, end = [], common.deadline()
    while len(got) < a.count and time.time() < end:
        for tp, msgs in consumer.poll(timeout_ms=500).items():
            for m in msgs:
                got.append((m.partition, m.offset, m.key, m.value, list(m.headers)))
    extra = consumer.poll(timeout_ms=1000)
    if any(extra.values()):
        common.fail("extra records after the expected ones")
    consumer.close()
    common.check(got, a.client, a.count)


if __name__ == "__main__":
    a = common.args()
    produce(a) if a.mode == "produce" else verify(a)
