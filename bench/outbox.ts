/**
 * `npm run bench -- outbox`: the transactional outbox against the seed recipe and the raw
 * confirmed-publish ceiling, all in one run on the local PostgreSQL and RabbitMQ.
 *
 * - drain: 50,000 pending rows → rows/s for ours (PgOutbox dispatcher; also with `pack: 100`, opt-in), for the recipe (literal:
 *   every 5 s read 100 pending rows, publish each awaiting its confirm, mark them; measured over a
 *   bounded window) and raw amqplib confirmed publishes (window 1,000, persistent, same queue).
 * - latency: insert-commit → broker-confirm at 1,000 events/s (ours: dispatcher in the writer's
 *   process, and in another process woken by NOTIFY only; recipe at 10 events/s).
 * - insert rate: 10 writers doing domain row + event transactions, with our `add` vs the same
 *   transactions writing the same event row (a UUIDv7 id, as `add` writes) with no wake-up at all (and with a NOTIFY inside each
 *   transaction, the naive wake-up, for reference).
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import * as Amqp from "amqplib"
import { Context, Duration, Effect, Either, Fiber, Layer, Redacted, Schedule } from "effect"
import * as Pg from "pg"
import * as Broker from "../src/Broker.js"
import * as MessageId from "../src/internal/messageId.js"
import * as PgOutbox from "../src/layers/PgOutbox.js"
import * as RabbitMQBroker from "../src/layers/RabbitMQBroker.js"
import * as Outbox from "../src/Outbox.js"
import { databaseUrl, runId } from "../test/fixtures/env.js"
import { scopedVhost } from "./support/amqp.js"
import { fillPending, OrderPlaced } from "./support/outbox.js"
import { percentile } from "./support/report.js"

const DRAIN_EVENTS = 50_000
const CEILING_MESSAGES = 10_000
const CEILING_WINDOW = 1_000
const RTT_SAMPLES = 30
const LATENCY_RATE = 1_000
const LATENCY_SECONDS = 8
const RECIPE_WINDOW_SECONDS = 20
const RECIPE_LATENCY_RATE = 10
/** Events per broker message in the packed drain (`pack` dispatcher option). */
const PACK = 100
const INSERT_WRITERS = 10
const INSERT_SECONDS = 1
const INSERT_ROUNDS = 12

const line = (name: string, value: number, unit: string) =>
  Effect.sync(() => process.stdout.write(`${name}: ${Number.isInteger(value) ? value : value.toFixed(2)} ${unit}\n`))

const topic = Broker.topic("bench.order.placed", OrderPlaced)
const note = "x".repeat(120)
const message = (n: number) => ({ orderId: `o-${n}`, customer: `c-${n % 977}`, total: n % 10_000, note })
const group = "bench"
const brokerPrefix = "bench"

/** Wraps a broker to note when each message's confirm came back. */
const confirmTimes = (broker: Broker.Service) => {
  const confirmed = new Map<string, number>()
  const service: Broker.Service = {
    ...broker,
    publishAllEncoded: (entries, options) =>
      Effect.tap(broker.publishAllEncoded(entries, options), (results) =>
        Effect.sync(() => {
          const now = performance.now()
          results.forEach((result, i) => {
            const entry = entries[i]
            if (Either.isRight(result) && entry !== undefined) confirmed.set(entry.messageId, now)
          })
        }))
  }
  return { confirmed, service }
}

const tableOf = (prefix: string) => `${prefix}_outbox`

const fill = (prefix: string, n: number) => fillPending(tableOf(prefix), n, topic.name, note)

const noneLeft = (prefix: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ left: boolean }>`select exists (
      select 1 from ${sql(tableOf(prefix))} where state = 'pending'
    ) as left`
    return rows[0]?.left === false
  })

const countState = (prefix: string, state: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ n: string }>`select count(*) as n from ${sql(tableOf(prefix))} where state = ${state}`
    return Number(rows[0]?.n ?? 0)
  })

