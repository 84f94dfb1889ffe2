import { SqlClient } from "@effect/sql"
import { assert, describe, it, layer } from "@effect/vitest"
import { Effect, Layer, Option, Schema } from "effect"
import * as Broker from "../../src/Broker.js"
import * as Health from "../../src/Health.js"
import * as HealthSql from "../../src/HealthSql.js"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import * as PgliteClient from "../../src/layers/PgliteClient.js"
import * as PgOutbox from "../../src/layers/PgOutbox.js"
import * as Outbox from "../../src/Outbox.js"
import * as Scheduler from "../../src/Scheduler.js"

const Ping = Broker.topic("health.ping", Schema.Struct({ n: Schema.Number }))

describe("Health checks of the services", () => {
  it.scoped("consumers is down until enough subscriptions are attached", () =>
    Effect.gen(function*() {
      const check = Health.consumers(1)
      assert.strictEqual((yield* check).status, "down")
      yield* Broker.subscribe(Ping, () => Effect.void, { group: "health-check" })
      const up = yield* check
      assert.strictEqual(up.status, "up")
      assert.include(up.detail ?? "", "1 of 1")
    }).pipe(Effect.provide(MemoryBroker.layer())))

  it.effect("scheduler reports the role and next fires, up as leader and as standby", () =>
    Effect.gen(function*() {
      const next = new Date("2026-11-27T12:00:00.000Z")
      const fake = (role: "leader" | "standby") =>
        Layer.succeed(Scheduler.Scheduler, {
          [Scheduler.TypeId]: Scheduler.TypeId,
          status: Effect.succeed({
            owner: "replica-1",
            role,
            schedules: [{ name: "digest", nextFire: Option.some(next), lastFired: Option.none() }]
          })
        })
      const leader = yield* Health.scheduler.pipe(Effect.provide(fake("leader")))
      assert.deepInclude(leader, { status: "up", detail: "leader", role: "leader" })
      assert.deepStrictEqual(leader.schedules, [{ name: "digest", nextFire: next.toISOString() }])
      const standby = yield* Health.scheduler.pipe(Effect.provide(fake("standby")))
      assert.deepInclude(standby, { status: "up", role: "standby" })
    }))
})

// A store without a dispatcher: added events stay pending, so the lag only grows.
layer(
  PgOutbox.layerStore({ notify: false }).pipe(Layer.provideMerge(PgliteClient.layer())),
  { excludeTestServices: true, timeout: "60 seconds" }
)("Health.outbox and HealthSql.ping on an outbox without a dispatcher", (it) => {
  it.effect("HealthSql.ping is up when the database answers", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* HealthSql.ping, { status: "up", detail: "SELECT 1 answered" })
    }))

  it.effect("is up within the allowed lag and down beyond it, with the outbox figures", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* Outbox.add(Ping, { n: 1 }).pipe(sql.withTransaction)
      const relaxed = yield* Health.outbox({ maxLag: "1 hour" })
      assert.deepInclude(relaxed, { status: "up", pending: 1, dead: 0 })
      // Wait (bounded) until the event is measurably old, then a zero allowance reports down.
      yield* Outbox.stats.pipe(
        Effect.repeat({ until: (stats) => stats.oldestPendingAgeMs > 0 }),
        Effect.timeout("10 seconds")
      )
      const strict = yield* Health.outbox({ maxLag: "0 millis" })
      assert.strictEqual(strict.status, "down")
      assert.include(strict.detail ?? "", "1 pending")
    }))
})
