import { SqlClient } from "@effect/sql"
import { assert, describe, it, layer } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Layer, Option, Queue, Schema, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Broker from "../../src/Broker.js"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import * as PgliteClient from "../../src/layers/PgliteClient.js"
import * as PgOutbox from "../../src/layers/PgOutbox.js"
import * as Outbox from "../../src/Outbox.js"

class Boom {
  readonly _tag = "Boom"
}

layer(PgliteClient.layer(), { excludeTestServices: true, timeout: "60 seconds" })("PgliteClient", (it) => {
  it.effect("inserts and selects with parameters, parsing values as node-postgres does", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL, price numeric, tags jsonb, at timestamptz)`
      const at = new Date("2026-01-02T03:04:05.000Z")
      const inserted = yield* sql<{ id: string }>`INSERT INTO items ${
        sql.insert({ name: "pen", price: "1.50", tags: JSON.stringify(["a"]), at })
      } RETURNING id`
      assert.deepStrictEqual(inserted, [{ id: "1" }])
      const rows = yield* sql<{ id: string; name: string; price: string; tags: unknown; at: Date }>`
        SELECT * FROM items WHERE name = ${"pen"} AND id = ${1}`
      assert.strictEqual(rows.length, 1)
      assert.deepStrictEqual(rows[0], { id: "1", name: "pen", price: "1.50", tags: ["a"], at })
      const values = yield* sql`SELECT id, name FROM items`.values
      assert.deepStrictEqual(values, [["1", "pen"]])
      const streamed = yield* Stream.runCollect(sql<{ name: string }>`SELECT name FROM items`.stream)
      assert.deepStrictEqual(Array.from(streamed), [{ name: "pen" }])
    }))

  it.effect("json fragments and multi-statement unprepared SQL work", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const pg = yield* PgliteClient.PgliteClient
      yield* sql.unsafe(
        "CREATE TABLE docs (id int PRIMARY KEY, body jsonb); CREATE INDEX docs_body ON docs USING gin (body)"
      )
      yield* sql`INSERT INTO docs (id, body) VALUES (${1}, ${pg.json({ nested: { n: 1 } })})`
      const rows = yield* sql<{ body: unknown }>`SELECT body FROM docs WHERE body @> ${pg.json({ nested: { n: 1 } })}`
      assert.deepStrictEqual(rows, [{ body: { nested: { n: 1 } } }])
    }))

  it.effect("a failed transaction rolls back every write", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE ledger (id int PRIMARY KEY)`
      const exit = yield* sql`INSERT INTO ledger (id) VALUES (${1})`.pipe(
        Effect.zipRight(sql`INSERT INTO ledger (id) VALUES (${2})`),
        Effect.zipRight(Effect.fail(new Boom())),
        sql.withTransaction,
        Effect.exit
      )
      assert.isTrue(Exit.isFailure(exit))
      assert.deepStrictEqual(yield* sql`SELECT id FROM ledger`, [])
      yield* sql.withTransaction(sql`INSERT INTO ledger (id) VALUES (${3})`)
      assert.deepStrictEqual(yield* sql`SELECT id FROM ledger`, [{ id: 3 }])
    }))

  it.effect("a nested transaction rolls back to its savepoint only", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE nested (id int PRIMARY KEY)`
      yield* Effect.gen(function*() {
        yield* sql`INSERT INTO nested (id) VALUES (${1})`
        const inner = yield* sql`INSERT INTO nested (id) VALUES (${2})`.pipe(
          Effect.zipRight(Effect.fail(new Boom())),
          sql.withTransaction,
          Effect.exit
        )
        assert.isTrue(Exit.isFailure(inner))
        yield* sql.withTransaction(sql`INSERT INTO nested (id) VALUES (${3})`)
      }).pipe(sql.withTransaction)
      assert.deepStrictEqual(yield* sql`SELECT id FROM nested ORDER BY id`, [{ id: 1 }, { id: 3 }])
    }))

  it.effect("a statement error is a SqlError and leaves the client usable", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const error = yield* Effect.flip(sql`SELECT 1 / ${0}`)
      assert.strictEqual(error._tag, "SqlError")
      assert.include(error.message, "division by zero")
      assert.deepStrictEqual(yield* sql`SELECT 2 AS two`, [{ two: 2 }])
    }))

  it.effect("other fibers do not see or join an open transaction", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE isolation (id int PRIMARY KEY)`
      const inside = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const tx = yield* sql`INSERT INTO isolation (id) VALUES (${1})`.pipe(
        Effect.zipRight(Deferred.succeed(inside, undefined)),
        Effect.zipRight(Deferred.await(release)),
        Effect.zipRight(Effect.fail(new Boom())),
        sql.withTransaction,
        Effect.exit,
        Effect.fork
      )
      yield* Deferred.await(inside)
      // Queued behind the transaction, so it can only observe the rolled-back state.
      const reader = yield* Effect.fork(sql`SELECT id FROM isolation`)
      yield* Deferred.succeed(release, undefined)
      assert.isTrue(Exit.isFailure(yield* Fiber.join(tx)))
      assert.deepStrictEqual(yield* Fiber.join(reader), [])
    }))

  it.effect("a busy polling loop does not starve a transaction waiting for the connection", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const poller = yield* Effect.fork(Effect.forever(sql`SELECT 1`))
      const committed = yield* sql`SELECT 2 AS two`.pipe(
        Effect.zipRight(sql`SELECT 3 AS three`),
        sql.withTransaction,
        Effect.timeout("10 seconds")
      )
      yield* Fiber.interrupt(poller)
      assert.deepStrictEqual(committed, [{ three: 3 }])
    }))

  it.effect("FOR UPDATE SKIP LOCKED claims rows", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE jobs (id int PRIMARY KEY, claimed boolean NOT NULL DEFAULT false)`
      yield* sql`INSERT INTO jobs ${sql.insert([{ id: 1 }, { id: 2 }, { id: 3 }])}`
      const claimed = yield* sql<{ id: number }>`
        UPDATE jobs SET claimed = true WHERE id IN (
          SELECT id FROM jobs WHERE NOT claimed ORDER BY id LIMIT 2 FOR UPDATE SKIP LOCKED
        ) RETURNING id`.pipe(sql.withTransaction)
      assert.deepStrictEqual(claimed.map((row) => row.id).sort(), [1, 2])
    }))

  it.effect("PgOutbox runs on it without a PgClient: an event added in a transaction reaches a subscriber", () =>
    Effect.gen(function*() {
      const topic = Broker.topic("pglite.outbox", Schema.Struct({ n: Schema.Number }))
      const received = yield* Deferred.make<string>()
      yield* Effect.gen(function*() {
        const broker = yield* Broker.Broker
        yield* broker.subscribe(topic, (_, envelope) => Deferred.succeed(received, envelope.id), {
          group: "pglite-outbox"
        })
        const sql = yield* SqlClient.SqlClient
        const id = yield* sql.withTransaction(Outbox.add(topic, { n: 1 }))
        assert.strictEqual(yield* Deferred.await(received).pipe(Effect.timeout("10 seconds")), id)
      }).pipe(
        Effect.provide(
          PgOutbox.layer({ prefix: "pglite_ob", retention: false }).pipe(Layer.provideMerge(MemoryBroker.layer()))
        ),
        Effect.scoped
      )
    }))

  it.effect("LISTEN receives NOTIFY payloads once the transaction commits, and stops with its Scope", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const pg = yield* PgliteClient.PgliteClient
      yield* listenAndNotify(sql, pg).pipe(Effect.scoped)
      const channels = yield* sql<{ channel: string }>`SELECT pg_listening_channels() AS channel`
      assert.deepStrictEqual(channels, [])
    }))
})

const listenAndNotify = (sql: SqlClient.SqlClient, pg: PgliteClient.PgliteClient) =>
  Effect.gen(function*() {
    const received = yield* Queue.unbounded<string>()
    yield* pg.listen("outbox wake").pipe(
      Stream.runForEach((payload) => Queue.offer(received, payload)),
      Effect.forkScoped
    )
    // Registration is asynchronous: ping until one comes through.
    yield* pg.notify("outbox wake", "ping").pipe(
      Effect.zipRight(Queue.poll(received)),
      Effect.repeat({ until: Option.isSome }),
      Effect.timeout("10 seconds")
    )
    const before = yield* Effect.gen(function*() {
      yield* pg.notify("outbox wake", "committed")
      return yield* Queue.takeAll(received)
    }).pipe(sql.withTransaction)
    assert.notInclude(Array.from(before), "committed")
    const next = yield* Queue.take(received).pipe(
      Effect.repeat({ until: (payload) => payload !== "ping" }),
      Effect.timeout("10 seconds")
    )
    assert.strictEqual(next, "committed")
    const channels = yield* sql<{ channel: string }>`SELECT pg_listening_channels() AS channel`
    assert.deepStrictEqual(channels, [{ channel: "outbox wake" }])
  })

describe("PgliteClient with a data directory", () => {
  it.live("keeps committed rows across a close and reopen", () =>
    Effect.gen(function*() {
      const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "eb-pglite-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dataDir, { recursive: true, force: true })))
      const session = <A, E>(effect: Effect.Effect<A, E, SqlClient.SqlClient>) =>
        Effect.provide(effect, PgliteClient.layer({ dataDir }))
      yield* session(Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE kept (id int PRIMARY KEY)`
        yield* sql.withTransaction(sql`INSERT INTO kept (id) VALUES (${1}), (${2})`)
        yield* sql`INSERT INTO kept (id) VALUES (${3})`.pipe(
          Effect.zipRight(Effect.fail(new Boom())),
          sql.withTransaction,
          Effect.ignore
        )
      }))
      const rows = yield* session(Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT id FROM kept ORDER BY id`))
      assert.deepStrictEqual(rows, [{ id: 1 }, { id: 2 }])
    }).pipe(Effect.scoped), { timeout: 120_000 })
})
