import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, Layer, Redacted, Schedule, Scope } from "effect"
import * as PgLease from "../../src/layers/PgLease.js"
import * as Scheduler from "../../src/Scheduler.js"
import * as Trigger from "../../src/Trigger.js"
import { databaseUrl, runId, uniqueName } from "../fixtures/env.js"
import { type Enqueued, InstanceRef, Recorder, recorderLayer, tick } from "./fixtures.js"

/**
 * S1-S3 against real PostgreSQL on the live clock: replicas are scheduler instances in this
 * process, each with its own pool (`application_name` = its name) and, for the sustained cut, its
 * own role whose connections are refused and terminated. A stand-in TaskQueue records every
 * enqueue, so duplicates and gaps are counted exactly.
 */

const tablePrefix = uniqueName("sched")
const leaseTtl = 2000
const renewEvery = 500
const options: Scheduler.Options = {
  leaseTtl: Duration.millis(leaseTtl),
  renewEvery: Duration.millis(renewEvery),
  grace: "200 millis"
}

const urlFor = (role: string | undefined) =>
  role === undefined ? databaseUrl : databaseUrl.replace(/^postgres:\/\/[^@]*@/, `postgres://${role}@`)

const admin = PgClient.layer({ url: Redacted.make(databaseUrl), applicationName: `${tablePrefix}_admin` })

const sqlAdmin = <A, E>(f: (sql: SqlClient.SqlClient) => Effect.Effect<A, E>) =>
  Effect.flatMap(SqlClient.SqlClient, f).pipe(Effect.provide(admin))

/** Tables and roles of this run, dropped at the end. */
const fixture = Layer.scopedDiscard(Effect.acquireRelease(
  sqlAdmin((sql) =>
    Effect.gen(function*() {
      yield* PgLease.make({ tablePrefix }).pipe(Effect.provideService(SqlClient.SqlClient, sql))
      for (const r of ["a", "b"]) {
        const role = sql(`${tablePrefix}_${r}`)
        yield* sql`create role ${role} login`
        yield* sql`grant usage, create on schema public to ${role}`
        yield* sql`grant select, insert, update, delete on ${sql(`${tablePrefix}_lease`)}, ${
          sql(`${tablePrefix}_slots`)
        } to ${role}`
      }
    })
  ).pipe(Effect.orDie),
  () =>
    sqlAdmin((sql) =>
      Effect.gen(function*() {
        for (const r of ["a", "b"]) {
          const name = `${tablePrefix}_${r}`
          yield* sql`select pg_terminate_backend(pid) from pg_stat_activity where usename = ${name}`
          yield* sql`drop owned by ${sql(name)}`
          yield* sql`drop role if exists ${sql(name)}`
        }
        yield* sql`drop table if exists ${sql(`${tablePrefix}_lease`)}, ${sql(`${tablePrefix}_slots`)}`
      })
    ).pipe(Effect.orDie)
))

interface Instance {
  readonly name: string
  readonly service: Scheduler.Service
  readonly stop: Effect.Effect<void>
}

/** A scheduler replica with its own pool (and role, when given), in its own Scope. */
const startInstance = (
  name: string,
  definitions: ReadonlyArray<Scheduler.Definition>,
  role?: string
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const client = PgClient.layer({
      url: Redacted.make(urlFor(role)),
      applicationName: `${tablePrefix}_${name}`,
      maxConnections: 2
    })
    const lease = yield* Layer.buildWithScope(PgLease.layer({ tablePrefix }).pipe(Layer.provide(client)), scope)
    const service = yield* Scheduler.make(definitions, { owner: name, ...options }).pipe(
      Effect.provide(lease),
      Effect.provideService(InstanceRef, name),
      Scope.extend(scope)
    )
    return { name, service, stop: Scope.close(scope, Exit.void) } satisfies Instance
  }).pipe(Effect.orDie)

/** Polls `f` every 20 ms until it holds; fails the test after `within`. */
const waitFor = <E, R>(label: string, within: Duration.DurationInput, f: Effect.Effect<boolean, E, R>) =>
  f.pipe(
    Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced("20 millis") }),
    Effect.timeoutFail({ duration: within, onTimeout: () => new Error(`timed out waiting for: ${label}`) }),
    Effect.orDie
  )

const enqueued = Effect.map(Recorder, (r) => r.all())
const countWhere = (p: (e: Enqueued) => boolean) => Effect.map(enqueued, (all) => all.filter(p).length)
const slotOf = (e: Enqueued) => new Date((e.key ?? "").slice((e.key ?? "").indexOf("@") + 1)).getTime()

/** Duplicates and holes among the slots of `schedule`. */
const audit = (schedule: string) =>
  Effect.map(enqueued, (all) => {
    const slots = all.filter((e) => e.key?.startsWith(`${schedule}@`)).map(slotOf).sort((a, b) => a - b)
    let duplicates = 0
    let missing = 0
    for (let i = 1; i < slots.length; i++) {
      const gap = (slots[i] ?? 0) - (slots[i - 1] ?? 0)
      if (gap === 0) duplicates++
      else if (gap > 1000) missing += gap / 1000 - 1
    }
    return { slots, duplicates, missing }
  })

