/**
 * `npm run bench -- soak-outbox`: RELIABILITY's L2, the outbox under a steady write rate for
 * minutes with two dispatchers, on the local PostgreSQL and RabbitMQ.
 *
 * - 10 writers commit `Outbox.add` transactions at `SOAK_RATE` (default 1,000) events/s in all,
 *   for `SOAK_SECONDS` (default 300), in windows of `SOAK_WINDOW_SECONDS` (default 30). Two
 *   `PgOutbox.dispatcher`s with their defaults (dispatched rows kept 7 days: the table grows as
 *   it would in production) publish to RabbitMQBroker; one subscription counts what arrives.
 * - Per window: the dispatch lag (the oldest pending event's age, `Outbox.stats`, sampled every
 *   second; its maximum), add → handler latency p50 / p99, and the heap after a full GC.
 * - Verdict (exit code 1 when it fails): the lag stayed under 1 s in every window after the
 *   first (warm-up), the heap floor of the last third grew under 10 % over the first third's,
 *   and every event added was handled once.
 *
 * With `SOAK_BACKLOG=<n>` (RELIABILITY's O9 with 1,000,000) it measures a backlog instead: `n`
 * pending rows written in one statement, then drained by the same two dispatchers. Per
 * `SOAK_WINDOW_SECONDS` (default 10 here): rows dispatched, events handled, heap after GC.
 * Verdict: the heap floor stays flat as above (memory bounded by the batch, not the backlog),
 * the drain keeps going (the last third's rate at least half the first third's), and every
 * event was handled once.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Context, Duration, Effect, Fiber, Layer, Redacted, Schema } from "effect"
import * as Broker from "../src/Broker.js"
import * as PgOutbox from "../src/layers/PgOutbox.js"
import * as RabbitMQBroker from "../src/layers/RabbitMQBroker.js"
import * as Outbox from "../src/Outbox.js"
import { databaseUrl, runId } from "../test/fixtures/env.js"
import { scopedVhost } from "./support/amqp.js"
import { fillPending, OrderPlaced } from "./support/outbox.js"
import { log, percentile, print } from "./support/report.js"
import { arrivals, firstAndLast, heapAfterGcMiB, heapGrowthPct } from "./support/soak.js"

const RATE = Number(process.env["SOAK_RATE"] ?? 1_000)
const SECONDS = Number(process.env["SOAK_SECONDS"] ?? 300)
const BACKLOG = Number(process.env["SOAK_BACKLOG"] ?? 0)
const WINDOW_SECONDS = Number(process.env["SOAK_WINDOW_SECONDS"] ?? (BACKLOG > 0 ? 10 : 30))
const WRITERS = 10
const prefix = `soak${runId}`
const group = "soak"

const Event = Schema.Struct({ n: Schema.Number, addedAt: Schema.Number, note: Schema.String })
const topic = Broker.topic(`${prefix}.outbox`, Event)
const note = "x".repeat(120)

interface Window {
  readonly added: number
  readonly handled: number
  readonly maxLagMs: number
  readonly p50: number
  readonly p99: number
  readonly heapMiB: number
}

/** The outbox table, dropped at the end (the broker's queues go with their vhost). */
const cleanUp = Effect.addFinalizer(() =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.orDie(sql`drop table if exists ${sql(`${prefix}_outbox`)}`))
)

/**
 * The broker, `ready` run on it, then two dispatchers, each with its own pool, as two processes
 * would have.
 */
const dispatching = <E, R>(ready: (broker: Broker.Service) => Effect.Effect<void, E, R>) =>
  Effect.gen(function*() {
    const url = yield* scopedVhost(`eb-soak-outbox-${runId}`)
    const brokerContext = yield* Layer.build(RabbitMQBroker.layer({ url: Redacted.make(url), prefix }))
    yield* ready(Context.get(brokerContext, Broker.Broker))
    const dispatcher = (name: string) =>
      PgOutbox.dispatcher({ prefix }).pipe(
        Layer.provide(PgClient.layer({ url: Redacted.make(databaseUrl), applicationName: name }))
      )
    yield* Layer.build(
      Layer.mergeAll(dispatcher("eb-soak-dispatch-1"), dispatcher("eb-soak-dispatch-2")).pipe(
        Layer.provide(Layer.succeedContext(brokerContext))
      )
    )
    return Context.get(brokerContext, Broker.Broker)
  })

