/**
 * The Inbox under the fault that makes RabbitMQ redeliver what handlers already finished: the
 * consumer's connection is cut (TCP reset through a proxy) while handlers have committed but
 * their acks have not reached the broker. Deliveries are duplicated, as without the inbox;
 * effects (rows in the handler's own table) are not, and nothing is lost.
 */
import { SqlClient } from "@effect/sql"
import { assert, layer } from "@effect/vitest"
import { Context, Deferred, Duration, Effect, Layer, Redacted, Schema } from "effect"
import { Broker, Inbox } from "../../src/index.js"
import * as PgInbox from "../../src/layers/PgInbox.js"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import { runId, uniqueName } from "../fixtures/env.js"
import { pg } from "../outbox/fixtures.js"
import { scopedVhost, urlFor } from "../support/rabbitmq.js"
import { tcpProxy } from "../support/tcpProxy.js"

const prefix = `t_${runId}_ibf`
const effects = `${prefix}_effects`
const vhost = `eb-inbox-faults-${runId}`

const setup = Layer.scopedDiscard(Effect.gen(function*() {
  yield* scopedVhost(vhost)
  const sql = yield* SqlClient.SqlClient
  yield* sql`create table ${sql(effects)} (id text not null)`
  yield* Effect.addFinalizer(() => Effect.orDie(sql`drop table if exists ${sql(effects)}, ${sql(`${prefix}_inbox`)}`))
}))

const live = Layer.mergeAll(PgInbox.layer({ prefix }), setup).pipe(Layer.provideMerge(pg()))

const Item = Schema.Struct({ id: Schema.String })

const waitFor = (label: string, condition: () => boolean, seconds: number) =>
  Effect.gen(function*() {
    while (!condition()) yield* Effect.sleep("20 millis")
  }).pipe(
    Effect.timeoutFail({ duration: Duration.seconds(seconds), onTimeout: () => new Error(`timed out: ${label}`) })
  )

layer(live, { excludeTestServices: true, timeout: "120 seconds" })("PgInbox faults", (it) => {
  it.scoped(
    "connection reset with committed but unacked deliveries under prefetch: deliveries duplicated, effects not, none lost",
    () =>
      Effect.gen(function*() {
        const proxy = yield* tcpProxy("127.0.0.1", 5672)
        const broker = Context.get(
          yield* Layer.build(RabbitMQBroker.layer({ url: Redacted.make(proxy.url(urlFor(vhost))), prefix: "ibf" })),
          Broker.Broker
        )
        const sql = yield* SqlClient.SqlClient
        const topic = Broker.topic(`${uniqueName("ibf").replaceAll("_", "-")}.x`, Item)
        const group = uniqueName("g")
        const concurrency = 20
        const prefetch = 100
        const total = 2000
        yield* broker.declare(topic, { group })
        const ids = Array.from({ length: total }, (_, i) => `m-${i}`)
        const outcomes = yield* broker.publishAll(ids.map((id) => Broker.entry(topic, { id }, { messageId: id })))
        assert.isTrue(outcomes.every((o) => o._tag === "Right"), "every publish confirmed")

        const deliveries = new Map<string, number>()
        const gate = yield* Deferred.make<void>()
        let committed = 0
        // After 300 commits, handlers wait at a gate after their commit, before their ack: the
        // reset then lands with `concurrency` deliveries done but unacked, and more prefetched.
        yield* broker.subscribe(
          topic,
          (item, envelope) =>
            Effect.sync(() => deliveries.set(item.id, (deliveries.get(item.id) ?? 0) + 1)).pipe(
              Effect.zipRight(
                Inbox.subscriber(group, (i: typeof item) => sql`insert into ${sql(effects)} values (${i.id})`)(
                  item,
                  envelope
                )
              ),
              Effect.zipRight(Effect.suspend(() => ++committed >= 300 ? Deferred.await(gate) : Effect.void))
            ),
          { group, concurrency, prefetch }
        )
        yield* waitFor("handlers held after their commit", () => committed >= 300 + concurrency - 1, 30)
        yield* proxy.setMode("reset")
        yield* proxy.setMode("pass")
        yield* Deferred.succeed(gate, undefined)
        const rowCount = Effect.map(
          sql<{ n: number; distinct: number }>`select count(*)::int as n, count(distinct id)::int as distinct
            from ${sql(effects)}`,
          (rows) => rows[0] ?? { n: 0, distinct: 0 }
        )
        let rows = yield* rowCount
        while (rows.distinct < total) {
          yield* Effect.sleep("100 millis")
          rows = yield* rowCount
        }
        yield* Effect.sleep("500 millis") // late redeliveries, if any, land before counting
        rows = yield* rowCount
        const duplicatedDeliveries = [...deliveries.values()].reduce((sum, n) => sum + n - 1, 0)
        console.log(
          `inbox fault: ${total} messages, deliveries ${
            [...deliveries.values()].reduce((s, n) => s + n, 0)
          } (duplicated ${duplicatedDeliveries}), effect rows ${rows.n} (distinct ${rows.distinct})`
        )
        assert.strictEqual(rows.distinct, total, "lost 0")
        assert.strictEqual(rows.n - rows.distinct, 0, "effects duplicated 0")
        assert.isAbove(duplicatedDeliveries, 0, "the fault did redeliver finished messages")
        assert.isAtMost(duplicatedDeliveries, prefetch, "duplicates within the prefetch")
      }).pipe(Effect.timeout("90 seconds")),
    { timeout: 120_000 }
  )
})
