import { SqlClient } from "@effect/sql"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Layer, Option } from "effect"
import * as PgInbox from "../../src/layers/PgInbox.js"
import { runId } from "../fixtures/env.js"
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
