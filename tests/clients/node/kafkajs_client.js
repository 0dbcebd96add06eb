#!/usr/bin/env node
// kafkajs (a pure JavaScript client) against Freshet.
//   produce: create the topic (3 partitions), write the records with acks=all.
//   verify:  read every partition from the beginning and check the records exactly.
// kafkajs consumes only through a consumer group, so verify also exercises the group APIs.
const { Kafka, logLevel } = require("kafkajs");

const PARTITIONS = 3;
const [mode, ...rest] = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = rest.indexOf(`--${name}`);
  return i >= 0 ? rest[i + 1] : dflt;
};
const bootstrap = opt("bootstrap");
const topic = opt("topic");
const count = parseInt(opt("count", "300"), 10);
const client = opt("client", "kafkajs");

function expected() {
  const out = [];
  for (let i = 0; i < count; i++) {
    out.push({
      partition: i % PARTITIONS,
      key: `key-${i}`,
      value: `${client}-value-${i}-${"x".repeat(i % 40)}`,
      headers: { seq: String(i), client },
    });
  }
  return out;
}

async function produce(kafka) {
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }], waitForLeaders: true });
  if (!created) throw new Error("topic was not created");
  await admin.disconnect();
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  let acked = 0;
  const records = expected();
  // Send in chunks of 50 records, each chunk one request per partition, acks=all.
  for (let i = 0; i < records.length; i += 50) {
    const chunk = records.slice(i, i + 50);
    const result = await producer.send({ topic, acks: -1, messages: chunk });
    for (const r of result) {
      if (r.errorCode !== 0) throw new Error(`partition ${r.partition}: error ${r.errorCode}`);
    }
    acked += chunk.length;
  }
  await producer.disconnect();
  if (acked !== count) throw new Error(`${acked} acknowledged of ${count}`);
  console.log(`ok: ${count} records acknowledged`);
}

async function verify(kafka) {
  const consumer = kafka.consumer({ groupId: `verify-${topic}`, maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${got.length} of ${count} records before the deadline`)), 60000);
    consumer
      .run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          got.push({ partition, offset: Number(message.offset), key: message.key.toString(), value: message.value.toString(), headers: message.headers });
          if (got.length >= count) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  const want = expected();
  for (let p = 0; p < PARTITIONS; p++) {
    const recs = got.filter((r) => r.partition === p).sort((a, b) => a.offset - b.offset);
    const sent = want.filter((w) => w.partition === p);
    if (recs.length !== sent.length) throw new Error(`partition ${p}: ${recs.length} records, expected ${sent.length}`);
    recs.forEach((r, i) => {
      const w = sent[i];
      if (r.offset !== i || r.key !== w.key || r.value !== w.value) throw new Error(`partition ${p} offset ${r.offset}: mismatch`);
      if (r.headers.seq.toString() !== w.headers.seq || r.headers.client.toString() !== client) throw new Error(`partition ${p} offset ${r.offset}: headers`);
    });
  }
  console.log(`ok: ${count} records verified exactly`);
}

const kafka = new Kafka({ clientId: "freshet-check", brokers: [bootstrap], logLevel: logLevel.WARN, retry: { retries: 5 } });
(mode === "produce" ? produce(kafka) : verify(kafka)).catch((e) => {
  console.error(`FAIL: ${e.stack || e}`);
  process.exit(1);
});