const waitFor = (
  label: string,
  check: Effect.Effect<boolean, unknown, SqlClient.SqlClient>,
  timeout: Duration.DurationInput
) =>
  Effect.gen(function*() {
    while (!(yield* check)) yield* Effect.sleep("20 millis")
  }).pipe(
    Effect.timeoutFail({ duration: timeout, onTimeout: () => new Error(`bench: timed out waiting for ${label}`) })
  )

const dropTable = (prefix: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.orDie(sql`drop table if exists ${sql(tableOf(prefix))}`))

// ---------------------------------------------------------------------------
// ceiling: raw amqplib confirmed publishes
// ---------------------------------------------------------------------------

const ceiling = (url: string) =>
  Effect.acquireUseRelease(
    Effect.tryPromise(() => Amqp.connect(url)),
    (connection) =>
      Effect.tryPromise(async () => {
        connection.on("error", (error) => process.stderr.write(`bench ceiling connection error: ${String(error)}\n`))
        const channel = await connection.createConfirmChannel()
        channel.on("error", (error) => process.stderr.write(`bench ceiling channel error: ${String(error)}\n`))
        const exchange = `${brokerPrefix}.topic`
        const body = Buffer.from(JSON.stringify(message(1)))
        let inFlight = 0
        let failed = 0
        let wake: (() => void) | undefined
        const started = performance.now()
        for (let i = 0; i < CEILING_MESSAGES; i++) {
          while (inFlight >= CEILING_WINDOW) await new Promise<void>((resolve) => (wake = resolve))
          inFlight++
          const writable = channel.publish(exchange, topic.name, body, {
            persistent: true,
            mandatory: true,
            messageId: `c${i}`,
            contentType: "application/json"
          }, (error) => {
            if (error !== null && error !== undefined) failed++
            inFlight--
            const resume = wake
            wake = undefined
            resume?.()
          })
          if (!writable) await new Promise<void>((resolve) => channel.once("drain", () => resolve()))
        }
        while (inFlight > 0) await new Promise<void>((resolve) => (wake = resolve))
        const seconds = (performance.now() - started) / 1000
        // One publish at a time: the broker's own confirm round trip, a floor for any latency.
        const roundTrips: Array<number> = []
        for (let i = 0; i < RTT_SAMPLES; i++) {
          const sent = performance.now()
          await new Promise<void>((resolve, reject) =>
            channel.publish(
              exchange,
              topic.name,
              body,
              { persistent: true, mandatory: true, messageId: `r${i}` },
              (error) => error === null || error === undefined ? resolve() : reject(error)
            )
          )
          roundTrips.push(performance.now() - sent)
        }
        await channel.close()
        if (failed > 0) throw new Error(`ceiling: ${failed} publishes failed`)
        return { rate: CEILING_MESSAGES / seconds, roundTripMs: percentile(roundTrips.sort((a, b) => a - b), 50) }
      }),
    (connection) => Effect.promise(() => connection.close().catch(() => undefined))
  )

/** The same publishes through the library's Broker (`publishAllEncoded`, the dispatcher's path). */
const brokerCeiling = (broker: Broker.Service) =>
  Effect.gen(function*() {
    const body = JSON.stringify(message(1))
    const entries = Array.from(
      { length: CEILING_MESSAGES },
      (_, i) => ({ topic: topic.name, body, messageId: `b${i}` })
    )
    const started = performance.now()
    const results = yield* broker.publishAllEncoded(entries, { window: CEILING_WINDOW })
    const seconds = (performance.now() - started) / 1000
    const failed = results.filter(Either.isLeft).length
    if (failed > 0) return yield* Effect.fail(new Error(`broker ceiling: ${failed} publishes failed`))
    return CEILING_MESSAGES / seconds
  })

