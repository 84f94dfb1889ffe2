import { SqlClient } from "@effect/sql"
import { Effect, Layer } from "effect"
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
