/** The outbox end to end on Redis: committed events reach a RedisBroker subscriber. */
import { SqlClient } from "@effect/sql"
import type { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Queue, Redacted, type Scope, Tracer } from "effect"
import { Broker } from "../../src/index.js"
import * as PgOutbox from "../../src/layers/PgOutbox.js"
import * as RedisBroker from "../../src/layers/RedisBroker.js"
import * as Outbox from "../../src/Outbox.js"
import { runId, uniqueName } from "../fixtures/env.js"
import { cleanupLayer, redisUrl } from "../support/redis.js"
import { orderPlaced, pg, uniquePrefix } from "./fixtures.js"

const run = <A, E>(body: Effect.Effect<A, E, SqlClient.SqlClient | PgClient.PgClient | Scope.Scope>) =>
  Effect.scoped(body).pipe(Effect.provide(pg()))

const keyPrefix = `to${runId}`
const brokerLayer = RedisBroker.layer({ url: Redacted.make(redisUrl), prefix: keyPrefix }).pipe(
  Layer.provideMerge(cleanupLayer(keyPrefix))
)

const incoming = Tracer.externalSpan({
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  spanId: "00f067aa0ba902b7",
  sampled: true
})

describe("PgOutbox on Redis", () => {
  it.live("committed events reach a RedisBroker subscriber decoded, with their headers and the producer's trace", () =>
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
        assert.strictEqual(envelope.traceparent, `00-${sent.span.traceId}-${sent.span.spanId}-01`)
      }
    })).pipe(Effect.timeout("30 seconds")))
})
