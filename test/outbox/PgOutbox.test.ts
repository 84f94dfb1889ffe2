import { SqlClient } from "@effect/sql"
import type { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import {
  Context,
  Effect,
  Either,
  Exit,
  Layer,
  Metric,
  Queue,
  Redacted,
  Schedule,
  Schema,
  type Scope,
  Tracer
} from "effect"
import { Broker } from "../../src/index.js"
import * as Sql from "../../src/internal/outbox/sql.js"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import * as PgOutbox from "../../src/layers/PgOutbox.js"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import * as Outbox from "../../src/Outbox.js"
import { runId, uniqueName } from "../fixtures/env.js"
import { rabbitmqctl, scopedVhost, urlFor } from "../support/rabbitmq.js"
import {
  failingBroker,
  type Inject,
  orderPlaced,
  pg,
  recordingBroker,
  tally,
  uniquePrefix,
  waitUntil
} from "./fixtures.js"

const run = <A, E>(body: Effect.Effect<A, E, SqlClient.SqlClient | PgClient.PgClient | Scope.Scope>) =>
  Effect.scoped(body).pipe(Effect.provide(pg()))

const brokers: ReadonlyArray<readonly [string, Layer.Layer<Broker.Broker, unknown>]> = [
  ["MemoryBroker", MemoryBroker.layer()],
  [
    "RabbitMQBroker",
    Layer.unwrapScoped(Effect.map(
      scopedVhost(`eb-test-outbox-main-${runId}`),
      (vhost) => RabbitMQBroker.layer({ url: Redacted.make(urlFor(vhost)), prefix: `t${runId}` })
    ))
  ]
]

/** The trace context of an incoming request (under the built-in tracer, the only one carried). */
const incoming = Tracer.externalSpan({
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  spanId: "00f067aa0ba902b7",
  sampled: true
})

const decode = Schema.decodeUnknownSync(Schema.parseJson(orderPlaced.schema))

const countRows = (prefix: string, where: "all" | "pending" | "dispatched" | "dead" = "all") =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = where === "all"
      ? yield* sql<{ n: string }>`select count(*) as n from ${sql(`${prefix}_outbox`)}`
      : yield* sql<{ n: string }>`select count(*) as n from ${sql(`${prefix}_outbox`)} where state = ${where}`
    return Number(rows[0]?.n ?? 0)
  })

