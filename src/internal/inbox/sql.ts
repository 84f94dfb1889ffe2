import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as checks from "../options.js"

/**
 * The inbox table and every statement on it. Values are bound parameters, except in
 * {@link recordText} (escaped literals: it runs where parameters cannot); the only other text
 * spliced into SQL is the table name, from a validated prefix.
 */

/** The table of a prefix (PgInbox's `prefix`; default `eb`). @internal */
export const table = (prefix: string | undefined): checks.Checked<string> =>
  Either.map(checks.sqlIdentifier("PgInbox", "prefix", prefix, "eb"), (prefix) => `${prefix}_inbox`)

/** Idempotent, serialised across processes like the outbox's setup. @internal */
export const setup = (sql: SqlClient.SqlClient, name: string): Effect.Effect<void, SqlError> =>
  sql.withTransaction(Effect.gen(function*() {
    yield* sql`select pg_advisory_xact_lock(hashtext(${`effect-background/inbox/${name}`}))`
    yield* sql`create table if not exists ${sql(name)} (
      consumer text not null,
      message_id text not null,
      received_at timestamptz not null default now(),
      result jsonb,
      primary key (consumer, message_id)
    )`
    // BRIN: rows arrive in time order, so a block-range index serves prune at almost no cost per insert.
    yield* sql`create index if not exists ${sql(`${name}_received_at`)} on ${sql(name)} using brin (received_at)`
  }))

/**
 * Records the pair; no row back when it exists. A concurrent transaction that recorded the same
 * pair and has not ended makes this wait on the primary key until it commits (then: no row) or
 * rolls back (then: recorded here).
 *
 * @internal
 */
export const record = (sql: SqlClient.SqlClient, name: string, consumer: string, messageId: string) =>
  sql<{ readonly recorded: number }>`insert into ${sql(name)} (consumer, message_id)
    values (${consumer}, ${messageId}) on conflict do nothing returning 1 as recorded`

/**
 * A text value as a PostgreSQL string literal (a simple-protocol query takes no parameters);
 * `undefined` for text PostgreSQL cannot store (U+0000). Quotes are doubled; text with a backslash
 * becomes an escape string (`E'…'`), read the same whatever `standard_conforming_strings` says.
 *
 * @internal
 */
export const literal = (text: string): string | undefined => {
  if (text.includes("\u0000")) return undefined
  const quoted = text.replaceAll("'", "''")
  return text.includes("\\") ? `E'${quoted.replaceAll("\\", "\\\\")}'` : `'${quoted}'`
}

/**
 * {@link record} as text, for a simple-protocol query (see internal/inbox/transaction.ts);
 * `undefined` when a value cannot be a literal.
 *
 * @internal
 */
export const recordText = (quotedTable: string, consumer: string, messageId: string): string | undefined => {
  const consumerLiteral = literal(consumer)
  const idLiteral = literal(messageId)
  if (consumerLiteral === undefined || idLiteral === undefined) return undefined
  return `insert into ${quotedTable} (consumer, message_id) values (${consumerLiteral}, ${idLiteral})
    on conflict do nothing returning 1 as recorded`
}

/** @internal */
export const storeResult = (
  sql: SqlClient.SqlClient,
  name: string,
  consumer: string,
  messageId: string,
  json: string
) => sql`update ${sql(name)} set result = ${json}::jsonb where consumer = ${consumer} and message_id = ${messageId}`

/** @internal */
export const storedResult = (sql: SqlClient.SqlClient, name: string, consumer: string, messageId: string) =>
  sql<{ readonly result: string | null }>`select result::text as result from ${sql(name)}
    where consumer = ${consumer} and message_id = ${messageId}`

/** Deletes records older than `maxAgeMs`, `limit` per statement, until fewer remain. @internal */
export const prune = (sql: SqlClient.SqlClient, name: string, maxAgeMs: number, limit: number) =>
  Effect.gen(function*() {
    let total = 0
    while (true) {
      const rows = yield* sql<{ readonly n: number }>`with doomed as (
          select ctid from ${sql(name)}
          where received_at < now() - make_interval(secs => ${maxAgeMs / 1000}) limit ${limit}
        ), gone as (delete from ${sql(name)} where ctid in (select ctid from doomed) returning 1)
        select count(*)::int as n from gone`
      const deleted = rows[0]?.n ?? 0
      total += deleted
      if (deleted < limit) return total
    }
  })
