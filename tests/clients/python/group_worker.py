#!/usr/bin/env python3
"""A consumer group member (confluent-kafka) for the group tests.

Reads a topic as a member of a group, appends "partition offset value" to --out for every record
it processes, then commits that record's offset synchronously: a record is committed only after
it was processed, so none is lost when a member is killed. SIGTERM makes it leave the group
cleanly and exit.
"""
import argparse
import signal
import sys

from confluent_kafka import Consumer, KafkaException, TopicPartition

p = argparse.ArgumentParser()
p.add_argument("--bootstrap", required=True)
p.add_argument("--topic", required=True)
p.add_argument("--group", required=True)
p.add_argument("--protocol", choices=["classic", "consumer"], required=True)
p.add_argument("--out", required=True)
a = p.parse_args()

conf = {
    "bootstrap.servers": a.bootstrap,
    "group.id": a.group,
    "group.protocol": a.protocol,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
}
if a.protocol == "classic":
    conf.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "partition.assignment.strategy": "cooperative-sticky"})
consumer = Consumer(conf)
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
consumer.subscribe([a.topic])
out = open(a.out, "a", buffering=1)
print("started", flush=True)
while not stop:
    msg = consumer.poll(0.2)
    if msg is None:
        continue
    if msg.error():
        print(f"error: {msg.error()}", file=sys.stderr, flush=True)
        continue
    out.write(f"{msg.partition()} {msg.offset()} {msg.value().decode()}\n")
    try:
        consumer.commit(offsets=[TopicPartition(msg.topic(), msg.partition(), msg.offset() + 1)], asynchronous=False)
    except KafkaException as e:
        # A commit can fail while the group rebalances; the record may then be processed again
        # by the next owner (at least once), never lost.
        print(f"commit failed: {e}", file=sys.stderr, flush=True)
consumer.close()
out.close()
