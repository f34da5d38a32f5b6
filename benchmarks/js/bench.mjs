// One nats.js measurement for `python -m benchmarks` (benchmarks/js_case.py).
//
// Usage: node bench.mjs '<job JSON>'   (or the job JSON on stdin)
//
// job: {"url": "nats://127.0.0.1:4222", "stream": "S", "consumer": "C", "subject": "S.m",
//       "mode": "consume_ack" | "consume_noack" | "publish", "count": 100000, "size": 128,
//       "window": 256, "max_messages": 100 (optional), "timeout": 60}
//
// Prints one JSON line: {"mode", "count", "size", "seconds", "rate"} (rate in msgs/s).
// Only the measured part is timed: node's start-up, connect and the consumer lookup are not.
//
// - consume_ack:   consumer.consume() (nats.js defaults unless max_messages is given),
//                  m.ack() per message; the clock runs from consume() until a flush after the
//                  count-th message, so that every ack has reached the server.
// - consume_noack: the same without acks (the consumer has AckPolicy none).
// - publish:       js.publish() of `count` messages of `size` bytes to `subject`, at most
//                  `window` PubAcks outstanding; the clock stops when every PubAck is in.
//
// The Python side creates the stream and the consumer and publishes the messages to consume.
// This file is copied next to the installed node_modules before it runs (see js_case.py).

import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";

function readJob() {
  const text = process.argv[2] ?? readFileSync(0, "utf8");
  const job = JSON.parse(text);
  for (const key of ["url", "mode", "count"]) {
    if (job[key] === undefined) throw new Error(`job lacks "${key}"`);
  }
  return job;
}

async function consume(nc, js, job, ack) {
  const consumer = await js.consumers.get(job.stream, job.consumer);
  const opts = job.max_messages ? { max_messages: job.max_messages } : undefined;
  let count = 0;
  const start = performance.now();
  const messages = await consumer.consume(opts);
  for await (const m of messages) {
    if (ack) m.ack();
    if (++count === job.count) break; // leaving the loop stops the consumer
  }
  await nc.flush(); // every ack has reached the server
  return [count, performance.now() - start];
}

async function publish(js, job) {
  const payload = new Uint8Array(job.size ?? 128).fill(0x78); // "x"
  const window = job.window ?? 256;
  const pending = new Array(job.count);
  const start = performance.now();
  for (let i = 0; i < job.count; i++) {
    if (i >= window) await pending[i - window]; // at most `window` PubAcks outstanding
    pending[i] = js.publish(job.subject, payload);
  }
  const acks = await Promise.all(pending);
  const elapsed = performance.now() - start;
  if (acks.length !== job.count || acks.some((a) => !a || a.seq === undefined)) {
    throw new Error(`expected ${job.count} PubAcks`);
  }
  return [acks.length, elapsed];
}

async function main() {
  const job = readJob();
  const timer = setTimeout(() => {
    console.error(`bench.mjs: ${job.mode} did not finish within ${job.timeout ?? 60} s`);
    process.exit(3);
  }, (job.timeout ?? 60) * 1000);
  const nc = await connect({ servers: job.url, name: `benchmarks-nats-js-${job.mode}` });
  try {
    const js = jetstream(nc);
    let count, ms;
    if (job.mode === "consume_ack") [count, ms] = await consume(nc, js, job, true);
    else if (job.mode === "consume_noack") [count, ms] = await consume(nc, js, job, false);
    else if (job.mode === "publish") [count, ms] = await publish(js, job);
    else throw new Error(`unknown mode ${job.mode}`);
    if (count !== job.count) throw new Error(`expected ${job.count} messages, got ${count}`);
    const seconds = ms / 1000;
    const result = { mode: job.mode, count, size: job.size ?? null, seconds, rate: count / seconds };
    process.stdout.write(JSON.stringify(result) + "\n");
  } finally {
    clearTimeout(timer);
    await nc.close();
  }
}

main().catch((err) => {
  console.error(`bench.mjs: ${err?.stack ?? err}`);
  process.exit(1);
});