const purge = (url: string) =>
  Effect.acquireUseRelease(
    Effect.tryPromise(() => Amqp.connect(url)),
    (connection) =>
      Effect.tryPromise(async () => {
        const channel = await connection.createChannel()
        await channel.purgeQueue(`${brokerPrefix}.group.${group}`)
        await channel.close()
      }),
    (connection) => Effect.promise(() => connection.close().catch(() => undefined))
  )

// ---------------------------------------------------------------------------
// the seed recipe, literally
// ---------------------------------------------------------------------------

interface RecipeRow {
  readonly id: string
  readonly message_id: string
  readonly topic: string
  readonly body: string
}

const recipeTick = (prefix: string, broker: Broker.Service, onConfirm: (messageId: string) => void) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const table = sql(tableOf(prefix))
    const rows = yield* sql<RecipeRow>`select id, message_id, topic, body from ${table}
      where state = 'pending' order by id limit 100`
    const done: Array<string> = []
    for (const row of rows) {
      const [result] = yield* broker.publishAllEncoded([{
        topic: row.topic,
        body: row.body,
        messageId: row.message_id
      }])
      if (result !== undefined && Either.isRight(result)) {
        onConfirm(row.message_id)
        done.push(row.id)
      }
    }
    if (done.length > 0) {
      yield* sql`update ${table} set state = 'dispatched', dispatched_at = now() where id = any(${done}::bigint[])`
    }
    return done.length
  })

const recipe = (broker: Broker.Service, confirmed: Map<string, number>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const backlog = `b_${runId}_recipe_drain`
    const live = `b_${runId}_recipe_live`
    yield* Layer.build(PgOutbox.layerStore({ prefix: backlog, notify: false }))
    yield* Layer.build(PgOutbox.layerStore({ prefix: live, notify: false }))
    yield* Effect.addFinalizer(() => Effect.zipRight(dropTable(backlog), dropTable(live)))
    yield* fill(backlog, DRAIN_EVENTS)
    // Setup done; the returned effect is the measured run.
    return Effect.gen(function*() {
      let drained = 0
      const every5s = Schedule.fixed("5 seconds")
      const started = performance.now()
      const drainLoop = yield* recipeTick(backlog, broker, () => {
        drained++
      }).pipe(Effect.repeat(every5s), Effect.fork)
      const liveLoop = yield* recipeTick(live, broker, (id) => confirmed.set(id, performance.now())).pipe(
        Effect.repeat(every5s),
        Effect.fork
      )
      // 10 events/s into the live table for 15 s, each committed in its own transaction.
      const committed = new Map<string, number>()
      for (let i = 0; i < RECIPE_LATENCY_RATE * 15; i++) {
        const due = started + (i * 1000) / RECIPE_LATENCY_RATE
        const wait = due - performance.now()
        if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
        const id = crypto.randomUUID()
        yield* sql`insert into ${sql(tableOf(live))} (message_id, topic, body) values (${id}, ${topic.name}, ${
          JSON.stringify(message(i))
        })`
        committed.set(id, performance.now())
      }
      const remaining = started + RECIPE_WINDOW_SECONDS * 1000 - performance.now()
      if (remaining > 0) yield* Effect.sleep(Duration.millis(remaining))
      const rate = drained / RECIPE_WINDOW_SECONDS
      yield* Fiber.interrupt(drainLoop)
      yield* Fiber.interrupt(liveLoop)
      const latencies = [...committed].flatMap(([id, at]) => {
        const done = confirmed.get(id)
        return done === undefined ? [] : [done - at]
      }).sort((a, b) => a - b)
      return { rate, latencies, unconfirmed: committed.size - latencies.length }
    })
  })

// ---------------------------------------------------------------------------
// ours
// ---------------------------------------------------------------------------

const BenchBroker = Context.GenericTag<"BenchBroker", Broker.Service>("bench/BenchBroker")