const steady = Effect.gen(function*() {
  const outbox = Context.get(yield* Layer.build(PgOutbox.layerStore({ prefix })), Outbox.Outbox)
  const broker = yield* dispatching(() => Effect.void)
  const sql = yield* SqlClient.SqlClient

  const total = RATE * SECONDS
  const arrived = arrivals(total)
  let current: Array<number> = []
  yield* broker.subscribe(topic, (event) =>
    Effect.sync(() => {
      current.push(performance.now() - event.addedAt)
      arrived.hit(event.n)
    }), { group, concurrency: 50 })

  let added = 0
  let addedInWindow = 0
  let maxLagMs = 0
  const started = performance.now()
  const deadline = started + SECONDS * 1000
  const writers = Effect.forEach(Array.from({ length: WRITERS }, (_, w) => w), (w) =>
    Effect.gen(function*() {
      for (let n = w; n < total; n += WRITERS) {
        const wait = started + (n * 1000) / RATE - performance.now()
        if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
        if (performance.now() >= deadline) return
        yield* sql.withTransaction(outbox.add(topic, { n, addedAt: performance.now(), note }))
        added++
        addedInWindow++
      }
    }), { concurrency: "unbounded", discard: true })
  const sampleLag = Effect.gen(function*() {
    const stats = yield* outbox.stats
    maxLagMs = Math.max(maxLagMs, stats.oldestPendingAgeMs)
  }).pipe(Effect.zipRight(Effect.sleep("1 second")), Effect.forever)
  const writing = yield* Effect.fork(writers)
  const sampling = yield* Effect.fork(sampleLag)

  const windows: Array<Window> = []
  for (let w = 0; w < Math.ceil(SECONDS / WINDOW_SECONDS); w++) {
    const windowEnd = started + Math.min(SECONDS, (w + 1) * WINDOW_SECONDS) * 1000
    yield* Effect.sleep(Duration.millis(Math.max(0, windowEnd - performance.now())))
    const latencies = current.sort((a, b) => a - b)
    current = []
    const window: Window = {
      added: addedInWindow,
      handled: latencies.length,
      maxLagMs,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      heapMiB: heapAfterGcMiB()
    }
    addedInWindow = 0
    maxLagMs = 0
    windows.push(window)
    log(
      `window ${w} (${
        ((performance.now() - started) / 1000).toFixed(0)
      } s): added ${window.added}, handled ${window.handled}, max lag ${window.maxLagMs} ms, p50 ${
        window.p50.toFixed(1)
      } ms, p99 ${window.p99.toFixed(1)} ms, heap after GC ${window.heapMiB.toFixed(1)} MiB`
    )
  }
  yield* Fiber.join(writing)
  yield* Fiber.interrupt(sampling)
  for (let wait = 0; wait < 300 && arrived.counts.handled < added; wait++) yield* Effect.sleep("100 millis")
  const { duplicates, handled } = arrived.counts

  const lagOk = windows.slice(1).every((w) => w.maxLagMs < 1000)
  const heapGrowth = heapGrowthPct(windows)
  const heapOk = heapGrowth < 10
  const countOk = handled === added && duplicates === 0
  const p99 = firstAndLast(windows, (w) => w.p99)
  print("soak.outbox.added", added, "events")
  print("soak.outbox.handled", handled, "events")
  print("soak.outbox.duplicates", duplicates, "events")
  print("soak.outbox.max_lag_ms", Math.max(...windows.slice(1).map((w) => w.maxLagMs)), "ms")
  print("soak.outbox.heap_growth_pct", heapGrowth, "%")
  print("soak.outbox.p99_first_third_ms", p99.first, "ms")
  print("soak.outbox.p99_last_third_ms", p99.last, "ms")
  print("soak.outbox.pass", lagOk && heapOk && countOk ? 1 : 0, "(1 = pass)")
  if (!(lagOk && heapOk && countOk)) {
    log(
      `soak failed: lag ${lagOk ? "ok" : "over 1 s"}, heap ${heapOk ? "ok" : "grew"}, count ${countOk ? "ok" : "off"}`
    )
    process.exitCode = 1
  }
})

