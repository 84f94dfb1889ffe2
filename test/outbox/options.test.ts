/**
 * One policy for invalid input: every option of PgOutbox and of the dispatcher, and the options
 * of `add`, `dead` and `prune`, fail with `InvalidOptions` naming the module and the field —
 * Layers when they are built, before anything touches the database; operations before anything
 * reaches the store.
 */
import { SqlClient } from "@effect/sql"
import type { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Config, Context, Effect, Exit, Layer, Option, type Scope } from "effect"
import { EncodeError } from "../../src/BrokerError.js"
import { InvalidOptions } from "../../src/InvalidOptions.js"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import * as PgOutbox from "../../src/layers/PgOutbox.js"
import * as Outbox from "../../src/Outbox.js"
import * as OutboxError from "../../src/OutboxError.js"
import * as OutboxStore from "../../src/OutboxStore.js"
import { runId } from "../fixtures/env.js"
import { orderPlaced, pg, recordingBroker, uniquePrefix } from "./fixtures.js"

const run = <A, E>(body: Effect.Effect<A, E, SqlClient.SqlClient | PgClient.PgClient | Scope.Scope>) =>
  Effect.scoped(body).pipe(Effect.provide(pg()))

/** A store every call of which is a defect: a check that lets a bad option through fails the test loudly. */
const untouchable = (listen: boolean): OutboxStore.Service => {
  const reached = Effect.dieMessage("the store was reached")
  return {
    [OutboxStore.TypeId]: OutboxStore.TypeId,
    label: "untouchable",
    insert: () => reached,
    notify: reached,
    dispatch: () => reached,
    replay: () => reached,
    dead: () => reached,
    stats: reached,
    prune: () => reached,
    listen: listen ? Option.some(() => Effect.never) : Option.none()
  }
}

const storeLayer = (listen: boolean) => Layer.succeed(OutboxStore.OutboxStore, untouchable(listen))

/** Anything passes where JavaScript callers (or Config) can pass it. */
const bad = <A>(value: unknown): A => value as A

interface Row<O> {
  readonly field: string
  readonly options: O
}

/** Options of `Outbox.dispatcher` (module "Outbox"). */
const dispatcherRows: ReadonlyArray<Row<Outbox.DispatcherOptions>> = [
  { field: "batchSize", options: { batchSize: 0 } },
  { field: "batchSize", options: { batchSize: 1.5 } },
  { field: "batchSize", options: { batchSize: 100_001 } },
  { field: "batchSize", options: { batchSize: Number.NaN } },
  { field: "concurrency", options: { concurrency: 0 } },
  { field: "concurrency", options: { concurrency: 65 } },
  { field: "window", options: { window: 0 } },
  { field: "window", options: { window: 100_001 } },
  { field: "pack", options: { pack: 0 } },
  { field: "pack", options: { pack: 10_001 } },
  { field: "pollInterval", options: { pollInterval: "0 millis" } },
  { field: "pollInterval", options: { pollInterval: bad("soon") } },
  { field: "pollInterval", options: { pollInterval: -5 } },
  { field: "pollInterval", options: { pollInterval: Number.POSITIVE_INFINITY } },
  { field: "ordering", options: { ordering: bad("random") } },
  { field: "retry", options: { retry: bad("often") } },
  { field: "brokerBackoff", options: { brokerBackoff: bad(42) } },
  { field: "retention", options: { retention: bad(true) } },
  { field: "retention.maxAge", options: { retention: { maxAge: -1 } } },
  { field: "retention.maxAge", options: { retention: { maxAge: bad("a while") } } },
  { field: "retention.maxAge", options: { retention: { maxAge: Number.POSITIVE_INFINITY } } },
  { field: "retention.every", options: { retention: { maxAge: "1 hour", every: 0 } } },
  { field: "retention.batchSize", options: { retention: { maxAge: "1 hour", batchSize: 0 } } },
  { field: "retention.batchSize", options: { retention: { maxAge: "1 hour", batchSize: 1_000_001 } } },
  { field: "listen", options: { listen: bad("yes") } },
  { field: "metricsInterval", options: { metricsInterval: 0 } }
]