const drainOurs = (prefix: string, pack = 1) =>
  Effect.scoped(Effect.gen(function*() {
    const broker = yield* BenchBroker
    yield* Layer.build(PgOutbox.layerStore({ prefix, notify: false }))
    yield* fill(prefix, DRAIN_EVENTS)
    const started = performance.now()
    yield* Layer.build(
      PgOutbox.dispatcher({ prefix, pack, retention: false }).pipe(
        Layer.provide(Layer.succeed(Broker.Broker, broker))
      )
    )
    // Polled through the pending-rows index: a count(*) over the table every 20 ms would load
    // PostgreSQL more than the dispatcher does.
    yield* waitFor("the backlog to drain", noneLeft(prefix), "120 seconds")
    return DRAIN_EVENTS / ((performance.now() - started) / 1000)
  }))

/** Writers adding events at `rate`/s in their own transactions; returns commit instants by message id. */
const produce = (rate: number, seconds: number, writers: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const committed = new Map<string, number>()
    const total = rate * seconds
    const started = performance.now() + 50
    yield* Effect.forEach(Array.from({ length: writers }, (_, w) => w), (w) =>
      Effect.gen(function*() {
        for (let i = w; i < total; i += writers) {
          const wait = started + (i * 1000) / rate - performance.now()
          if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
          const id = yield* sql.withTransaction(Outbox.add(topic, message(i)))
          committed.set(id, performance.now())
        }
      }), { concurrency: "unbounded", discard: true })
    return committed
  })

const latencyOf = (committed: Map<string, number>, confirmed: Map<string, number>) => {
  const latencies: Array<number> = []
  for (const [id, at] of committed) {
    const done = confirmed.get(id)
    if (done !== undefined) latencies.push(done - at)
  }
  return latencies.sort((a, b) => a - b)
}

const latencyOurs = (prefix: string, inProcess: boolean) =>
  Effect.scoped(Effect.gen(function*() {
    const { confirmed, service } = confirmTimes(yield* BenchBroker)
    const store = yield* Layer.build(PgOutbox.layerStore({ prefix }))
    const dispatcher = PgOutbox.dispatcher({ prefix, retention: false }).pipe(
      Layer.provide(Layer.succeed(Broker.Broker, service))
    )
    // In-process: the dispatcher sees the store and gets direct signals. Otherwise only NOTIFY.
    yield* Layer.build(inProcess ? dispatcher.pipe(Layer.provide(Layer.succeedContext(store))) : dispatcher)
    const seconds = inProcess ? LATENCY_SECONDS : LATENCY_SECONDS / 2
    const started = performance.now()
    const committed = yield* produce(LATENCY_RATE, seconds, 10).pipe(Effect.provide(store))
    const achievedRate = committed.size / ((performance.now() - started) / 1000)
    yield* waitFor(
      "every latency event to be dispatched",
      Effect.map(countState(prefix, "pending"), (n) => n === 0),
      "30 seconds"
    )
    const latencies = latencyOf(committed, confirmed)
    if (latencies.length !== committed.size) {
      return yield* Effect.fail(new Error(`latency: ${committed.size - latencies.length} events not confirmed`))
    }
    return { latencies, achievedRate }
  }))

// ---------------------------------------------------------------------------
// insert rate
// ---------------------------------------------------------------------------

type Variant = "plain" | "ours" | "notify-in-tx"

const insertRate = (prefix: string, variant: Variant, store: Context.Context<Outbox.Outbox>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const orders = sql(`${prefix}_orders`)
    const outbox = sql(tableOf(prefix))
    const channel = tableOf(prefix)
    let count = 0
    const deadline = performance.now() + INSERT_SECONDS * 1000
    const transaction = (n: number): Effect.Effect<unknown, unknown, Outbox.Outbox> => {
      const m = message(n)
      const domain = sql`insert into ${orders} (customer, total) values (${m.customer}, ${m.total})`
      if (variant === "ours") return sql.withTransaction(Effect.zipRight(domain, Outbox.add(topic, m)))
      const event = sql`insert into ${outbox} (message_id, topic, key, headers, body, traceparent)
        values (${MessageId.make(Date.now())}, ${topic.name}, ${null}, ${null}::jsonb, ${JSON.stringify(m)}, ${null})`
      const wake = variant === "notify-in-tx" ? sql`select pg_notify(${channel}, '')` : Effect.void
      return sql.withTransaction(Effect.zipRight(domain, Effect.zipRight(event, wake)))
    }
    yield* Effect.forEach(Array.from({ length: INSERT_WRITERS }, (_, w) => w), () =>
      Effect.gen(function*() {
        while (performance.now() < deadline) {
          yield* transaction(count)
          count++
        }
        // The store provided once per writer, as an app provides its layers (not per transaction).
      }).pipe(Effect.provide(store)), { concurrency: "unbounded", discard: true })
    return count / INSERT_SECONDS
  })

