import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import * as PgResultStore from "../../src/layers/PgResultStore.js"
import { databaseUrl, uniqueName } from "../fixtures/env.js"
import { resultStoreContract } from "./resultStoreContract.js"

const prefix = uniqueName("rs")

/** Drops this run's tables when the layer is released. */
const dropTables = Layer.scopedDiscard(
  Effect.addFinalizer(() =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`drop table if exists ${sql(`${prefix}_task_results`)}, ${sql(`${prefix}_task_keys`)}`
    }).pipe(Effect.orDie)
  )
)

const client = PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 10 })

resultStoreContract(
  "PostgreSQL",
  PgResultStore.layer({ prefix }).pipe(Layer.provideMerge(dropTables), Layer.provide(client))
)