/** Options of PgOutbox's store (module "PgOutbox"). */
const pgRows: ReadonlyArray<Row<PgOutbox.Options>> = [
  { field: "prefix", options: { prefix: "bad-prefix" } },
  { field: "prefix", options: { prefix: "1st" } },
  { field: "prefix", options: { prefix: "" } },
  { field: "prefix", options: { prefix: "p".repeat(41) } },
  { field: "prefix", options: { prefix: `eb"; drop table users; --` } },
  { field: "notify", options: { notify: bad("no") } },
  { field: "notifyInterval", options: { notifyInterval: bad("whenever") } },
  { field: "notifyInterval", options: { notifyInterval: -1 } },
  { field: "notifyInterval", options: { notifyInterval: Number.POSITIVE_INFINITY } },
  { field: "listenApplicationName", options: { listenApplicationName: "" } },
  { field: "listenApplicationName", options: { listenApplicationName: "n".repeat(64) } },
  { field: "listenApplicationName", options: { listenApplicationName: "eb\u0000listen" } },
  { field: "listenApplicationName", options: { listenApplicationName: bad(7) } }
]

const describeOptions = (options: unknown) =>
  JSON.stringify(options, (_, v) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : v))

const assertInvalid = <A, E>(exit: Exit.Exit<A, E>, module: string, field: string) => {
  assert.isTrue(Exit.isFailure(exit), "expected a failure")
  if (Exit.isSuccess(exit)) return
  const failure = Option.getOrUndefined(Cause.failureOption(exit.cause))
  assert.instanceOf(failure, InvalidOptions, String(exit.cause))
  if (!(failure instanceof InvalidOptions)) return
  assert.strictEqual(failure.module, module)
  assert.strictEqual(failure.field, field)
  assert.isTrue(OutboxError.isOutboxError(failure))
  assert.include(failure.message, field)
}

/** A fresh prefix; the table of a Layer that failed its checks must not exist. */
let prefixes = 0
const freshPrefix = () => `t_${runId}_opt${++prefixes}`

const tableExists = (prefix: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ readonly t: string | null }>`select to_regclass(${`${prefix}_outbox`})::text as t`,
      (rows) => rows[0]?.t !== null && rows[0]?.t !== undefined
    ))