const insertRates = (prefix: string) =>
  Effect.scoped(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const store = yield* Layer.build(PgOutbox.layerStore({ prefix }))
    yield* sql`create table ${
      sql(`${prefix}_orders`)
    } (id bigint generated always as identity primary key, customer text, total int)`
    yield* Effect.addFinalizer(() => Effect.orDie(sql`drop table if exists ${sql(`${prefix}_orders`)}`))
    // A listener on the channel, as a dispatcher in another process would hold.
    yield* Effect.acquireRelease(
      Effect.tryPromise(async () => {
        const client = new Pg.Client({ connectionString: databaseUrl, application_name: "eb-bench-listen" })
        client.on("error", (error) => process.stderr.write(`bench listener error: ${String(error)}\n`))
        client.on("notification", () => undefined)
        await client.connect()
        await client.query(`LISTEN ${Pg.escapeIdentifier(tableOf(prefix))}`)
        return client
      }),
      (client) => Effect.promise(() => client.end().catch(() => undefined))
    )
    const rates: Record<Variant, Array<number>> = { plain: [], ours: [], "notify-in-tx": [] }
    const variants: ReadonlyArray<Variant> = ["plain", "ours", "notify-in-tx"]
    for (let round = 0; round < INSERT_ROUNDS; round++) {
      // Short rounds, rotated: PostgreSQL's commit rate drifts (checkpoints, WAL flushes) over
      // seconds, so 1 s slices back to back compare the variants under the same conditions.
      for (let i = 0; i < variants.length; i++) {
        const variant = variants[(i + round) % variants.length] ?? "plain"
        rates[variant].push(yield* insertRate(prefix, variant, store))
      }
    }
    const median = (values: ReadonlyArray<number>) =>
      [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN
    const perRound = (variant: Variant) =>
      median(rates[variant].map((rate, i) => rate / (rates.plain[i] ?? Number.NaN)))
    return {
      plain: median(rates.plain),
      ours: median(rates.ours),
      notifyInTx: median(rates["notify-in-tx"]),
      oursRatio: perRound("ours"),
      notifyInTxRatio: perRound("notify-in-tx")
    }
  }))

// ---------------------------------------------------------------------------