const leaderOf = (instances: ReadonlyArray<Instance>) =>
  Effect.map(
    Effect.forEach(instances, (i) => i.service.status),
    (statuses) => statuses.filter((s) => s.role === "leader").map((s) => s.owner)
  )

const every = (name: string, missed: Scheduler.MissedPolicy) =>
  Scheduler.schedule(name, tick, { trigger: Trigger.interval("1 second"), payload: { n: 0 }, missed })

const env = Layer.merge(recorderLayer, fixture)

describe(`Scheduler on PostgreSQL (run ${runId})`, () => {
  it.scopedLive(
    "S1: two replicas, 1 s interval, 11 s: every slot fired exactly once, by one leader",
    () =>
      Effect.gen(function*() {
        const defs = [every("s1", Scheduler.catchUp({ max: 100 }))]
        const a = yield* startInstance("s1a", defs)
        const b = yield* startInstance("s1b", defs)
        yield* waitFor(
          "11 slots",
          "20 seconds",
          Effect.map(countWhere((e) => e.key?.startsWith("s1@") ?? false), (n) => n >= 11)
        )
        yield* waitFor("one leader", "1 second", Effect.map(leaderOf([a, b]), (l) => l.length === 1))
        yield* Effect.all([a.stop, b.stop])
        const { duplicates, missing, slots } = yield* audit("s1")
        assert.isAtLeast(slots.length, 11)
        assert.strictEqual(duplicates, 0)
        assert.strictEqual(missing, 0)
        const firers = new Set((yield* enqueued).filter((e) => e.key?.startsWith("s1@")).map((e) => e.instance))
        assert.strictEqual(firers.size, 1, "only the leader fired")
      }).pipe(Effect.scoped, Effect.provide(env)),
    { timeout: 40_000 }
  )

  it.scopedLive(
    "S2: the leader's scope closes: the standby takes over within renewEvery; no slot twice or lost",
    () =>
      Effect.gen(function*() {
        const defs = [every("s2", Scheduler.catchUp({ max: 100 }))]
        const a = yield* startInstance("s2a", defs)
        const b = yield* startInstance("s2b", defs)
        yield* waitFor(
          "4 slots",
          "10 seconds",
          Effect.map(countWhere((e) => e.key?.startsWith("s2@") ?? false), (n) => n >= 4)
        )
        const [leaderName] = yield* leaderOf([a, b])
        const [leader, standby] = leaderName === "s2a" ? [a, b] : [b, a]
        const killedAt = yield* Clock.currentTimeMillis
        yield* leader.stop
        yield* waitFor(
          "standby leads",
          Duration.millis(renewEvery + 1000),
          Effect.map(standby.service.status, (s) => s.role === "leader")
        )
        const takeover = (yield* Clock.currentTimeMillis) - killedAt
        yield* waitFor(
          "4 slots from the new leader",
          "10 seconds",
          Effect.map(countWhere((e) => e.instance === standby.name), (n) => n >= 4)
        )
        yield* standby.stop
        const { duplicates, missing } = yield* audit("s2")
        assert.strictEqual(duplicates, 0)
        assert.strictEqual(missing, 0)
        assert.isAtMost(takeover, renewEvery + 1000)
      }).pipe(Effect.scoped, Effect.provide(env)),
    { timeout: 40_000 }
  )

  it.scopedLive(
    "S2: pg_terminate_backend of the leader's lease connections: recovers, no slot twice or lost",
    () =>
      Effect.gen(function*() {
        const defs = [every("s2t", Scheduler.catchUp({ max: 100 }))]
        const a = yield* startInstance("s2ta", defs)
        const b = yield* startInstance("s2tb", defs)
        yield* waitFor(
          "3 slots",
          "10 seconds",
          Effect.map(countWhere((e) => e.key?.startsWith("s2t@") ?? false), (n) => n >= 3)
        )
        const [leaderName] = yield* leaderOf([a, b])
        const terminated = yield* sqlAdmin((sql) =>
          sql<{ pid: number }>`select pg_terminate_backend(pid) as pid from pg_stat_activity
          where application_name = ${`${tablePrefix}_${leaderName}`}`
        ).pipe(Effect.orDie)
        assert.isAtLeast(terminated.length, 1, "the leader had a lease connection to terminate")
        const before = (yield* enqueued).length
        yield* waitFor("5 more slots", "15 seconds", Effect.map(enqueued, (all) => all.length >= before + 5))
        yield* Effect.all([a.stop, b.stop])
        const { duplicates, missing } = yield* audit("s2t")
        assert.strictEqual(duplicates, 0)
        assert.strictEqual(missing, 0)
      }).pipe(Effect.scoped, Effect.provide(env)),
    { timeout: 40_000 }
  )

  it.scopedLive(
    "S2: the leader is cut off from PostgreSQL: it stops firing, the standby takes over within ttl + renewEvery",
    () =>
      Effect.gen(function*() {
        const defs = [every("s2c", Scheduler.catchUp({ max: 100 }))]
        const a = yield* startInstance("a", defs, `${tablePrefix}_a`)
        yield* waitFor("a leads", "5 seconds", Effect.map(a.service.status, (s) => s.role === "leader"))
        const b = yield* startInstance("b", defs, `${tablePrefix}_b`)
        yield* waitFor("3 slots", "10 seconds", Effect.map(countWhere((e) => e.instance === "a"), (n) => n >= 3))
        const role = `${tablePrefix}_a`
        // Refuse a's new connections and kill its open ones: it can no longer renew.
        yield* Effect.addFinalizer(() =>
          sqlAdmin((sql) => sql`alter role ${sql(role)} connection limit -1`).pipe(Effect.orDie)
        )
        const cutAt = yield* Clock.currentTimeMillis
        yield* sqlAdmin((sql) =>
          Effect.zipRight(
            sql`alter role ${sql(role)} connection limit 0`,
            sql`select pg_terminate_backend(pid) from pg_stat_activity where usename = ${role}`
          )
        ).pipe(Effect.orDie)
        yield* waitFor(
          "b leads",
          Duration.millis(leaseTtl + renewEvery + 1500),
          Effect.map(b.service.status, (s) => s.role === "leader")
        )
        const takeover = (yield* Clock.currentTimeMillis) - cutAt
        yield* waitFor(
          "a stood down",
          Duration.millis(leaseTtl + renewEvery + 1500),
          Effect.map(a.service.status, (s) => s.role === "standby")
        )
        yield* waitFor("3 slots from b", "10 seconds", Effect.map(countWhere((e) => e.instance === "b"), (n) => n >= 3))
        yield* Effect.all([b.stop, a.stop])
        const all = (yield* enqueued).filter((e) => e.key?.startsWith("s2c@"))
        const firstOfB = Math.min(...all.filter((e) => e.instance === "b").map((e) => e.at))
        const lastOfA = Math.max(...all.filter((e) => e.instance === "a").map((e) => e.at))
        assert.isBelow(lastOfA, firstOfB, "the old leader fired nothing once the new one started")
        assert.isAtMost(lastOfA - cutAt, leaseTtl, "the old leader stopped within its lease")
        assert.isAtMost(takeover, leaseTtl + renewEvery + 1500)
        const { duplicates, missing } = yield* audit("s2c")
        assert.strictEqual(duplicates, 0)
        assert.strictEqual(missing, 0, "catchUp fired the slots of the takeover gap")
      }).pipe(Effect.scoped, Effect.provide(env)),
    { timeout: 40_000 }
  )

  it.scopedLive(
    "S3: catchUp({ max: 3 }) after downtime fires exactly the latest 3 missed slots, then on time",
    () =>
      Effect.gen(function*() {
        const defs = [every("s3", Scheduler.catchUp({ max: 3 }))]
        const a = yield* startInstance("s3a", defs)
        yield* waitFor("2 slots", "10 seconds", Effect.map(countWhere((e) => e.instance === "s3a"), (n) => n >= 2))
        yield* a.stop
        const lastOfA = Math.max(...(yield* enqueued).filter((e) => e.instance === "s3a").map(slotOf))
        yield* Effect.sleep("5500 millis") // the downtime itself: ~5 slots pass with no scheduler
        const b = yield* startInstance("s3b", defs)
        yield* waitFor(
          "6 slots from b",
          "10 seconds",
          Effect.map(countWhere((e) => e.instance === "s3b"), (n) => n >= 6)
        )
        yield* b.stop
        const fromB = (yield* enqueued).filter((e) => e.instance === "s3b")
        const burstAt = fromB[0]?.at ?? 0
        const burst = fromB.filter((e) => e.at - burstAt < 150)
        const late = burst.filter((e) => slotOf(e) < burstAt - 200)
        assert.strictEqual(late.length, 3, "exactly max overdue slots fired")
        const { duplicates, slots } = yield* audit("s3")
        assert.strictEqual(duplicates, 0)
        const skipped = slots.filter((s) => s > lastOfA).length
        const firstOfB = Math.min(...fromB.map(slotOf))
        assert.isAbove(firstOfB - lastOfA, 1000, "older missed slots beyond max were not fired")
        assert.strictEqual(skipped, fromB.length, "b fired contiguously after the catch-up")
        const bSlots = fromB.map(slotOf)
        for (let i = 1; i < bSlots.length; i++) assert.strictEqual((bSlots[i] ?? 0) - (bSlots[i - 1] ?? 0), 1000)
        const persisted = yield* sqlAdmin((sql) =>
          sql<{ claimed: string }>`select claimed::text as claimed from ${
            sql(`${tablePrefix}_slots`)
          } where schedule = 's3'`
        ).pipe(Effect.orDie)
        assert.strictEqual(Number(persisted[0]?.claimed), Math.max(...bSlots), "the last fired slot is persisted")
      }).pipe(Effect.scoped, Effect.provide(env)),
    { timeout: 40_000 }
  )
})
