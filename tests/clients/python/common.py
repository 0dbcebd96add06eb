"""Shared by the Python client checks: the records each client writes, and the check of what a
consumer read back. Every check runs in two modes against a running Freshet:

    produce  create the topic (3 partitions) with the client's admin API, write the records with
             acks=all and wait until every one is acknowledged
    verify   read every partition from the beginning and check the records exactly: content,
             keys, headers, order per partition, nothing missing, nothing extra
"""
import argparse
import sys
import time

PARTITIONS = 3
DEADLINE_S = 60


def args():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["produce", "verify"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--client", required=True, help="name written into values and headers")
    return p.parse_args()


def expected(client, count):
    """Record i goes to partition i % 3, with key key-i, a value naming the client, headers."""
    out = []
    for i in range(count):
        out.append(
            {
                "partition": i % PARTITIONS,
                "key": f"key-{i}".encode(),
                "value": f"{client}-value-{i}-{'x' * (i % 40)}".encode(),
                "headers": [("seq", str(i).encode()), ("client", client.encode())],
            }
        )
    return out


def check(got, client, count, headers=True):
    """got: list of (partition, offset, key, value, headers as list of (str, bytes))."""
    want = expected(client, count)
    if len(got) != count:
        fail(f"read {len(got)} records, expected {count}")
    by_partition = {}
    for rec in got:
        by_partition.setdefault(rec[0], []).append(rec)
    for p, recs in by_partition.items():
        recs.sort(key=lambda r: r[1])
        offsets = [r[1] for r in recs]
        if offsets != list(range(len(recs))):
            fail(f"partition {p}: offsets {offsets[:10]}... are not 0..{len(recs) - 1}")
        sent = [w for w in want if w["partition"] == p]
        if len(sent) != len(recs):
            fail(f"partition {p}: {len(recs)} records, expected {len(sent)}")
        for w, r in zip(sent, recs):
            if (r[2], r[3]) != (w["key"], w["value"]):
                fail(f"partition {p} offset {r[1]}: got {r[2]!r}/{r[3]!r}, expected {w['key']!r}/{w['value']!r}")
            if headers and list(r[4]) != w["headers"]:
                fail(f"partition {p} offset {r[1]}: headers {r[4]!r}, expected {w['headers']!r}")
    print(f"ok: {count} records verified exactly")


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def deadline():
    return time.time() + DEADLINE_S
