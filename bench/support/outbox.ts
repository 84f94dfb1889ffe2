import { SqlClient } from "@effect/sql"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"

/** The event the outbox suites add: ~200 B of JSON. */
export const OrderPlaced = Schema.Struct({
  orderId: Schema.String,
  customer: Schema.String,
  total: Schema.Number,
  note: Schema.String
})

/**
 * Fills an outbox table with `n` pending `OrderPlaced` events for `topic` in one statement (how
 * they got there is not measured), as `Outbox.add` writes them: UUIDv7 message ids whose time is
 * the row's `created_at` (a random v4 id would make the transport add an AMQP timestamp, which
 * `add`'s rows never need); order `g` has `total` g % 10,000.
 */
export const fillPending = (table: string, n: number, topic: string, note: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`insert into ${sql(table)} (message_id, topic, body)
      select substr(t.hex, 1, 8) || '-' || substr(t.hex, 9, 4) || '-7' || substr(r.hex, 1, 3) || '-8' ||
          substr(r.hex, 4, 3) || '-' || substr(r.hex, 7, 12),
        ${topic}::text,
        json_build_object('orderId', 'o-' || g, 'customer', 'c-' || (g % 977), 'total', g % 10000, 'note', ${note}::text)::text
      from generate_series(1, ${n}) g,
        lateral (select lpad(to_hex((extract(epoch from now()) * 1000)::bigint), 12, '0') as hex) t,
        lateral (select md5(g::text || random()::text) as hex) r`
  })