describe("PgOutbox", () => {
  for (const [name, brokerLayer] of brokers) {
    it.live(`committed events reach a ${name} subscriber decoded, with their headers and the producer's trace`, () =>
      run(Effect.gen(function*() {
        const prefix = yield* uniquePrefix
        const brokerContext = yield* Layer.build(brokerLayer)
        const broker = Context.get(brokerContext, Broker.Broker)
        const received = yield* Queue.unbounded<readonly [typeof orderPlaced.schema.Type, Broker.Envelope]>()
        yield* broker.subscribe(orderPlaced, (message, envelope) => Queue.offer(received, [message, envelope]), {
          group: uniqueName("outbox").replaceAll("_", "-")
        })
        const ctx = yield* Layer.build(
          PgOutbox.layer({ prefix, pollInterval: "200 millis" }).pipe(
            Layer.provide(Layer.succeedContext(brokerContext))
          )
        )
        const sql = yield* SqlClient.SqlClient
        const sent = yield* sql.withTransaction(Effect.gen(function*() {
          const ids = yield* Effect.forEach(
            [1, 2, 3],
            (n) => Outbox.add(orderPlaced, { orderId: `o${n}`, n }, { key: "customer-1", headers: { tenant: "acme" } })
          )
          return { ids, span: incoming }
        })).pipe(Effect.withSpan("checkout"), Effect.withParentSpan(incoming), Effect.provide(ctx))
        const messages = [yield* Queue.take(received), yield* Queue.take(received), yield* Queue.take(received)]
          .sort(([a], [b]) => a.n - b.n)
        assert.deepStrictEqual(messages.map(([m]) => m), [1, 2, 3].map((n) => ({ orderId: `o${n}`, n })))
        assert.deepStrictEqual(messages.map(([, e]) => e.id), sent.ids)
        for (const [, envelope] of messages) {
          assert.strictEqual(envelope.headers["tenant"], "acme")
          // Under the built-in tracer: the request's incoming context, passed on unchanged
          assert.strictEqual(envelope.traceparent, `00-${sent.span.traceId}-${sent.span.spanId}-01`)
        }
      })).pipe(Effect.timeout("30 seconds")))
  }

  it.live("add in a rolled-back transaction leaves no event; a committed one is published with its trace context", () =>
    run(Effect.gen(function*() {
      const prefix = yield* uniquePrefix
      const broker = recordingBroker()
      const ctx = yield* Layer.build(
        PgOutbox.layer({ prefix, pollInterval: "200 millis" }).pipe(Layer.provide(broker.layer))
      )
      const sql = yield* SqlClient.SqlClient
      const rolledBack = yield* sql.withTransaction(Effect.gen(function*() {
        yield* Outbox.add(orderPlaced, { orderId: "rolled-back", n: 1 })
        return yield* Effect.fail("abort")
      })).pipe(Effect.provide(ctx), Effect.exit)
      assert.isTrue(Exit.isFailure(rolledBack))

      const committed = yield* sql.withTransaction(Effect.gen(function*() {
        const id = yield* Outbox.add(orderPlaced, { orderId: "committed", n: 2 }, {
          key: "k",
          headers: { tenant: "a" }
        })
        return { id, span: incoming }
      })).pipe(Effect.withSpan("checkout"), Effect.withParentSpan(incoming), Effect.provide(ctx))

      yield* waitUntil("the committed event is published", Effect.sync(() => broker.sent.length >= 1))
      assert.strictEqual(broker.sent.length, 1)
      const sent = broker.sent[0]
      assert.strictEqual(sent?.messageId, committed.id)
      assert.deepStrictEqual(decode(sent?.body), { orderId: "committed", n: 2 })
      assert.strictEqual(sent?.headers["tenant"], "a")
      // the trace the caller's request came with
      assert.strictEqual(sent?.headers["traceparent"]?.split("-")[1], committed.span.traceId)
      yield* waitUntil("the row is marked dispatched", Effect.map(countRows(prefix, "dispatched"), (n) => n === 1))
      assert.strictEqual(yield* countRows(prefix), 1)
    })))

  it.live("a domain row and its event commit or roll back together; an encode failure is typed and rolls back", () =>
    run(Effect.gen(function*() {
      const prefix = yield* uniquePrefix
      const sql = yield* SqlClient.SqlClient
      const orders = sql(`${prefix}_orders`)
      yield* sql`create table ${orders} (id text primary key)`
      yield* Effect.addFinalizer(() => Effect.orDie(sql`drop table if exists ${orders}`))
      const ctx = yield* Layer.build(PgOutbox.layerStore({ prefix }))

      const placeOrder = (id: string, n: unknown, fail: boolean) =>
        sql.withTransaction(Effect.gen(function*() {
          yield* sql`insert into ${orders} (id) values (${id})`
          yield* Outbox.add(orderPlaced, { orderId: id, n: n as number })
          if (fail) return yield* Effect.fail("domain rule violated" as const)
        })).pipe(Effect.provide(ctx), Effect.either)

      assert.isTrue(Either.isRight(yield* placeOrder("o1", 1, false)))
      assert.isTrue(Either.isLeft(yield* placeOrder("o2", 2, true)))
      const bad = yield* placeOrder("o3", "not a number", false)
      assert.isTrue(Either.isLeft(bad) && typeof bad.left === "object" && bad.left._tag === "EncodeError")

      const domain = yield* sql<{ id: string }>`select id from ${orders} order by id`
      const events = yield* sql<{ body: string }>`select body from ${sql(`${prefix}_outbox`)}`
      assert.deepStrictEqual(domain.map((r) => r.id), ["o1"])
      assert.deepStrictEqual(events.map((r) => decode(r.body).orderId), ["o1"])
    })))

  it.live("NaN or ±Infinity fails add with EncodeError naming the field, a U+0000 header value with InvalidName naming the header; the transaction rolls back with nothing inserted", () =>
    run(Effect.gen(function*() {
      const prefix = yield* uniquePrefix
      const sql = yield* SqlClient.SqlClient
      const invoices = sql(`${prefix}_invoices`)
      yield* sql`create table ${invoices} (id text primary key)`
      yield* Effect.addFinalizer(() => Effect.orDie(sql`drop table if exists ${invoices}`))
      const ctx = yield* Layer.build(PgOutbox.layerStore({ prefix, notify: false }))
      const Line = Schema.Struct({ sku: Schema.String, price: Schema.Number })
      const issued = Broker.topic(
        "outbox.invoice.issued",
        Schema.Struct({ invoiceId: Schema.String, lines: Schema.Array(Line) })
      )
      const issue = (id: string, price: number, headers?: Record<string, string>) =>
        sql.withTransaction(Effect.gen(function*() {
          yield* sql`insert into ${invoices} (id) values (${id})`
          return yield* Outbox.add(issued, { invoiceId: id, lines: [{ sku: "a", price: 1 }, { sku: "b", price }] }, {
            headers
          })
        })).pipe(Effect.provide(ctx))

      for (const price of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
        const error = yield* Effect.flip(issue(`i-${price}`, price))
        assert.strictEqual(error._tag, "EncodeError", String(price))
        if (error._tag === "EncodeError") assert.include(error.issue, "lines[1].price")
      }
      const nul = yield* Effect.flip(issue("i-nul", 2, { tenant: "acme\u0000" }))
      assert.strictEqual(nul._tag, "InvalidName")
      if (nul._tag === "InvalidName") {
        assert.strictEqual(nul.kind, "header")
        assert.strictEqual(nul.value, "tenant")
      }
      assert.deepStrictEqual(yield* sql`select id from ${invoices}`, [])
      assert.strictEqual(yield* countRows(prefix), 0)

      // JSON has no negative zero: -0 is accepted and arrives as 0.
      const id = yield* issue("i-zero", -0)
      const rows = yield* sql<{ body: string }>`select body from ${sql(`${prefix}_outbox`)} where message_id = ${id}`
      const body = JSON.parse(rows[0]?.body ?? "null") as { lines: Array<{ price: number }> }
      assert.isTrue(Object.is(body.lines[1]?.price, 0))
    })))

  it.live(
    "pack: 250 events go out as 3 RabbitMQ messages and reach a subscriber once each with their ids and headers",
    () =>
      run(Effect.gen(function*() {
        const prefix = yield* uniquePrefix
        const vhost = yield* scopedVhost(`eb-test-outbox-pack-${runId}`)
        const brokerPrefix = `t${runId}`
        const brokerContext = yield* Layer.build(
          RabbitMQBroker.layer({ url: Redacted.make(urlFor(vhost)), prefix: brokerPrefix })
        )
        const broker = Context.get(brokerContext, Broker.Broker)
        const group = uniqueName("g")
        yield* broker.declare(orderPlaced, { group })
        const store = yield* Layer.build(PgOutbox.layerStore({ prefix, notify: false }))
        const sql = yield* SqlClient.SqlClient
        const ids = yield* sql.withTransaction(Effect.forEach(
          Array.from({ length: 250 }, (_, n) => n),
          (n) => Outbox.add(orderPlaced, { orderId: `o${n}`, n }, { headers: { tenant: `t${n % 3}` } })
        )).pipe(Effect.provide(store))
        yield* Layer.build(
          PgOutbox.dispatcher({ prefix, pack: 100, pollInterval: "100 millis" }).pipe(
            Layer.provide(Layer.succeedContext(brokerContext))
          )
        )
        yield* waitUntil("every event is dispatched", Effect.map(countRows(prefix, "pending"), (n) => n === 0))
        const listed = yield* rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "messages_ready")
        const ready = listed.split("\n").map((line) => line.trim().split(/\s+/)).find(([name]) =>
          name === `${brokerPrefix}.group.${group}`
        )
        assert.strictEqual(ready?.[1], "3", listed)
        const received = yield* Queue.unbounded<readonly [number, Broker.Envelope]>()
        yield* broker.subscribe(orderPlaced, (message, envelope) => Queue.offer(received, [message.n, envelope]), {
          group
        })
        const all = yield* Effect.replicateEffect(Queue.take(received), 250).pipe(Effect.timeout("20 seconds"))
        assert.deepStrictEqual(all.map(([, e]) => e.id).sort(), [...ids].sort())
        for (const [n, envelope] of all) assert.strictEqual(envelope.headers["tenant"], `t${n % 3}`)
        yield* Effect.sleep("100 millis")
        assert.strictEqual(yield* Queue.size(received), 0, "none twice")
      })),
    60_000
  )

  it.live("3 dispatchers drain 20,000 events: none lost, none duplicated", () =>
    run(Effect.gen(function*() {
      const prefix = yield* uniquePrefix
      const broker = recordingBroker()
      const store = yield* Layer.build(PgOutbox.layerStore({ prefix, notify: false }))
      const sql = yield* SqlClient.SqlClient
      const ids: Array<string> = []
      for (let chunk = 0; chunk < 20; chunk++) {
        const batch = yield* sql.withTransaction(Effect.forEach(
          Array.from({ length: 1000 }, (_, i) => chunk * 1000 + i),
          (n) => Outbox.add(orderPlaced, { orderId: `o${n}`, n })
        )).pipe(Effect.provide(store))
        for (const id of batch) ids.push(id)
      }
      for (let i = 0; i < 3; i++) {
        yield* Layer.build(
          PgOutbox.dispatcher({ prefix, batchSize: 500, pollInterval: "100 millis" }).pipe(Layer.provide(broker.layer))
        )
      }
      yield* waitUntil(
        "every event is dispatched",
        Effect.map(countRows(prefix, "pending"), (n) => n === 0),
        "60 seconds"
      )
      const counted = tally(broker.sent.map((s) => s.messageId))
      const lost = ids.filter((id) => !counted.counts.has(id)).length
      assert.strictEqual(lost, 0)
      assert.strictEqual(counted.duplicates, 0)
      assert.strictEqual(counted.unique, 20_000)
      assert.strictEqual(yield* countRows(prefix, "dispatched"), 20_000)
    })), 90_000)

  it.live("a backlog newer than the table's statistics is claimed through the pending index, not read and sorted whole", () =>
    run(Effect.gen(function*() {
      const prefix = yield* uniquePrefix
      yield* Layer.build(PgOutbox.layerStore({ prefix, notify: false }))
      const sql = yield* SqlClient.SqlClient
      const t = yield* Sql.tables(prefix)
      // A burst the planner has no statistics for (no ANALYZE since): 20,000 pending rows.
      yield* sql`insert into ${sql(t.outbox)} (message_id, topic, body)
        select 'burst-' || n, 'orders.placed', '{}' from generate_series(1, 20000) as n`
      const [text, params] = Sql.claim(sql, t, 1000).compile()
      const plan = yield* sql.withTransaction(Effect.zipRight(
        Sql.batchSettings(sql),
        sql.unsafe<{ readonly "QUERY PLAN": unknown }>(`explain (format json) ${text}`, params)
      ))
      const nodes = JSON.stringify(plan[0]?.["QUERY PLAN"])
      assert.include(nodes, `"Index Name":"${t.outbox}_pending"`)
      assert.notInclude(nodes, `"Node Type":"Sort"`)
      assert.notInclude(nodes, `"Node Type":"Seq Scan"`)
    })))

  it.live("per-key order holds with 3 dispatchers and injected publish failures", () =>
    run(Effect.gen(function*() {
      const prefix = yield* uniquePrefix
      const memory = yield* Layer.build(MemoryBroker.layer())
      const inner = Context.get(memory, MemoryBroker.MemoryBroker)
      yield* inner.declare(orderPlaced, { group: uniqueName("perkey").replaceAll("_", "-") })
      let injected = 0
      const broker = failingBroker(inner, (entry) => {
        const roll = Math.random()
        if (roll >= 0.2) return undefined
        injected++
        return roll < 0.15
          ? new Broker.PublishRejected({
            topic: entry.topic,
            messageId: entry.messageId,
            reason: "nacked",
            ambiguous: false,
            detail: "injected"
          })
          : new Broker.BrokerUnavailable({ reason: "closed", detail: "injected" })
      })
      const store = yield* Layer.build(PgOutbox.layerStore({ prefix }))
      const keys = 30
      const perKey = 40
      const addRange = (from: number, to: number) =>
        Effect.forEach(
          Array.from({ length: to - from }, (_, i) => from + i),
          (n) =>
            Effect.forEach(
              Array.from({ length: keys }, (_, k) => k),
              (k) => Outbox.add(orderPlaced, { orderId: `key-${k}`, n }, { key: `key-${k}` }),
              { discard: true }
            ),
          { discard: true }
        ).pipe(Effect.provide(store))
      yield* addRange(0, perKey / 2)
      for (let i = 0; i < 3; i++) {
        yield* Layer.build(
          PgOutbox.dispatcher({
            prefix,
            ordering: "per-key",
            batchSize: 50,
            pollInterval: "100 millis",
            retry: Schedule.spaced("5 millis"),
            brokerBackoff: Schedule.spaced("10 millis")
          }).pipe(Layer.provide(Layer.succeed(Broker.Broker, broker)))
        )
      }
      yield* addRange(perKey / 2, perKey)
      yield* waitUntil(
        "every event is dispatched",
        Effect.map(countRows(prefix, "dispatched"), (n) => n === keys * perKey),
        "60 seconds"
      )
      const byKey = new Map<string, Array<number>>()
      for (const published of yield* inner.published) {
        const message = decode(published.body)
        const list = byKey.get(message.orderId) ?? []
        list.push(message.n)
        byKey.set(message.orderId, list)
      }
      const expected = Array.from({ length: perKey }, (_, i) => i)
      for (let k = 0; k < keys; k++) assert.deepStrictEqual(byKey.get(`key-${k}`), expected, `order of key-${k}`)
      assert.isAbove(injected, 50)
    })), 90_000)

  it.live("retention deletes only old dispatched rows; dead rows stay for inspection and replay publishes them", () =>
    run(Effect.gen(function*() {
      const prefix = yield* uniquePrefix
      const poisoned = new Set<string>()
      const broker = recordingBroker({
        current: (message) =>
          poisoned.has(message.messageId)
            ? new Broker.PublishRejected({
              topic: message.routingKey,
              messageId: message.messageId,
              reason: "invalid",
              ambiguous: false,
              detail: "injected: the broker can never take this"
            })
            : undefined
      })
      const sql = yield* SqlClient.SqlClient
      const table = sql(`${prefix}_outbox`)
      const ctx = yield* Layer.build(
        PgOutbox.layer({
          prefix,
          pollInterval: "100 millis",
          retention: { maxAge: "1 hour", every: "50 millis", batchSize: 3 }
        }).pipe(Layer.provide(broker.layer))
      )
      poisoned.add("dead-1")
      poisoned.add("dead-2")
      for (let n = 0; n < 10; n++) yield* Outbox.add(orderPlaced, { orderId: `o${n}`, n }).pipe(Effect.provide(ctx))
      yield* Outbox.add(orderPlaced, { orderId: "d1", n: 1 }, { messageId: "dead-1" }).pipe(Effect.provide(ctx))
      yield* Outbox.add(orderPlaced, { orderId: "d2", n: 2 }, { messageId: "dead-2" }).pipe(Effect.provide(ctx))
      yield* waitUntil(
        "10 dispatched and 2 dead",
        Effect.zipWith(countRows(prefix, "dispatched"), countRows(prefix, "dead"), (d, x) => d === 10 && x === 2)
      )

      const dead = yield* Outbox.dead().pipe(Effect.provide(ctx))
      assert.deepStrictEqual(dead.map((d) => d.messageId).sort(), ["dead-1", "dead-2"])
      assert.include(dead[0]?.lastError ?? "", "PublishRejected")
      const stats = yield* Outbox.stats.pipe(Effect.provide(ctx))
      assert.strictEqual(stats.dead, 2)
      assert.strictEqual(stats.pending, 0)

      // Age seven dispatched rows and both dead rows past the retention age.
      yield* sql`update ${table} set dispatched_at = now() - interval '2 hours', created_at = now() - interval '2 hours'
        where id in (select id from ${table} where state = 'dispatched' order by id limit 7)`
      yield* sql`update ${table} set created_at = now() - interval '2 hours' where state = 'dead'`
      yield* waitUntil("old dispatched rows are deleted", Effect.map(countRows(prefix, "dispatched"), (n) => n === 3))
      assert.strictEqual(yield* countRows(prefix, "dead"), 2)

      poisoned.clear()
      assert.strictEqual(yield* Outbox.replay(["dead-1", "dead-2"]).pipe(Effect.provide(ctx)), 2)
      yield* waitUntil(
        "replayed events are published",
        Effect.sync(() => broker.sent.filter((s) => s.messageId.startsWith("dead-")).length === 2)
      )
      yield* waitUntil("replayed rows are dispatched", Effect.map(countRows(prefix, "dead"), (n) => n === 0))
    })))

  it.live("Outbox.prune deletes dispatched events older than its age, in batches, and nothing else", () =>
    run(Effect.gen(function*() {
      const prefix = yield* uniquePrefix
      const broker = recordingBroker()
      const sql = yield* SqlClient.SqlClient
      const table = sql(`${prefix}_outbox`)
      const ctx = yield* Layer.build(
        PgOutbox.layer({ prefix, pollInterval: "100 millis", retention: false }).pipe(Layer.provide(broker.layer))
      )
      for (let n = 0; n < 12; n++) yield* Outbox.add(orderPlaced, { orderId: `o${n}`, n }).pipe(Effect.provide(ctx))
      yield* waitUntil("12 dispatched", Effect.map(countRows(prefix, "dispatched"), (n) => n === 12))
      yield* sql`update ${table} set dispatched_at = now() - interval '2 hours'
        where id in (select id from ${table} order by id limit 7)`
      yield* Outbox.add(orderPlaced, { orderId: "pending", n: 0 }).pipe(Effect.provide(ctx))
      assert.strictEqual(yield* Outbox.prune({ maxAge: "1 hour", batchSize: 3 }).pipe(Effect.provide(ctx)), 7)
      assert.strictEqual(yield* Outbox.prune({ maxAge: "1 hour" }).pipe(Effect.provide(ctx)), 0)
      const invalid = yield* Effect.flip(Outbox.prune({ maxAge: "1 hour", batchSize: 0 }).pipe(Effect.provide(ctx)))
      assert.strictEqual(invalid._tag, "InvalidOptions")
      yield* waitUntil("the newest dispatched too", Effect.map(countRows(prefix, "dispatched"), (n) => n === 6))
    })))

  it.live("a retention of 0 deletes each event as it is dispatched, keeps per-key order, and keeps dead ones", () =>
    run(Effect.gen(function*() {
      const prefix = yield* uniquePrefix
      const broker = recordingBroker({
        current: (message) =>
          message.messageId === "dead-1"
            ? new Broker.PublishRejected({
              topic: message.routingKey,
              messageId: message.messageId,
              reason: "invalid",
              ambiguous: false,
              detail: "injected"
            })
            : undefined
      })
      const sql = yield* SqlClient.SqlClient
      const ctx = yield* Layer.build(
        PgOutbox.layer({ prefix, pollInterval: "100 millis", ordering: "per-key", retention: { maxAge: 0 } }).pipe(
          Layer.provide(broker.layer)
        )
      )
      for (let n = 0; n < 20; n++) {
        yield* Outbox.add(orderPlaced, { orderId: `k${n % 2}`, n }, { key: `k${n % 2}` }).pipe(Effect.provide(ctx))
      }
      yield* Outbox.add(orderPlaced, { orderId: "d", n: 0 }, { messageId: "dead-1" }).pipe(Effect.provide(ctx))
      const rows = sql<{ readonly message_id: string; readonly state: string }>`select message_id, state from ${
        sql(`${prefix}_outbox`)
      }`
      yield* waitUntil(
        "only the dead event is left",
        Effect.map(rows, (left) => left.length === 1 && left[0]?.state === "dead")
      )
      assert.strictEqual((yield* rows)[0]?.message_id, "dead-1")
      const published = broker.sent.filter((s) => s.messageId !== "dead-1").map((s) => decode(s.body))
      assert.strictEqual(published.length, 20)
      for (const key of ["k0", "k1"]) {
        const ns = published.filter((m) => m.orderId === key).map((m) => m.n)
        assert.deepStrictEqual(ns, [...ns].sort((a, b) => a - b), `order of ${key}`)
      }
    })))

  it.live("a defect in the broker does not stop the dispatcher: the batch rolls back and is published again", () =>
    run(Effect.gen(function*() {
      const prefix = yield* uniquePrefix
      const recording = recordingBroker()
      const inner = Context.get(yield* Layer.build(recording.layer), Broker.Broker)
      let calls = 0
      const flaky: Broker.Service = {
        ...inner,
        publishAllEncoded: (entries, options) =>
          ++calls === 1 ? Effect.die(new Error("driver bug")) : inner.publishAllEncoded(entries, options)
      }
      const ctx = yield* Layer.build(
        PgOutbox.layer({ prefix, pollInterval: "100 millis", concurrency: 1 }).pipe(
          Layer.provide(Layer.succeed(Broker.Broker, flaky))
        )
      )
      const id = yield* Outbox.add(orderPlaced, { orderId: "after-defect", n: 1 }).pipe(Effect.provide(ctx))
      yield* waitUntil(
        "the event is published after the defect",
        Effect.sync(() => recording.sent.some((s) => s.messageId === id))
      )
      yield* waitUntil("the row is dispatched", Effect.map(countRows(prefix, "dispatched"), (n) => n === 1))
      assert.isAtLeast(calls, 2)
    })))

  it.live("stats and metrics report pending events, lag, dead events and the dispatch rate", () =>
    run(Effect.gen(function*() {
      const prefix = yield* uniquePrefix
      const inject: { current: Inject | undefined } = {
        current: () => new Broker.BrokerUnavailable({ reason: "closed", detail: "injected outage" })
      }
      const broker = recordingBroker(inject)
      const ctx = yield* Layer.build(
        PgOutbox.layer({ prefix, pollInterval: "100 millis", metricsInterval: "50 millis" }).pipe(
          Layer.provide(broker.layer)
        )
      )
      const dispatchedBefore = (yield* Metric.value(Outbox.metrics.dispatched)).count
      for (let n = 0; n < 3; n++) yield* Outbox.add(orderPlaced, { orderId: `o${n}`, n }).pipe(Effect.provide(ctx))
      yield* waitUntil(
        "the pending gauge shows the backlog",
        Effect.map(Metric.value(Outbox.metrics.pending), (g) => g.value === 3)
      )
      const during = yield* Outbox.stats.pipe(Effect.provide(ctx))
      assert.strictEqual(during.pending, 3)
      assert.isAbove(during.oldestPendingAgeMs, 0)
      assert.strictEqual(during.dead, 0)

      inject.current = undefined
      yield* waitUntil("the backlog drains", Effect.map(Outbox.stats.pipe(Effect.provide(ctx)), (s) => s.pending === 0))
      const after = yield* Outbox.stats.pipe(Effect.provide(ctx))
      assert.strictEqual(after.oldestPendingAgeMs, 0)
      assert.closeTo(after.dispatchRatePerSecond, 3 / 60, 1e-9)
      assert.strictEqual((yield* Metric.value(Outbox.metrics.dispatched)).count - dispatchedBefore, 3)
      yield* waitUntil(
        "the pending gauge returns to 0",
        Effect.map(Metric.value(Outbox.metrics.pending), (g) => g.value === 0)
      )
    })))

  it.live("odd topics, keys and headers (quotes, semicolons, SQL) are stored and published verbatim", () =>
    run(Effect.gen(function*() {
      const prefix = yield* uniquePrefix
      const broker = recordingBroker()
      const ctx = yield* Layer.build(
        PgOutbox.layer({ prefix, pollInterval: "100 millis" }).pipe(Layer.provide(broker.layer))
      )
      const topic = Broker.topic(`o7.it's;"x";drop table ${prefix}_outbox;--.ünï`, orderPlaced.schema)
      const key = `'); delete from ${prefix}_outbox; -- "$1" \\ ::jsonb`
      const headers = { "x-sql": "'; drop table users; --", "quote\"name": "$1 $2 ::text", empty: "" }
      const message = { orderId: `'); truncate ${prefix}_outbox; --`, n: 7 }
      const id = yield* Outbox.add(topic, message, { key, headers }).pipe(Effect.provide(ctx))
      yield* waitUntil("published", Effect.sync(() => broker.sent.length === 1))
      const sent = broker.sent[0]
      assert.strictEqual(sent?.routingKey, topic.name)
      assert.strictEqual(sent?.messageId, id)
      assert.deepStrictEqual(decode(sent?.body), message)
      for (const [name, value] of Object.entries(headers)) assert.strictEqual(sent?.headers[name], value)
      const sql = yield* SqlClient.SqlClient
      const rows = yield* sql<{ topic: string; key: string; headers: Record<string, string> }>`
        select topic, key, headers from ${sql(`${prefix}_outbox`)}`
      assert.deepStrictEqual(rows.map((r) => [r.topic, r.key, r.headers]), [[topic.name, key, headers]])
    })))

  it.live("a dispatcher in another process (no in-process signal) is woken by NOTIFY long before its poll", () =>
    run(Effect.gen(function*() {
      const prefix = yield* uniquePrefix
      const broker = recordingBroker()
      const store = yield* Layer.build(PgOutbox.layerStore({ prefix }))
      yield* Layer.build(PgOutbox.dispatcher({ prefix, pollInterval: "60 seconds" }).pipe(Layer.provide(broker.layer)))
      // The listen connection is up once it shows in pg_listening_channels of some backend.
      const sql = yield* SqlClient.SqlClient
      yield* waitUntil(
        "the dispatcher listens",
        Effect.map(
          sql<{ n: string }>`select count(*) as n from pg_stat_activity where application_name = 'eb-outbox-listen'`,
          (rows) => Number(rows[0]?.n ?? 0) > 0
        )
      )
      const stats = yield* Outbox.stats.pipe(Effect.provide(store))
      assert.strictEqual(stats.pending, 0)
      for (let round = 0; round < 3; round++) {
        yield* Outbox.add(orderPlaced, { orderId: `r${round}`, n: round }).pipe(Effect.provide(store))
        yield* waitUntil(
          `event ${round} is published`,
          Effect.sync(() => broker.sent.length === round + 1),
          "5 seconds"
        )
      }
    })))
})
