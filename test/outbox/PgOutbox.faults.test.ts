import { SqlClient } from "@effect/sql"
import type { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Context, type Duration, Effect, Layer, Redacted, Schedule, type Scope } from "effect"
import { type ChildProcess, fork } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Broker } from "../../src/index.js"
import * as PgOutbox from "../../src/layers/PgOutbox.js"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import * as Outbox from "../../src/Outbox.js"
import { runId } from "../fixtures/env.js"
import { drain, rabbitmqctl, rawConnection, scopedVhost, urlFor } from "../support/rabbitmq.js"
import { orderPlaced, pg, recordingBroker, tally, uniquePrefix, waitUntil } from "./fixtures.js"

const run = <A, E>(body: Effect.Effect<A, E, SqlClient.SqlClient | PgClient.PgClient | Scope.Scope>) =>
  Effect.scoped(body).pipe(Effect.provide(pg()))

const childScript = fileURLToPath(new URL("./dispatcher-child.ts", import.meta.url))

type ChildMessage = { _tag: "ready" } | { _tag: "published"; id: string } | { _tag: "crash"; detail: string }

/** A dispatcher process whose confirmed publishes land in `ledger`; SIGKILLed when the scope closes. */
const spawnDispatcher = (prefix: string, ledger: Array<string>, crashes: Array<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = fork(childScript, [prefix], {
        execArgv: ["--import", "tsx"],
        stdio: ["ignore", "inherit", "inherit", "ipc"]
      })
      child.on("message", (message: ChildMessage) => {
        if (message._tag === "published") ledger.push(message.id)
        else if (message._tag === "crash") crashes.push(message.detail)
      })
      return child
    }),
    (child) => Effect.sync(() => kill(child))
  )

const kill = (child: ChildProcess) => {
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
}

const exited = (child: ChildProcess) =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
  })

const countState = (prefix: string, state: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ n: string }>`select count(*) as n from ${sql(`${prefix}_outbox`)} where state = ${state}`
    return Number(rows[0]?.n ?? 0)
  })

const terminate = (applicationName: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ pid: number }>`select pg_terminate_backend(pid) as ok, pid from pg_stat_activity
      where application_name = ${applicationName}`
    return rows.length
  })

const connections = (applicationName: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<
      { n: string }
    >`select count(*) as n from pg_stat_activity where application_name = ${applicationName}`
    return Number(rows[0]?.n ?? 0)
  })

