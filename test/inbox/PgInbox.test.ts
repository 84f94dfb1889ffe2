import { SqlClient } from "@effect/sql"
import { assert, describe, it, layer } from "@effect/vitest"
import { Cause, Context, Effect, Exit, Layer, Option } from "effect"
import { Inbox } from "../../src/index.js"
import * as PgInbox from "../../src/layers/PgInbox.js"
import { runId, uniqueName } from "../fixtures/env.js"
import { pg } from "../outbox/fixtures.js"
import { inboxContract } from "./contract.js"

const prefix = `t_${runId}_ib`
const effectsTable = `${prefix}_effects`

/** The handler's own table, created for the run and dropped with the inbox table after it. */
const tables = Layer.scopedDiscard(Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`create table ${sql(effectsTable)} (label text not null)`
  yield* Effect.addFinalizer(() =>
    Effect.orDie(sql`drop table if exists ${sql(effectsTable)}, ${sql(`${prefix}_inbox`)}`)
  )
}))

const live = Layer.mergeAll(PgInbox.layer({ prefix }), tables).pipe(Layer.provideMerge(pg()))

inboxContract("PgInbox", live, {
  transactional: true,
  write: (label) =>
    Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.orDie(sql`insert into ${sql(effectsTable)} values (${label})`)),
  count: (label) =>
    Effect.flatMap(
      SqlClient.SqlClient,
      (sql) =>
        Effect.orDie(sql<{ n: number }>`select count(*)::int as n from ${sql(effectsTable)} where label = ${label}`)
    ).pipe(Effect.map((rows) => rows[0]?.n ?? 0))
})

const effectsOf = (label: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      Effect.orDie(sql<{ n: number }>`select count(*)::int as n from ${sql(effectsTable)} where label = ${label}`)
  ).pipe(Effect.map((rows) => rows[0]?.n ?? 0))

layer(live, { excludeTestServices: true, timeout: "60 seconds" })("PgInbox transactions", (it) => {
  it.effect("inside the caller's transaction the record joins it: rolled back with it, kept when it commits", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const inbox = yield* Inbox.Inbox
      const consumer = uniqueName("outer")
      const label = uniqueName("outer")
      const write = Effect.orDie(sql`insert into ${sql(effectsTable)} values (${label})`)
      const aborted = yield* Effect.exit(sql.withTransaction(
        Effect.zipRight(inbox.run(consumer, "m", write), Effect.fail("abort the outer transaction"))
      ))
      assert.isTrue(Exit.isFailure(aborted))
      assert.strictEqual(yield* effectsOf(label), 0)
      assert.strictEqual((yield* sql.withTransaction(inbox.run(consumer, "m", write)))._tag, "Ran", "forgotten")
      assert.strictEqual((yield* inbox.run(consumer, "m", write))._tag, "Duplicate")
      assert.strictEqual(yield* effectsOf(label), 1)
    }))

  it.effect("an id PostgreSQL cannot store (U+0000) fails with SqlError; a failed record leaves no connection aborted", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const inbox = yield* Inbox.Inbox
      const label = uniqueName("nul")
      const write = Effect.orDie(sql`insert into ${sql(effectsTable)} values (${label})`)
      const nul = yield* Effect.exit(inbox.run(uniqueName("c"), "a\u0000b", write))
      assert.isTrue(
        Exit.isFailure(nul) && Cause.failureOption(nul.cause).pipe(Option.exists((e) => e._tag === "SqlError"))
      )
      // A record that fails after BEGIN (its table is gone) is rolled back before the connection goes back.
      const gone = `${prefix}_gone`
      const other = yield* Layer.build(PgInbox.layer({ prefix: gone })).pipe(Effect.map(Context.get(Inbox.Inbox)))
      yield* sql`drop table ${sql(`${gone}_inbox`)}`
      for (let i = 0; i < 5; i++) {
        const failed = yield* Effect.exit(other.run(uniqueName("c"), `m-${i}`, write))
        assert.isTrue(
          Exit.isFailure(failed) && Cause.failureOption(failed.cause).pipe(Option.exists((e) => e._tag === "SqlError"))
        )
      }
      const states = yield* Effect.all(
        Array.from({ length: 10 }, () => sql<{ state: string }>`select 'ok' as state`),
        { concurrency: 10 }
      )
      assert.deepStrictEqual(states.map((rows) => rows[0]?.state), Array.from({ length: 10 }, () => "ok"))
      assert.strictEqual(yield* effectsOf(label), 0)
    }).pipe(Effect.scoped))
})

describe("PgInbox options", () => {
  it.effect("a prefix that is not a plain SQL identifier fails the Layer with InvalidOptions naming it", () =>
    Effect.gen(function*() {
      for (const bad of ["bad-name", "", "x".repeat(41), "1abc"]) {
        const exit = yield* Effect.exit(Layer.build(PgInbox.layer({ prefix: bad })).pipe(Effect.scoped))
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
        assert.isTrue(
          Option.isSome(error) && error.value._tag === "InvalidOptions" && error.value.field === "prefix" &&
            error.value.module === "PgInbox",
          String(error)
        )
      }
    }).pipe(Effect.provide(pg())))
})
