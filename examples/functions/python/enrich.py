#!/usr/bin/env python3
"""A Freshet process function (stdlib only): adds "processed_by": "python" to each event's JSON value.

Protocol (docs/functions-protocols.md): one JSON line per batch on stdin,
    {"id": N, "events": [{"topic", "partition", "offset", "timestamp", "key", "value", "headers"}]}
one JSON line per batch on stdout,
    {"id": N, "outputs": [{"key", "value", "headers"}], "failed": [{"index", "error"}]}
or {"id": N, "error": "..."} to fail the whole batch. Bytes are JSON strings when they are UTF-8,
{"base64": "..."} when they are not, null when absent.

What this example does with each event's value:
- not JSON (or absent): the event fails ("failed"); the rest of the batch goes on;
- a JSON object with "fail_batch": true: the whole batch fails ("error");
- a JSON object with "print": text: the function print()s text: a stray stdout line, which the
  host writes to the function's log (so print() is harmless);
- any other JSON value: output with the same key and headers, the value's object with
  "processed_by": "python" added (a value that is not an object is wrapped as {"value": ...}).
"""

import base64
import json
import sys


def decode(wire):
    """Wire bytes (str, {"base64": ...} or None) to bytes or None."""
    if wire is None:
        return None
    if isinstance(wire, dict):
        return base64.b64decode(wire["base64"])
    return wire.encode("utf-8")


def handle(batch):
    outputs, failed = [], []
    for index, event in enumerate(batch["events"]):
        raw = decode(event["value"])
        try:
            value = json.loads(raw.decode("utf-8")) if raw is not None else None
        except (UnicodeDecodeError, ValueError) as e:
            failed.append({"index": index, "error": f"value is not JSON: {e}"})
            continue
        if raw is None:
            failed.append({"index": index, "error": "no value"})
            continue
        if isinstance(value, dict) and value.get("fail_batch") is True:
            return {"id": batch["id"], "error": f"event {index} asked to fail the batch"}
        if isinstance(value, dict) and "print" in value:
            print(value["print"], flush=True)
        if not isinstance(value, dict):
            value = {"value": value}
        value["processed_by"] = "python"
        # Key and headers go back as they came (strings, base64 objects or nulls); the value
        # may be any JSON value: the host writes its JSON text.
        outputs.append({"key": event["key"], "value": value, "headers": event["headers"]})
    return {"id": batch["id"], "outputs": outputs, "failed": failed}


def main():
    print("enrich.py started", file=sys.stderr, flush=True)
    while True:
        line = sys.stdin.readline()
        if not line:
            return  # the host closed stdin: stop
        if not line.strip():
            continue
        batch = json.loads(line)
        reply = handle(batch)
        sys.stdout.write(json.dumps(reply, separators=(",", ":")) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