describe("PgOutbox faults", () => {
  it.live(
    "a dispatcher process killed with SIGKILL mid-batch: every event published, duplicates at most one batch",
    () =>
      run(Effect.gen(function*() {
        const prefix = yield* uniquePrefix
        const events = 1500
        const batchSize = 200 // as in dispatcher-child.ts
        const store = yield* Layer.build(PgOutbox.layerStore({ prefix }))
        const sql = yield* SqlClient.SqlClient
        const ids: Array<string> = []
        for (let chunk = 0; chunk < events / 500; chunk++) {
          const added = yield* sql.withTransaction(Effect.forEach(
            Array.from({ length: 500 }, (_, i) => chunk * 500 + i),
            (n) => Outbox.add(orderPlaced, { orderId: `o${n}`, n })
          )).pipe(Effect.provide(store))
          for (const id of added) ids.push(id)
        }
        const ledger: Array<string> = []
        const crashes: Array<string> = []
        const first = yield* spawnDispatcher(prefix, ledger, crashes)
        // Kill in the middle of the fourth batch (the child publishes one message per millisecond).
        yield* waitUntil(
          "the first dispatcher is mid-batch",
          Effect.sync(() => ledger.length >= 3 * batchSize + batchSize / 2),
          "60 seconds"
        )
        kill(first)
        yield* exited(first)
        const publishedBeforeKill = ledger.length
        const dispatchedBeforeKill = yield* countState(prefix, "dispatched")
        assert.isBelow(dispatchedBeforeKill, publishedBeforeKill, "the kill landed between publish and mark")

        yield* spawnDispatcher(prefix, ledger, crashes)
        yield* waitUntil(
          "every event is dispatched",
          Effect.map(countState(prefix, "pending"), (n) => n === 0),
          "60 seconds"
        )
        const counted = tally(ledger)
        const lost = ids.filter((id) => !counted.counts.has(id)).length
        yield* Effect.logInfo("SIGKILL fault ledger").pipe(
          Effect.annotateLogs({
            events,
            publishedBeforeKill,
            dispatchedBeforeKill,
            duplicates: counted.duplicates,
            lost
          })
        )
        assert.strictEqual(lost, 0)
        assert.isAtMost(counted.duplicates, batchSize)
        assert.strictEqual(counted.duplicates, publishedBeforeKill - dispatchedBeforeKill)
        assert.deepStrictEqual(crashes, [])
      })),
    120_000
  )

  it.live(
    "pg_terminate_backend on the dispatcher's and the LISTEN connections: recovers, no event waits longer than the poll interval",
    () =>
      run(Effect.gen(function*() {
        const prefix = yield* uniquePrefix
        const dispatchName = `eb-outbox-dispatch-${runId}`
        const listenName = `eb-outbox-listen-${runId}`
        const pollMs = 2000
        const broker = recordingBroker()
        const store = yield* Layer.build(
          PgOutbox.layerStore({ prefix }).pipe(Layer.provide(pg(`eb-outbox-producer-${runId}`)))
        )
        // No Outbox in the dispatcher's context: it is woken by NOTIFY (or its poll) only, like a separate process.
        yield* Layer.build(
          PgOutbox.dispatcher({ prefix, pollInterval: `${pollMs} millis`, listenApplicationName: listenName }).pipe(
            Layer.provide(Layer.merge(broker.layer, pg(dispatchName)))
          )
        )
        yield* waitUntil(
          "both connections are up",
          Effect.zipWith(connections(dispatchName), connections(listenName), (d, l) => d > 0 && l > 0)
        )

        const committed = new Map<string, number>()
        const produce = (count: number, every: Duration.DurationInput) =>
          Effect.forEach(Array.from({ length: count }, (_, i) => i), (n) =>
            Outbox.add(orderPlaced, { orderId: `o${n}`, n }).pipe(
              Effect.provide(store),
              Effect.tap((id) =>
                Effect.sync(() => committed.set(id, Date.now()))
              ),
              Effect.zipLeft(Effect.sleep(every))
            ), { discard: true })

        yield* produce(20, "20 millis")
        for (let round = 0; round < 2; round++) {
          yield* waitUntil(
            "both connections are up",
            Effect.zipWith(connections(dispatchName), connections(listenName), (d, l) =>
              d > 0 && l > 0)
          )
          const killed = (yield* terminate(dispatchName)) + (yield* terminate(listenName))
          assert.isAtLeast(killed, 2)
          yield* produce(30, "100 millis")
        }
        yield* waitUntil(
          "every event is published",
          Effect.sync(() => tally(broker.sent.map((s) => s.messageId)).unique === committed.size)
        )
        yield* waitUntil("the listen connection is back", Effect.map(connections(listenName), (n) => n === 1))

        const confirmedAt = new Map(broker.sent.map((s) => [s.messageId, s.confirmedAt] as const))
        const waits = [...committed].map(([id, at]) => (confirmedAt.get(id) ?? Number.POSITIVE_INFINITY) - at)
        const worst = Math.max(...waits)
        yield* Effect.logInfo("pg_terminate_backend fault").pipe(
          Effect.annotateLogs({ events: committed.size, worstWaitMs: worst })
        )
        assert.isBelow(worst, pollMs)
      })),
    60_000
  )

  it.live(
    "RabbitMQ down for 5 s (stop_app): events accumulate, then drain; none lost",
    () =>
      run(Effect.gen(function*() {
        const prefix = yield* uniquePrefix
        const vhost = yield* scopedVhost(`eb-test-outbox-${runId}`)
        const url = urlFor(vhost)
        const group = "outbox-faults"
        const brokerPrefix = `t${runId}`
        const brokerLayer = RabbitMQBroker.layer({
          url: Redacted.make(url),
          prefix: brokerPrefix,
          publishTimeout: "3 seconds"
        })
        const brokerContext = yield* Layer.build(brokerLayer)
        const broker = Context.get(brokerContext, Broker.Broker)
        yield* broker.declare(orderPlaced, { group })
        const ctx = yield* Layer.build(
          PgOutbox.layer({ prefix, pollInterval: "500 millis", brokerBackoff: Schedule.spaced("250 millis") }).pipe(
            Layer.provide(Layer.succeedContext(brokerContext))
          )
        )
        const ids: Array<string> = []
        const produce = (count: number) =>
          Effect.forEach(Array.from({ length: count }, (_, i) => i), (n) =>
            Outbox.add(orderPlaced, { orderId: `o${ids.length}`, n }).pipe(
              Effect.provide(ctx),
              Effect.tap((id) =>
                Effect.sync(() => ids.push(id))
              ),
              Effect.zipLeft(Effect.sleep("20 millis"))
            ), { discard: true })

        yield* produce(50)
        let maxPending = 0
        yield* Effect.acquireUseRelease(
          rabbitmqctl("stop_app"),
          () =>
            Effect.gen(function*() {
              yield* produce(150) // ~3 s of writes while the broker is away
              maxPending = (yield* Outbox.stats.pipe(Effect.provide(ctx))).pending
              yield* Effect.sleep("2 seconds") // the outage lasts 5 s in all
            }),
          () =>
            Effect.orDie(Effect.zipRight(rabbitmqctl("start_app"), rabbitmqctl("await_startup")))
        )
        yield* produce(50)
        yield* waitUntil(
          "the backlog drains",
          Effect.map(countState(prefix, "pending"), (n) => n === 0),
          "60 seconds"
        )
        assert.isAbove(maxPending, 100, "events accumulated during the outage")
        assert.strictEqual(yield* countState(prefix, "dead"), 0)

        const model = yield* rawConnection(url)
        const messages = yield* drain(model, `${brokerPrefix}.group.${group}`)
        const counted = tally(messages.map((m) => String(m.properties.messageId)))
        const lost = ids.filter((id) => !counted.counts.has(id)).length
        yield* Effect.logInfo("broker down fault").pipe(
          Effect.annotateLogs({ events: ids.length, maxPending, duplicates: counted.duplicates, lost })
        )
        assert.strictEqual(lost, 0)
      })),
    120_000
  )
})
