/**
 * `npm run bench -- front`: the typed front's own CPU cost per message, over a transport that
 * does nothing (no I/O, no server): what `Broker.make` adds on top of any transport.
 *
 * - publish: `publishAll` of batches of 1,000 `Broker.entry`s (Schema encode, id, checks); the
 *   transport only calls `prepare` on each.
 * - consume: prebuilt deliveries of the same JSON handed to the front's `handle` one after
 *   another on one fiber (as a transport's worker does): decode, envelope, isolation, ack.
 *
 * Prints µs per message (median over rounds). For instruction counts run it under
 * `valgrind --tool=callgrind` twice with different BENCH_FRONT_N and divide the difference.
 * Env: BENCH_FRONT_N (default 200,000), BENCH_FRONT_ROUNDS (default 5), BENCH_FRONT_ONLY
 * (`publish` or `consume`), BENCH_FRONT_WARMUP (default 1: one unmeasured round first).
 */
import { Effect, Either } from "effect"
import * as Broker from "../src/Broker.js"
import * as BrokerTransport from "../src/BrokerTransport.js"
import { log, median, Payload, payload, print } from "./support/report.js"

const N = Number(process.env["BENCH_FRONT_N"] ?? 200_000)
const ROUNDS = Number(process.env["BENCH_FRONT_ROUNDS"] ?? 5)
const ONLY = process.env["BENCH_FRONT_ONLY"]
const WARMUP = process.env["BENCH_FRONT_WARMUP"] !== "0"
const BATCH = 1_000

const noHeaders: Readonly<Record<string, string>> = Object.freeze({})

// Messages and deliveries come from pools built once, so only the front's work grows with N
// (instruction counts are taken as the difference between two values of N).
const POOL = 1_000
const payloads = Array.from({ length: POOL }, (_, n) => payload(n))

const pool: ReadonlyArray<BrokerTransport.TransportDelivery> = Array.from({ length: POOL }, (_, n) => ({
  message: {
    routingKey: "front.bench",
    body: Buffer.from(JSON.stringify(payload(n))),
    headers: noHeaders,
    metadata: noHeaders,
    messageId: `0190d5c4-8d1e-7000-8000-${String(n).padStart(12, "0")}`,
    correlationId: undefined,
    publishedAt: 1_700_000_000_000 + n,
    priority: undefined,
    expiration: undefined,
    delay: undefined,
    persistent: true
  },
  attempt: 1,
  redelivered: false
}))

/** The deliveries of the last `consume` call: N from the pool, one after another. */
let consumed: Effect.Effect<void> = Effect.void

const transport: BrokerTransport.Transport = {
  capabilities: {
    name: "noop",
    delay: true,
    priority: true,
    expiration: true,
    wildcards: true,
    packedContentType: undefined,
    transient: true,
    redrive: false,
    maxMessageBytes: 1024 * 1024
  },
  publish: () => Effect.void,
  publishAll: (batch) => Effect.sync(() => BrokerTransport.mapBatch(batch, () => Either.void)),
  consume: (_subscription, handle) =>
    Effect.sync(() => {
      consumed = Effect.gen(function*() {
        for (let n = 0; n < N; n++) {
          const delivery = pool[n % POOL]
          if (delivery === undefined) continue
          const disposition = yield* handle(delivery)
          if (disposition._tag !== "Ack") return yield* Effect.dieMessage(`not acked: ${disposition._tag}`)
        }
      })
    }),
  health: Effect.succeed({ status: "up", connection: "open", consumers: 0, detail: "noop" })
}

const broker = Broker.make(transport)
const topic = Broker.topic("front.bench", Payload)

const publishRound = Effect.gen(function*() {
  const started = performance.now()
  for (let from = 0; from < N; from += BATCH) {
    const entries = Array.from(
      { length: Math.min(BATCH, N - from) },
      (_, i) => Broker.entry(topic, payloads[i % POOL] ?? payload(i))
    )
    const results = yield* broker.publishAll(entries, { window: BATCH })
    for (const result of results) if (Either.isLeft(result)) return yield* Effect.dieMessage("publish failed")
  }
  return ((performance.now() - started) * 1000) / N
})

let handled = 0
const consumeRound = Effect.scoped(Effect.gen(function*() {
  yield* broker.subscribe(topic, () =>
    Effect.sync(() => {
      handled++
    }), { group: "front-bench" })
  const started = performance.now()
  yield* consumed
  return ((performance.now() - started) * 1000) / N
}))

const main = Effect.gen(function*() {
  const publish: Array<number> = []
  const consume: Array<number> = []
  for (let round = WARMUP ? -1 : 0; round < ROUNDS; round++) {
    const p = ONLY === "consume" ? Number.NaN : yield* publishRound
    const c = ONLY === "publish" ? Number.NaN : yield* consumeRound
    if (round >= 0) {
      publish.push(p)
      consume.push(c)
    }
    log(`round ${round}: publish ${p.toFixed(2)} µs/msg, consume ${c.toFixed(2)} µs/msg`)
  }
  if (handled === 0 && ONLY !== "publish") return yield* Effect.dieMessage("no delivery was handled")
  if (ONLY !== "consume") print("front.publish_us_per_msg", median(publish), "µs")
  if (ONLY !== "publish") print("front.consume_us_per_msg", median(consume), "µs")
})

await Effect.runPromise(main)
