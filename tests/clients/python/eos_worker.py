#!/usr/bin/env python3
"""Consume-transform-produce, exactly once (confluent-kafka transactions).

Reads --input as a member of --group with isolation.level=read_committed, and for every input
record writes "out-<value>" to --output; the output records and the input offsets are committed
in one transaction (send_offsets_to_transaction). Killed at any moment and restarted with the
same transactional id, the open transaction is aborted and work resumes at the committed input
offsets, so every input record appears in the committed output exactly once.
"""
import argparse
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer

p = argparse.ArgumentParser()
p.add_argument("--bootstrap", required=True)
p.add_argument("--input", required=True)
p.add_argument("--output", required=True)
p.add_argument("--group", required=True)
p.add_argument("--transactional-id", required=True)
p.add_argument("--batch", type=int, default=20)
a = p.parse_args()

consumer = Consumer({
    "bootstrap.servers": a.bootstrap,
    "group.id": a.group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "isolation.level": "read_committed",
    "session.timeout.ms": 6000,
})
producer = Producer({"bootstrap.servers": a.bootstrap, "transactional.id": a.transactional_id, "linger.ms": 5})
producer.init_transactions(30)
consumer.subscribe([a.input])
print("started", flush=True)
while True:
    msgs = consumer.consume(a.batch, 0.5)
    msgs = [m for m in msgs if not m.error()]
    if not msgs:
        continue
    producer.begin_transaction()
    for m in msgs:
        producer.produce(a.output, key=m.key(), value=b"out-" + m.value(), partition=m.partition())
    producer.send_offsets_to_transaction(consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30)
    producer.commit_transaction(30)
    print(f"committed {len(msgs)}", flush=True)
