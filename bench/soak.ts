/**
 * `npm run bench -- soak`: RELIABILITY's L1, publish → consume at a steady rate for minutes, on
 * one transport, checking what a short benchmark cannot: that nothing accumulates.
 *
 * - `SOAK_BROKER`: `rabbitmq` (default, `RABBITMQ_URL`, in a vhost of its own), `redis`
 *   (`REDIS_URL`) or `memory`.
 * - `SOAK_RATE` (default 2,000 msg/s) single `Broker.publish`es, paced, each from its own fiber
 *   (independent producers); one subscription at concurrency 50. `SOAK_SECONDS` (default 300)
 *   in windows of `SOAK_WINDOW_SECONDS` (default 30).
 * - Per window: messages handled, publish → handler latency p50 / p99 of its messages, and the
 *   heap after a full GC at its end.
 * - Verdict (exit code 1 when it fails), over the windows after the first (warm-up): the heap of
 *   the last third grew under 10 % over the first third's (lowest of each: the floor GC returns
 *   to), the last third's median p99 is at most 1.5× the first third's plus 1 ms (no upward
 *   trend; a single slow window on this shared machine is not a trend), and every message
 *   published was handled exactly once.
 */
import { Context, Effect, Layer, Redacted, Runtime } from "effect"
import { createClient } from "redis"
import * as Broker from "../src/Broker.js"
import * as MemoryBroker from "../src/layers/MemoryBroker.js"
import * as RabbitMQBroker from "../src/layers/RabbitMQBroker.js"
import * as RedisBroker from "../src/layers/RedisBroker.js"
import { runId } from "../test/fixtures/env.js"
import { scopedVhost } from "./support/amqp.js"
import { deleteKeys } from "./support/redis.js"
import { log, paced, Payload, payload, percentile, print } from "./support/report.js"
import { arrivals, firstAndLast, heapAfterGcMiB, heapGrowthPct } from "./support/soak.js"

const BROKER = process.env["SOAK_BROKER"] ?? "rabbitmq"
const RATE = Number(process.env["SOAK_RATE"] ?? 2_000)
const SECONDS = Number(process.env["SOAK_SECONDS"] ?? 300)
const WINDOW_SECONDS = Number(process.env["SOAK_WINDOW_SECONDS"] ?? 30)
const CONCURRENCY = 50
const redisUrl = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379"
const prefix = `soak${runId}`
const group = "soak"

/** The broker layer of `SOAK_BROKER`, and what it leaves on the server, removed at the end. */
const brokerLayer = Effect.gen(function*() {
  switch (BROKER) {
    case "memory":
      return MemoryBroker.layer()
    case "redis":
      yield* Effect.addFinalizer(() =>
        Effect.promise(async () => {
          const client = await createClient({ url: redisUrl }).connect()
          await deleteKeys(client, `${prefix}:*`)
          client.destroy()
        })
      )
      return RedisBroker.layer({ url: Redacted.make(redisUrl), prefix })
    case "rabbitmq":
      return RabbitMQBroker.layer({ url: Redacted.make(yield* scopedVhost(`eb-soak-${runId}`)), prefix })
    default:
      return yield* Effect.dieMessage(`SOAK_BROKER must be rabbitmq, redis or memory, not ${BROKER}`)
  }
})

interface Window {
  readonly handled: number
  readonly p50: number
  readonly p99: number
  readonly heapMiB: number
}

const main = Effect.gen(function*() {
  const context = yield* Layer.build(yield* brokerLayer)
  const broker = Context.get(context, Broker.Broker)
  const topic = Broker.topic(`${prefix}.l1`, Payload)
  const arrived = arrivals(RATE * SECONDS)
  let current: Array<number> = []
  yield* broker.subscribe(topic, (p) =>
    Effect.sync(() => {
      current.push(performance.now() - p.sentAt)
      arrived.hit(p.amount)
    }), { group, concurrency: CONCURRENCY })

  const run = Runtime.runFork(yield* Effect.runtime<never>())
  let failedPublishes = 0
  const publishOne = (n: number) =>
    run(
      broker.publish(topic, { ...payload(n, performance.now()), amount: n }).pipe(
        Effect.catchAll(() =>
          Effect.sync(() => {
            failedPublishes++
          })
        )
      )
    )

  const windows: Array<Window> = []
  const started = performance.now()
  let sent = 0
  for (let w = 0; w < Math.ceil(SECONDS / WINDOW_SECONDS); w++) {
    const count = RATE * (Math.min(SECONDS, (w + 1) * WINDOW_SECONDS) - w * WINDOW_SECONDS)
    const from = sent
    yield* Effect.promise(() => paced((n) => publishOne(from + n), count, RATE))
    sent += count
    const latencies = current.sort((a, b) => a - b)
    current = []
    const heapMiB = heapAfterGcMiB()
    const window = {
      handled: latencies.length,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      heapMiB
    }
    windows.push(window)
    log(
      `window ${w} (${((performance.now() - started) / 1000).toFixed(0)} s): handled ${window.handled}, p50 ${
        window.p50.toFixed(2)
      } ms, p99 ${window.p99.toFixed(2)} ms, heap after GC ${heapMiB.toFixed(1)} MiB`
    )
  }
  // The last messages: give them a moment to arrive before counting.
  for (let wait = 0; wait < 100 && arrived.counts.handled < sent - failedPublishes; wait++) {
    yield* Effect.sleep("100 millis")
  }
  const { duplicates, handled } = arrived.counts

  const heapGrowth = heapGrowthPct(windows)
  const p99 = firstAndLast(windows, (w) => w.p99)
  const heapOk = heapGrowth < 10
  const latencyOk = p99.last <= p99.first * 1.5 + 1
  const countOk = handled === sent - failedPublishes && duplicates === 0 && failedPublishes === 0
  print(`soak.${BROKER}.published`, sent, "msgs")
  print(`soak.${BROKER}.handled`, handled, "msgs")
  print(`soak.${BROKER}.duplicates`, duplicates, "msgs")
  print(`soak.${BROKER}.failed_publishes`, failedPublishes, "msgs")
  print(`soak.${BROKER}.heap_growth_pct`, heapGrowth, "%")
  print(`soak.${BROKER}.p99_first_third_ms`, p99.first, "ms")
  print(`soak.${BROKER}.p99_last_third_ms`, p99.last, "ms")
  print(`soak.${BROKER}.pass`, heapOk && latencyOk && countOk ? 1 : 0, "(1 = pass)")
  if (!(heapOk && latencyOk && countOk)) {
    log(
      `soak failed: heap ${heapOk ? "ok" : "grew"}, p99 ${latencyOk ? "ok" : "rose"}, count ${countOk ? "ok" : "off"}`
    )
    process.exitCode = 1
  }
})

await Effect.runPromise(Effect.scoped(main).pipe(Effect.orDie))
