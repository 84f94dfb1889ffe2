import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Either, Layer, Redacted } from "effect"
import { isInvalidOptions } from "../../src/InvalidOptions.js"
import * as PgLease from "../../src/layers/PgLease.js"
import * as SchedulerLease from "../../src/SchedulerLease.js"
import { databaseUrl, uniqueName } from "../fixtures/env.js"
import { leaseContract } from "./leaseContract.js"

const tablePrefix = uniqueName("lease")

const client = PgClient.layer({ url: Redacted.make(databaseUrl), applicationName: `${tablePrefix}_test` })

/** Drops this run's tables when the layer is released. */
const dropTables = Layer.scopedDiscard(
  Effect.addFinalizer(() =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`drop table if exists ${sql(`${tablePrefix}_lease`)}, ${sql(`${tablePrefix}_slots`)}`
    }).pipe(Effect.orDie)
  )
)

leaseContract("memory", SchedulerLease.layerMemory)
leaseContract("PostgreSQL", PgLease.layer({ tablePrefix }).pipe(Layer.provideMerge(dropTables), Layer.provide(client)))

describe("PgLease setup", () => {
  it.live("is idempotent and separates groups", () =>
    Effect.gen(function*() {
      const a = yield* PgLease.make({ tablePrefix, group: "g1" })
      const b = yield* PgLease.make({ tablePrefix, group: "g2" })
      assert.isTrue(yield* a.acquire("x", 10_000))
      assert.isTrue(yield* b.acquire("y", 10_000), "another group has its own lease")
      yield* a.release("x")
      yield* b.release("y")
    }).pipe(Effect.provide(Layer.merge(client, dropTables).pipe(Layer.provideMerge(client)))))

  it.live("rejects a table prefix that is not an identifier", () =>
    Effect.gen(function*() {
      const result = yield* Effect.either(PgLease.make({ tablePrefix: "x; drop table y" }))
      assert.isTrue(Either.isLeft(result))
      if (Either.isLeft(result)) {
        // Refused before any SQL runs: the one error for a bad option.
        const error = result.left
        assert.isTrue(isInvalidOptions(error))
        if (isInvalidOptions(error)) assert.deepStrictEqual([error.module, error.field], ["PgLease", "tablePrefix"])
        assert.match(error.message, /tablePrefix/)
      }
    }).pipe(Effect.provide(client)))
})
