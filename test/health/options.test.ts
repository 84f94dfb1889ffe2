/**
 * Every option of Health and PgliteClient with a bad value: the Layer (or the check) fails with
 * `InvalidOptions` naming the module and the field, before anything starts.
 */
import { assert, describe, it } from "@effect/vitest"
import { Config, Duration, Effect, Either, Layer } from "effect"
import * as Health from "../../src/Health.js"
import * as pglite from "../../src/internal/pglite.js"
import { isInvalidOptions } from "../../src/InvalidOptions.js"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import * as PgliteClient from "../../src/layers/PgliteClient.js"

interface Row {
  readonly module: string
  readonly field: string
  readonly value: string
  readonly fails: Effect.Effect<unknown, unknown>
}

const build = <A, E>(layer: Layer.Layer<A, E>) => Effect.scoped(Layer.build(layer))

// A check fails on its option before it asks for a service; were it to ask, the missing service
// would be a defect and the row would fail.
const beforeServices = <A, E, R>(effect: Effect.Effect<A, E, R>) => effect as Effect.Effect<A, E>

// What a JavaScript caller or an untyped Config could hand over.
const untyped = <A>(value: unknown): A => value as A

const parser = (value: string) => value

const rows: ReadonlyArray<Row> = [
  { module: "Health", field: "timeout", value: "0 millis", fails: build(Health.layer({}, { timeout: "0 millis" })) },
  { module: "Health", field: "timeout", value: "soon", fails: build(Health.layer({}, { timeout: untyped("soon") })) },
  {
    module: "Health",
    field: "timeout",
    value: "infinity",
    fails: build(Health.layer({}, { timeout: Duration.infinity }))
  },
  {
    module: "Health",
    field: "checks.db",
    value: "42",
    fails: build(Health.layer({ db: untyped<Health.Check>(42) }))
  },
  {
    module: "Health",
    field: "outbox.maxLag",
    value: "soon",
    fails: beforeServices(Health.outbox({ maxLag: untyped("soon") }))
  },
  { module: "Health", field: "consumers.minimum", value: "-1", fails: beforeServices(Health.consumers(-1)) },
  { module: "Health", field: "consumers.minimum", value: "1.5", fails: beforeServices(Health.consumers(1.5)) },
  { module: "PgliteClient", field: "dataDir", value: "\"\"", fails: build(PgliteClient.layer({ dataDir: "" })) },
  { module: "PgliteClient", field: "dataDir", value: "42", fails: build(PgliteClient.layer({ dataDir: untyped(42) })) },
  { module: "PgliteClient", field: "database", value: "\"\"", fails: build(PgliteClient.layer({ database: "" })) },
  {
    module: "PgliteClient",
    field: "database",
    value: "64 bytes",
    fails: build(PgliteClient.layer({ database: "d".repeat(64) }))
  },
  {
    module: "PgliteClient",
    field: "database",
    value: "U+0000",
    fails: build(PgliteClient.layer({ database: "a\u0000b" }))
  },
  {
    module: "PgliteClient",
    field: "username",
    value: "64 bytes",
    fails: build(PgliteClient.layer({ username: "é".repeat(32) }))
  },
  {
    module: "PgliteClient",
    field: "parsers",
    value: "[]",
    fails: build(PgliteClient.layer({ parsers: untyped([]) }))
  },
  {
    module: "PgliteClient",
    field: "parsers",
    value: "key 0",
    fails: build(PgliteClient.layer({ parsers: { 0: parser } }))
  },
  {
    module: "PgliteClient",
    field: "parsers",
    value: "key int8",
    fails: build(PgliteClient.layer({ parsers: untyped({ int8: parser }) }))
  },
  {
    module: "PgliteClient",
    field: "parsers.20",
    value: "\"text\"",
    fails: build(PgliteClient.layer({ parsers: { 20: untyped("text") } }))
  },
  {
    module: "PgliteClient",
    field: "spanAttributes",
    value: "\"x\"",
    fails: build(PgliteClient.layer({ spanAttributes: untyped("x") }))
  },
  {
    module: "PgliteClient",
    field: "transformResultNames",
    value: "\"camel\"",
    fails: build(PgliteClient.layer({ transformResultNames: untyped("camel") }))
  },
  {
    module: "PgliteClient",
    field: "transformQueryNames",
    value: "1",
    fails: build(PgliteClient.layer({ transformQueryNames: untyped(1) }))
  },
  {
    module: "PgliteClient",
    field: "transformJson",
    value: "\"yes\"",
    fails: build(PgliteClient.layer({ transformJson: untyped("yes") }))
  },
  {
    module: "PgliteClient",
    field: "database",
    value: "\"\" through layerConfig",
    fails: build(PgliteClient.layerConfig({ database: Config.succeed("") }))
  }
]

describe("invalid options of Health and PgliteClient", () => {
  for (const row of rows) {
    it.effect(`${row.module} ${row.field} = ${row.value} fails with InvalidOptions naming it`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(row.fails)
        assert.isTrue(isInvalidOptions(error), String(error))
        if (!isInvalidOptions(error)) return
        assert.strictEqual(error._tag, "InvalidOptions")
        assert.strictEqual(error.module, row.module)
        assert.strictEqual(error.field, row.field)
        assert.include(error.message, `${row.module}: invalid option ${row.field}`)
      }))
  }

  it.effect("a check built from a bad option is reported down with the reason, beside the other checks", () =>
    Effect.gen(function*() {
      const health = yield* Health.make({
        fine: Effect.succeed({ status: "up" } as const),
        workers: Health.consumers(-1)
      })
      const report = yield* health.check
      assert.strictEqual(report.status, "down")
      assert.strictEqual(report.checks["fine"]?.status, "up")
      assert.include(report.checks["workers"]?.detail ?? "", "invalid option consumers.minimum")
    }).pipe(Effect.provide(MemoryBroker.layer())))

  it.effect("good options pass: Health builds, and every PgliteClient option at its limit is accepted", () =>
    Effect.gen(function*() {
      yield* Health.make({}, { timeout: "100 millis" })
      yield* Health.make()
      // Checked without starting a database (test/pglite starts real ones).
      const accepted = pglite.validate({
        dataDir: "memory://",
        database: "d".repeat(63),
        username: "é".repeat(31),
        parsers: { 20: parser, 1700: parser },
        spanAttributes: { service: "test" },
        transformResultNames: (name: string) => name,
        transformQueryNames: (name: string) => name,
        transformJson: false
      })
      assert.isTrue(Either.isRight(accepted))
    }))
})
