/**
 * `npm run bench -- inbox`: what exactly-once effects cost a handler. The same subscription
 * (in-memory broker, concurrency 20, a backlog of N messages) runs a handler that inserts one
 * row in its own transaction, and the same handler through `Inbox.subscriber` on PgInbox (the
 * record and the row in one transaction). Rounds alternate which goes first; the ratio printed
 * is the median of the per-round ratios (inbox rate / plain rate).
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Context, Deferred, Effect, Layer, Redacted, Schema } from "effect"
import * as Broker from "../src/Broker.js"
import * as Inbox from "../src/Inbox.js"
import * as MemoryBroker from "../src/layers/MemoryBroker.js"
import * as PgInbox from "../src/layers/PgInbox.js"
import { databaseUrl, runId } from "../test/fixtures/env.js"
import { median, print } from "./support/report.js"

const N = Number(process.env["BENCH_INBOX_N"] ?? 5000)
const ROUNDS = Number(process.env["BENCH_INBOX_ROUNDS"] ?? 5)
const CONCURRENCY = 20

const prefix = `bench_${runId}`
const rows = `${prefix}_rows`
const Item = Schema.Struct({ id: Schema.String, note: Schema.String })
const note = "x".repeat(100)

/** Messages per second for one subscription draining a backlog of N with `handler`. */
const drain = (
  label: string,
  handler: (
    item: typeof Item.Type,
    envelope: Broker.Envelope
  ) => Effect.Effect<void, unknown, SqlClient.SqlClient | Inbox.Inbox>
) =>
  Effect.scoped(Effect.gen(function*() {
    const broker = yield* Broker.Broker
    const topic = Broker.topic(`bench.inbox.${label}.${runId}`, Item)
    const group = `${label}_${runId}_${Math.random().toString(36).slice(2, 8)}`
    yield* broker.declare(topic, { group })
    yield* broker.publishAll(Array.from({ length: N }, (_, i) => Broker.entry(topic, { id: `${label}-${i}`, note })))
    const done = yield* Deferred.make<void>()
    let finished = 0
    const context = yield* Effect.context<SqlClient.SqlClient | Inbox.Inbox>()
    const start = performance.now()
    yield* broker.subscribe(
      topic,
      (item, envelope) =>
        handler(item, envelope).pipe(
          Effect.provide(context),
          Effect.zipRight(Effect.suspend(() => ++finished === N ? Deferred.succeed(done, undefined) : Effect.void))
        ),
      { group, concurrency: CONCURRENCY }
    )
    yield* Deferred.await(done)
    return N / ((performance.now() - start) / 1000)
  }))

const insert = (item: typeof Item.Type) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql`insert into ${sql(rows)} (id, note) values (${item.id}, ${item.note})`
  )

const plain = (item: typeof Item.Type) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.withTransaction(insert(item)))
const withInbox = Inbox.subscriber("bench", insert)

const program = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`create table ${sql(rows)} (id text not null, note text not null)`
  yield* Effect.addFinalizer(() => Effect.orDie(sql`drop table if exists ${sql(rows)}, ${sql(`${prefix}_inbox`)}`))
  // warm-up: connections, plans
  yield* drain("warm", withInbox)
  const ratios: Array<number> = []
  const plainRates: Array<number> = []
  const inboxRates: Array<number> = []
  for (let round = 1; round <= ROUNDS; round++) {
    let p = 0
    let i = 0
    if (round % 2 === 1) {
      p = yield* drain("plain", plain)
      i = yield* drain("inbox", withInbox)
    } else {
      i = yield* drain("inbox", withInbox)
      p = yield* drain("plain", plain)
    }
    plainRates.push(p)
    inboxRates.push(i)
    ratios.push(i / p)
    process.stderr.write(`round ${round}: plain tx ${p.toFixed(0)}/s, with inbox ${i.toFixed(0)}/s\n`)
  }
  print("inbox.plain_tx_per_s", Math.round(median(plainRates)), "msg/s")
  print("inbox.with_inbox_per_s", Math.round(median(inboxRates)), "msg/s")
  print("inbox.ratio_vs_plain_tx", median(ratios), "x")
})

const live = Layer.mergeAll(PgInbox.layer({ prefix }), MemoryBroker.layer()).pipe(
  Layer.provideMerge(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: CONCURRENCY + 2 }))
)

const started = Date.now()
await Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(live), Effect.map(() => Context.empty())))
process.stdout.write(`bench took ${((Date.now() - started) / 1000).toFixed(1)} s (N=${N}, rounds=${ROUNDS})\n`)
