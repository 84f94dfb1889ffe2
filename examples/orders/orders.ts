/**
 * The orders table and its queries. `place` writes the row and the `orders.placed` event in one
 * transaction: both commit or neither does.
 */
import { SqlClient } from "@effect/sql"
import { Effect, Option, Schema } from "effect"
import { Outbox } from "effect-background"
import { ordersPlaced } from "./contracts.js"

export const table = "eb_example_orders"

export class Order extends Schema.Class<Order>("Order")({
  id: Schema.String,
  email: Schema.String,
  totalCents: Schema.Number,
  status: Schema.Literal("placed", "confirmed"),
  createdAt: Schema.DateFromSelf,
  confirmedAt: Schema.NullOr(Schema.DateFromSelf)
}) {}

export const PlaceOrder = Schema.Struct({
  email: Schema.String.pipe(Schema.pattern(/^[^@\s]+@[^@\s]+$/)),
  totalCents: Schema.Int.pipe(Schema.nonNegative())
})

interface Row {
  readonly id: string
  readonly email: string
  readonly total_cents: number
  readonly status: "placed" | "confirmed"
  readonly created_at: Date
  readonly confirmed_at: Date | null
}

const toOrder = (row: Row) =>
  new Order({
    id: row.id,
    email: row.email,
    totalCents: row.total_cents,
    status: row.status,
    createdAt: row.created_at,
    confirmedAt: row.confirmed_at
  })

export const migrate = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE IF NOT EXISTS ${sql(table)} (
    id uuid PRIMARY KEY,
    email text NOT NULL,
    total_cents integer NOT NULL,
    status text NOT NULL DEFAULT 'placed',
    created_at timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz
  )`
})

const withTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.withTransaction(effect))

export const place = (input: typeof PlaceOrder.Type) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const id = crypto.randomUUID()
    const rows = yield* sql<Row>`INSERT INTO ${sql(table)} ${
      sql.insert({ id, email: input.email, total_cents: input.totalCents })
    } RETURNING *`
    const row = rows[0]
    if (row === undefined) return yield* Effect.dieMessage("INSERT … RETURNING returned no row")
    const order = toOrder(row)
    yield* Outbox.add(ordersPlaced, {
      orderId: order.id,
      email: order.email,
      totalCents: order.totalCents,
      placedAt: order.createdAt.toISOString()
    }, { key: order.id, messageId: `order-placed-${order.id}` })
    return order
  }).pipe(withTransaction)

export const find = (id: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<Row>`SELECT * FROM ${sql(table)} WHERE id = ${id}`
    return Option.map(Option.fromNullable(rows[0]), toOrder)
  })

/** Idempotent: a redelivered task finds the order already confirmed and keeps its first time. */
export const confirm = (id: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ confirmed_at: Date }>`
      UPDATE ${sql(table)} SET status = 'confirmed', confirmed_at = coalesce(confirmed_at, now())
      WHERE id = ${id} RETURNING confirmed_at`
    return Option.map(Option.fromNullable(rows[0]), (row) => row.confirmed_at)
  })

export const counts = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ status: string; n: string }>`
    SELECT status, count(*) AS n FROM ${sql(table)}
    WHERE created_at > now() - interval '1 day' GROUP BY status`
  return Object.fromEntries(rows.map((row) => [row.status, Number(row.n)]))
})
