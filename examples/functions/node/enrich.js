#!/usr/bin/env node
// A Freshet process function (no npm dependencies): adds "processed_by": "node" to each event's
// JSON value. The same function as examples/functions/python/enrich.py; the protocol is in
// docs/functions-protocols.md and summarized in README.md beside this file.
//
// What it does with each event's value:
// - not JSON (or absent): the event fails ("failed"); the rest of the batch goes on;
// - a JSON object with "fail_batch": true: the whole batch fails ("error");
// - a JSON object with "print": text: console.log(text), a stray stdout line that the host
//   writes to the function's log;
// - any other JSON value: output with the same key and headers, the value's object with
//   "processed_by": "node" added (a value that is not an object is wrapped as {"value": ...}).
"use strict";

const readline = require("readline");

// Wire bytes (a string, {"base64": "..."} or null) to a Buffer or null.
function decode(wire) {
  if (wire === null || wire === undefined) return null;
  if (typeof wire === "object") return Buffer.from(wire.base64, "base64");
  return Buffer.from(wire, "utf8");
}

function handle(batch) {
  const outputs = [];
  const failed = [];
  for (let index = 0; index < batch.events.length; index++) {
    const event = batch.events[index];
    const raw = decode(event.value);
    if (raw === null) {
      failed.push({ index, error: "no value" });
      continue;
    }
    let value;
    try {
      value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(raw));
    } catch (e) {
      failed.push({ index, error: `value is not JSON: ${e.message}` });
      continue;
    }
    const isObject = value !== null && typeof value === "object" && !Array.isArray(value);
    if (isObject && value.fail_batch === true) {
      return { id: batch.id, error: `event ${index} asked to fail the batch` };
    }
    if (isObject && "print" in value) console.log(String(value.print));
    if (!isObject) value = { value };
    value.processed_by = "node";
    outputs.push({ key: event.key, value, headers: event.headers });
  }
  return { id: batch.id, outputs, failed };
}

console.error("enrich.js started");
const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", (line) => {
  if (!line.trim()) return;
  const reply = handle(JSON.parse(line));
  process.stdout.write(JSON.stringify(reply) + "\n");
});
lines.on("close", () => process.exit(0));
