/**
 * The Inbox with the services it serves, on PostgreSQL: a Broker subscriber skips a redelivered
 * message, a handler's own rows and its `Outbox.add` commit or roll back with the inbox record,
 * and a TaskQueue worker returns the stored result to a redelivered task.
 */
import { SqlClient } from "@effect/sql"
import { assert, layer } from "@effect/vitest"
import { Data, Effect, Layer, Metric, Queue, Schedule, Schema } from "effect"
import { Broker, Inbox, MemoryBroker, Outbox, Task } from "../../src/index.js"
import * as PgInbox from "../../src/layers/PgInbox.js"
import * as PgOutbox from "../../src/layers/PgOutbox.js"
import { runId, uniqueName } from "../fixtures/env.js"
import { pg } from "../outbox/fixtures.js"

const prefix = `t_${runId}_ibi`
const effects = `${prefix}_effects`

const tables = Layer.scopedDiscard(Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`create table ${sql(effects)} (label text not null)`
  yield* Effect.addFinalizer(() =>
    Effect.orDie(sql`drop table if exists ${sql(effects)}, ${sql(`${prefix}_inbox`)}, ${sql(`${prefix}_outbox`)}`)
  )
}))

const live = Layer.mergeAll(
  PgInbox.layer({ prefix }),
  PgOutbox.layerStore({ prefix, notify: false }),
  MemoryBroker.layer(),
  tables
).pipe(Layer.provideMerge(pg()))

const write = (label: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql`insert into ${sql(effects)} values (${label})`)
const count = (label: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql<{ n: number }>`select count(*)::int as n from ${sql(effects)} where label like ${label}`
  ).pipe(
    Effect.map((rows) => rows[0]?.n ?? 0)
  )
const outboxRows = (messageId: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql<{ n: number }>`select count(*)::int as n from ${sql(`${prefix}_outbox`)} where topic = ${messageId}`
  ).pipe(
    Effect.map((rows) => rows[0]?.n ?? 0)
  )

const Item = Schema.Struct({ id: Schema.String })
class Flaky extends Data.TaggedError("Flaky")<{ readonly attempt: number }> {}

layer(live, { excludeTestServices: true, timeout: "60 seconds" })("Inbox with Broker, Outbox and TaskQueue", (it) => {
  it.scoped("a subscriber skips a message delivered twice (same id): effects once, both acked, counted", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = Broker.topic(`${uniqueName("ib").replaceAll("_", "-")}.x`, Item)
      const group = uniqueName("g")
      const seen = yield* Queue.unbounded<string>()
      const duplicates = Metric.tagged(Inbox.metrics.duplicates, "consumer", group)
      const before = (yield* Metric.value(duplicates)).count
      yield* broker.subscribe(
        topic,
        (item, envelope) =>
          Effect.zipRight(
            Queue.offer(seen, envelope.id),
            Inbox.subscriber(group, (i: typeof item) => write(`sub-${i.id}`))(item, envelope)
          ),
        { group }
      )
      yield* broker.publish(topic, { id: "a" }, { messageId: `${group}-1` })
      yield* broker.publish(topic, { id: "a" }, { messageId: `${group}-1` })
      yield* broker.publish(topic, { id: "b" }, { messageId: `${group}-2` })
      const ids = [yield* Queue.take(seen), yield* Queue.take(seen), yield* Queue.take(seen)]
      assert.strictEqual(ids.length, 3, "three deliveries")
      yield* Effect.sleep("100 millis")
      assert.strictEqual(yield* count("sub-a"), 1)
      assert.strictEqual(yield* count("sub-b"), 1)
      assert.strictEqual((yield* Metric.value(duplicates)).count - before, 1)
      const memory = yield* MemoryBroker.MemoryBroker
      assert.strictEqual((yield* memory.deadLetters(group)).length, 0, "the duplicate was acked, not dead-lettered")
    }))

  it.scoped("a failed attempt rolls back the handler's rows and its Outbox.add; the retry commits them once", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = Broker.topic(`${uniqueName("ibo").replaceAll("_", "-")}.x`, Item)
      const next = Broker.topic(`${uniqueName("next").replaceAll("_", "-")}.y`, Item)
      const group = uniqueName("g")
      const attempts = yield* Queue.unbounded<number>()
      yield* broker.subscribe(
        topic,
        Inbox.subscriber(group, (item, envelope) =>
          Effect.gen(function*() {
            yield* write(`tx-${item.id}`)
            yield* Outbox.add(next, { id: item.id })
            yield* Queue.offer(attempts, envelope.attempt)
            if (envelope.attempt === 1) return yield* new Flaky({ attempt: envelope.attempt })
          })),
        { group, retry: Schedule.spaced("10 millis") }
      )
      yield* broker.publish(topic, { id: "t1" })
      assert.strictEqual(yield* Queue.take(attempts), 1)
      assert.strictEqual(yield* Queue.take(attempts), 2)
      yield* Effect.sleep("100 millis")
      assert.strictEqual(yield* count("tx-t1"), 1, "the first attempt's row was rolled back")
      assert.strictEqual(yield* outboxRows(next.name), 1, "the first attempt's outbox event was rolled back")
    }))

  it.scoped("a task worker runs a task once per id and hands the stored result to a redelivery", () =>
    Effect.gen(function*() {
      const task = Task.make(uniqueName("ibt"), {
        payload: Schema.Struct({ n: Schema.Number }),
        success: Schema.Struct({ at: Schema.DateFromString })
      })
      const handler = Inbox.worker(
        task,
        (payload) => Effect.as(write(`task-${payload.n}`).pipe(Effect.orDie), { at: new Date(1_000_000 + payload.n) })
      )
      const context = {
        id: uniqueName("task-id"),
        task: task.name,
        attempt: 1,
        key: undefined,
        redelivered: false,
        enqueuedAt: new Date(),
        headers: {},
        typedHeaders: {}
      }
      const first = yield* handler({ n: 7 }, context)
      const again = yield* handler({ n: 7 }, { ...context, redelivered: true })
      assert.deepStrictEqual(first, { at: new Date(1_000_007) })
      assert.deepStrictEqual(again, { at: new Date(1_000_007) }, "decoded from the stored result")
      assert.strictEqual(yield* count("task-7"), 1)
    }))
})