const main = Effect.gen(function*() {
  const url = yield* scopedVhost(`eb-bench-outbox-${runId}`)
  const brokerContext = yield* Layer.build(RabbitMQBroker.layer({ url: Redacted.make(url), prefix: brokerPrefix }))
  const broker = Context.get(brokerContext, Broker.Broker)
  yield* broker.declare(topic, { group })
  const prefixes = {
    drain: `b_${runId}_drain`,
    packed: `b_${runId}_packed`,
    latency: `b_${runId}_latency`,
    notify: `b_${runId}_notify`,
    insert: `b_${runId}_insert`
  }
  yield* Effect.addFinalizer(() => Effect.forEach(Object.values(prefixes), dropTable, { discard: true }))

  // Ceilings before and after the drain, averaged: the machine's speed drifts between phases.
  const ceilingBefore = yield* ceiling(url)
  const brokerBefore = yield* brokerCeiling(broker)
  yield* purge(url)
  const drainRate = yield* drainOurs(prefixes.drain).pipe(Effect.provideService(BenchBroker, broker))
  yield* purge(url)
  const packedDrainRate = yield* drainOurs(prefixes.packed, PACK).pipe(Effect.provideService(BenchBroker, broker))
  yield* purge(url)
  const brokerAfter = yield* brokerCeiling(broker)
  const ceilingAfter = yield* ceiling(url)
  yield* purge(url)
  const ceilingRate = (ceilingBefore.rate + ceilingAfter.rate) / 2
  const confirmRoundTrip = (ceilingBefore.roundTripMs + ceilingAfter.roundTripMs) / 2
  const brokerRate = (brokerBefore + brokerAfter) / 2
  const { achievedRate, latencies } = yield* latencyOurs(prefixes.latency, true).pipe(
    Effect.provideService(BenchBroker, broker)
  )
  const { latencies: notifyLatencies } = yield* latencyOurs(prefixes.notify, false).pipe(
    Effect.provideService(BenchBroker, broker)
  )
  yield* purge(url)
  const insert = yield* insertRates(prefixes.insert)

  // The recipe last, alone: its single publishes would otherwise queue behind our batches in
  // RabbitMQ and look slower than the recipe really is.
  const recipeConfirmed = new Map<string, number>()
  const recipeRun = yield* recipe(broker, recipeConfirmed)
  const recipeResult = yield* recipeRun
  yield* purge(url)

  yield* line("outbox.ceiling.confirmed_publish_rate", ceilingRate, "msg/s")
  yield* line("outbox.ceiling.single_confirm_round_trip_ms", confirmRoundTrip, "ms")
  yield* line("outbox.ceiling.broker_publish_rate", brokerRate, "msg/s")
  yield* line("outbox.drain.rate", drainRate, "rows/s")
  yield* line("outbox.drain.recipe_rate", recipeResult.rate, "rows/s")
  yield* line("outbox.drain.ratio_vs_recipe", drainRate / recipeResult.rate, "x")
  yield* line("outbox.drain.ratio_vs_ceiling", drainRate / ceilingRate, "x")
  yield* line("outbox.drain.ratio_vs_broker_publish", drainRate / brokerRate, "x")
  // Opt-in packing: only this library's consumers read packed events.
  yield* line("outbox.drain.packed_rate", packedDrainRate, "rows/s")
  yield* line("outbox.drain.packed_ratio_vs_ceiling", packedDrainRate / ceilingRate, "x")
  yield* line("outbox.latency.achieved_rate", achievedRate, "events/s")
  yield* line("outbox.latency_p50_ms", percentile(latencies, 50), "ms")
  yield* line("outbox.latency_p99_ms", percentile(latencies, 99), "ms")
  yield* line("outbox.latency_notify_only_p50_ms", percentile(notifyLatencies, 50), "ms")
  yield* line("outbox.latency_notify_only_p99_ms", percentile(notifyLatencies, 99), "ms")
  yield* line("outbox.recipe.latency_p50_ms", percentile(recipeResult.latencies, 50), "ms")
  yield* line("outbox.recipe.latency_p99_ms", percentile(recipeResult.latencies, 99), "ms")
  yield* line("outbox.insert_rate.plain", insert.plain, "tx/s")
  yield* line("outbox.insert_rate.ours", insert.ours, "tx/s")
  yield* line("outbox.insert_rate.notify_in_tx", insert.notifyInTx, "tx/s")
  // Medians of per-round ratios: each round runs the three variants back to back.
  yield* line("outbox.insert_rate.ratio_vs_plain", insert.oursRatio, "x")
  yield* line("outbox.insert_rate.notify_in_tx_ratio_vs_plain", insert.notifyInTxRatio, "x")
})

const program = Effect.scoped(main).pipe(
  Effect.provide(
    PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 24, applicationName: "eb-bench-outbox" })
  )
)

await Effect.runPromise(program.pipe(Effect.tapErrorCause((cause) => Effect.logError("outbox bench failed", cause))))
  .then(() => process.exit(0), () => process.exit(1))