const BacklogEvent = Broker.topic(`${prefix}.backlog`, OrderPlaced)

const backlog = Effect.gen(function*() {
  const outbox = Context.get(yield* Layer.build(PgOutbox.layerStore({ prefix })), Outbox.Outbox)
  const filling = performance.now()
  yield* fillPending(`${prefix}_outbox`, BACKLOG, BacklogEvent.name, note)
  log(`${BACKLOG} pending rows written in ${((performance.now() - filling) / 1000).toFixed(1)} s`)
  // Orders are numbered from 1.
  const arrived = arrivals(BACKLOG + 1)
  // The group exists before the dispatchers publish (or every event would be unroutable).
  const broker = yield* dispatching((broker) => broker.declare(BacklogEvent, { group }))
  yield* broker.subscribe(BacklogEvent, (order) => Effect.sync(() => arrived.hit(Number(order.orderId.slice(2)))), {
    group,
    concurrency: 50
  })
  const windows: Array<{ readonly rowsPerSecond: number; readonly handled: number; readonly heapMiB: number }> = []
  const started = performance.now()
  let pending = BACKLOG
  let windowStarted = started
  for (let w = 0; pending > 0 || arrived.counts.handled < BACKLOG; w++) {
    if (performance.now() - started > 1_200_000) {
      return yield* Effect.dieMessage("the backlog did not drain in 20 minutes")
    }
    yield* Effect.sleep(Duration.seconds(WINDOW_SECONDS))
    // Counting a million pending rows takes seconds itself: rates use the window's real length.
    const left = (yield* outbox.stats).pending
    const now = performance.now()
    const window = {
      rowsPerSecond: (pending - left) / ((now - windowStarted) / 1000),
      handled: arrived.counts.handled,
      heapMiB: heapAfterGcMiB()
    }
    pending = left
    windowStarted = now
    windows.push(window)
    log(
      `window ${w} (${((now - started) / 1000).toFixed(0)} s): dispatched ${
        window.rowsPerSecond.toFixed(0)
      }/s, handled ${window.handled} in all, heap after GC ${window.heapMiB.toFixed(1)} MiB`
    )
  }
  const seconds = (performance.now() - started) / 1000
  // Windows the drain ran through: not the last one that dispatched (it ran out of rows).
  const draining = windows.filter((w) => w.rowsPerSecond > 0).slice(0, -1)
  const rate = firstAndLast(draining, (w) => w.rowsPerSecond)
  const heapGrowth = heapGrowthPct(windows)
  const heapOk = heapGrowth < 10
  const steadyOk = rate.last >= rate.first / 2
  const { duplicates, handled } = arrived.counts
  const countOk = handled === BACKLOG && duplicates === 0
  print("soak.backlog.rows", BACKLOG, "events")
  print("soak.backlog.seconds_until_all_handled", seconds, "s")
  print("soak.backlog.first_third_rows_per_s", rate.first, "rows/s")
  print("soak.backlog.last_third_rows_per_s", rate.last, "rows/s")
  print("soak.backlog.duplicates", duplicates, "events")
  print("soak.backlog.heap_growth_pct", heapGrowth, "%")
  print("soak.backlog.pass", heapOk && steadyOk && countOk ? 1 : 0, "(1 = pass)")
  if (!(heapOk && steadyOk && countOk)) {
    log(
      `soak failed: heap ${heapOk ? "ok" : "grew"}, drain ${steadyOk ? "steady" : "slowed"}, count ${
        countOk ? "ok" : "off"
      }`
    )
    process.exitCode = 1
  }
})

await Effect.runPromise(
  Effect.scoped(Effect.zipRight(cleanUp, BACKLOG > 0 ? backlog : steady)).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(databaseUrl), applicationName: "eb-soak-writers" })),
    Effect.orDie
  )
)