describe("Outbox options", () => {
  describe("Outbox.dispatcher refuses each bad option when its Layer is built", () => {
    for (const row of dispatcherRows) {
      it.effect(`${row.field}: ${describeOptions(row.options)}`, () =>
        Effect.gen(function*() {
          const exit = yield* Layer.build(
            Outbox.dispatcher(row.options).pipe(Layer.provide(Layer.merge(storeLayer(true), recordingBroker().layer)))
          ).pipe(Effect.scoped, Effect.exit)
          assertInvalid(exit, "Outbox", row.field)
        }))
    }

    it.effect("listen: true on a store without cross-process wake-ups is refused, not ignored", () =>
      Effect.gen(function*() {
        const exit = yield* Layer.build(
          Outbox.dispatcher({ listen: true }).pipe(
            Layer.provide(Layer.merge(storeLayer(false), recordingBroker().layer))
          )
        ).pipe(Effect.scoped, Effect.exit)
        assertInvalid(exit, "Outbox", "listen")
      }))
  })

  describe("PgOutbox Layers refuse each bad option before touching the database", () => {
    for (const row of dispatcherRows) {
      it.live(`layer and dispatcher, ${row.field}: ${describeOptions(row.options)}`, () =>
        run(Effect.gen(function*() {
          const prefix = freshPrefix()
          const broker = recordingBroker().layer
          const options = { ...row.options, prefix }
          for (const layer of [PgOutbox.layer(options), PgOutbox.dispatcher(options)]) {
            const exit = yield* Layer.build(layer.pipe(Layer.provide(broker))).pipe(Effect.scoped, Effect.exit)
            assertInvalid(exit, "Outbox", row.field)
          }
          const configured = yield* Layer.build(
            PgOutbox.layerConfig({ prefix: Config.succeed(prefix) }, row.options).pipe(Layer.provide(broker))
          ).pipe(Effect.scoped, Effect.exit)
          assertInvalid(configured, "Outbox", row.field)
          assert.isFalse(yield* tableExists(prefix), "no table was created")
        })))
    }

    for (const row of pgRows) {
      it.live(`every constructor, ${row.field}: ${describeOptions(row.options)}`, () =>
        run(Effect.gen(function*() {
          const broker = recordingBroker().layer
          const prefix = freshPrefix()
          const options: PgOutbox.Options = { prefix, ...row.options }
          const layers = [
            PgOutbox.layer(options).pipe(Layer.provide(broker)),
            PgOutbox.dispatcher(options).pipe(Layer.provide(broker)),
            PgOutbox.layerStore(options),
            PgOutbox.layerOutboxStore(options)
          ]
          for (const layer of layers) {
            assertInvalid(yield* Layer.build(layer).pipe(Effect.scoped, Effect.exit), "PgOutbox", row.field)
          }
          assertInvalid(yield* PgOutbox.make(options).pipe(Effect.scoped, Effect.exit), "PgOutbox", row.field)
          // The same values read from Config.
          const config = bad<Config.Config.Wrap<PgOutbox.Options>>(
            Object.fromEntries(Object.entries(options).map(([k, v]) => [k, Config.succeed(v)]))
          )
          const configured = yield* Layer.build(PgOutbox.layerConfig(config).pipe(Layer.provide(broker))).pipe(
            Effect.scoped,
            Effect.exit
          )
          assertInvalid(configured, "PgOutbox", row.field)
          if (row.options.prefix === undefined) assert.isFalse(yield* tableExists(prefix), "no table was created")
        })))
    }
  })

  describe("operations refuse bad options before reaching the store", () => {
    const outbox = Outbox.make(untouchable(false))

    const operations: ReadonlyArray<readonly [string, (service: Outbox.Service) => Effect.Effect<unknown, unknown>]> = [
      ["maxAge", (s) => s.prune(bad({}))],
      ["maxAge", (s) => s.prune({ maxAge: -1 })],
      ["maxAge", (s) => s.prune({ maxAge: bad("an hour or so") })],
      ["maxAge", (s) => s.prune({ maxAge: Number.POSITIVE_INFINITY })],
      ["batchSize", (s) => s.prune({ maxAge: "1 hour", batchSize: 0 })],
      ["batchSize", (s) => s.prune({ maxAge: "1 hour", batchSize: 2.5 })],
      ["limit", (s) => s.dead({ limit: 0 })],
      ["limit", (s) => s.dead({ limit: 1.5 })],
      ["messageId", (s) => s.add(orderPlaced, { orderId: "o", n: 1 }, { messageId: "" })],
      ["messageId", (s) => s.add(orderPlaced, { orderId: "o", n: 1 }, { messageId: "m".repeat(256) })],
      ["messageId", (s) => s.add(orderPlaced, { orderId: "o", n: 1 }, { messageId: "id\u0000" })],
      ["key", (s) => s.add(orderPlaced, { orderId: "o", n: 1 }, { key: "customer\u00001" })]
    ]

    operations.forEach(([field, operation], i) => {
      it.effect(`${field} (case ${i + 1})`, () =>
        Effect.gen(function*() {
          const service = yield* outbox
          assertInvalid(yield* Effect.exit(operation(service)), "Outbox", field)
        }))
    })
  })
  describe("Outbox.add refuses an event over the Broker's maxMessageBytes", () => {
    const limited = MemoryBroker.layer({ maxMessageBytes: 64 })
    const big = { orderId: "o".repeat(100), n: 1 }
    const small = { orderId: "o", n: 1 }

    const assertTooLarge = <A, E>(exit: Exit.Exit<A, E>) => {
      const failure = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
      assert.instanceOf(failure, EncodeError, String(exit))
      if (!(failure instanceof EncodeError)) return
      assert.strictEqual(failure.topic, orderPlaced.name)
      assert.include(failure.issue, "over the broker's maxMessageBytes of 64")
      assert.isTrue(OutboxError.isOutboxError(failure))
    }
    /** What `untouchable` does when reached: the only way an add gets past its checks. */
    const assertReachedStore = <A, E>(exit: Exit.Exit<A, E>) =>
      assert.include(Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "succeeded", "the store was reached")

    it.effect("with a Broker where the service is built: refused before the store, a smaller one passes", () =>
      Effect.gen(function*() {
        const service = yield* Outbox.make(untouchable(false)).pipe(Effect.provide(limited))
        assertTooLarge(yield* Effect.exit(service.add(orderPlaced, big)))
        assertReachedStore(yield* Effect.exit(service.add(orderPlaced, small)))
      }))

    it.effect("without a Broker (a producer-only process) the limit is not known here: it reaches the store", () =>
      Effect.gen(function*() {
        const service = yield* Outbox.make(untouchable(false))
        assertReachedStore(yield* Effect.exit(service.add(orderPlaced, big)))
      }))

    it.live("PgOutbox.layer: the refused event is not stored, the accepted one is", () =>
      run(Effect.gen(function*() {
        const prefix = yield* uniquePrefix
        const context = yield* Layer.build(PgOutbox.layer({ prefix }).pipe(Layer.provide(limited)))
        const outbox = Context.get(context, Outbox.Outbox)
        assertTooLarge(yield* Effect.exit(outbox.add(orderPlaced, big)))
        yield* outbox.add(orderPlaced, small)
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql<{ readonly n: number }>`select count(*)::int as n from ${sql(`${prefix}_outbox`)}`
        assert.strictEqual(rows[0]?.n, 1)
      })))
  })
})
