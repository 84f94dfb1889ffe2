/** The outbox end to end on NATS JetStream: committed events reach a subscriber through the dispatcher. */
import { SqlClient } from "@effect/sql"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Queue, Redacted, Tracer } from "effect"
import { Broker } from "../../src/index.js"
import * as NatsBroker from "../../src/layers/NatsBroker.js"
import * as PgOutbox from "../../src/layers/PgOutbox.js"
import * as Outbox from "../../src/Outbox.js"
import { runId, uniqueName } from "../fixtures/env.js"
import { natsUrl, scopedStreams } from "../support/nats.js"
import { orderPlaced, pg, tally, uniquePrefix } from "./fixtures.js"

const stream = `O${runId}`

const incoming = Tracer.externalSpan({
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  spanId: "00f067aa0ba902b7",
  sampled: true
})

describe("PgOutbox on NATS", () => {
  it.live("committed events reach a NATS subscriber decoded, once each, with their headers and the producer's trace", () =>
    Effect.gen(function*() {
      yield* scopedStreams(stream)
      const prefix = yield* uniquePrefix
      const brokerContext = yield* Layer.build(NatsBroker.layer({ url: Redacted.make(natsUrl), stream }))
      const broker = Context.get(brokerContext, Broker.Broker)
      const received = yield* Queue.unbounded<readonly [typeof orderPlaced.schema.Type, Broker.Envelope]>()
      yield* broker.subscribe(orderPlaced, (message, envelope) => Queue.offer(received, [message, envelope]), {
        group: uniqueName("outbox").replaceAll("_", "-")
      })
      const ctx = yield* Layer.build(
        PgOutbox.layer({ prefix, pollInterval: "200 millis" }).pipe(Layer.provide(Layer.succeedContext(brokerContext)))
      )
      const sql = yield* SqlClient.SqlClient
      const count = 300
      const ids = yield* sql.withTransaction(
        Effect.forEach(
          Array.from({ length: count }, (_, i) => i),
          (n) => Outbox.add(orderPlaced, { orderId: `o${n}`, n }, { key: "customer-1", headers: { tenant: "acme" } })
        )
      ).pipe(Effect.withSpan("checkout"), Effect.withParentSpan(incoming), Effect.provide(ctx))
      const messages = yield* Effect.replicateEffect(Queue.take(received), count)
      const seen = tally(messages.map(([, e]) => e.id))
      assert.strictEqual(seen.unique, count)
      assert.strictEqual(seen.duplicates, 0)
      assert.sameMembers(messages.map(([, e]) => e.id), [...ids])
      for (const [message, envelope] of messages) {
        assert.strictEqual(message.orderId, `o${message.n}`)
        assert.strictEqual(envelope.headers["tenant"], "acme")
        assert.strictEqual(envelope.traceparent, `00-${incoming.traceId}-${incoming.spanId}-01`)
      }
    }).pipe(Effect.scoped, Effect.provide(pg()), Effect.timeout("60 seconds")))
})
