import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as checks from "../options.js"

/**
 * The outbox table and every statement on it. Values are always bound parameters; the only
 * text spliced into SQL is the table prefix, validated here and quoted as an identifier (O7).
 */

/** @internal */
export type RowState = "pending" | "dispatched" | "dead"

/** @internal */
export interface Tables {
  readonly prefix: string
  readonly outbox: string
  /** NOTIFY channel the dispatchers LISTEN on. */
  readonly channel: string
}

/** The tables of a prefix (the `prefix` option of PgOutbox; default `eb`). @internal */
export const tables = (prefix: string | undefined): checks.Checked<Tables> =>
  Either.map(
    checks.sqlIdentifier("PgOutbox", "prefix", prefix, "eb"),
    (prefix) => ({ prefix, outbox: `${prefix}_outbox`, channel: `${prefix}_outbox` })
  )

/**
 * Idempotent schema setup, serialised across processes by a transaction-scoped advisory lock so
 * several layers built at once (3 dispatchers starting together) do not race on `create`.
 *
 * @internal
 */
export const setup = (sql: SqlClient.SqlClient, t: Tables): Effect.Effect<void, SqlError> => {
  const table = sql(t.outbox)
  return sql.withTransaction(Effect.gen(function*() {
    yield* sql`select pg_advisory_xact_lock(hashtext(${`effect-background/outbox/${t.outbox}`}))`
    yield* sql`create table if not exists ${table} (
      id bigint generated always as identity primary key,
      message_id text not null,
      topic text not null,
      key text,
      headers jsonb,
      body text not null,
      traceparent text,
      state text not null default 'pending' check (state in ('pending', 'dispatched', 'dead')),
      attempts integer not null default 0,
      next_attempt_at timestamptz not null default now(),
      last_error text,
      created_at timestamptz not null default now(),
      dispatched_at timestamptz
    )`
    yield* sql`create index if not exists ${sql(`${t.outbox}_pending`)} on ${table} (id) where state = 'pending'`
    yield* sql`create index if not exists ${sql(`${t.outbox}_open_key`)} on ${table} (key, id)
      where state <> 'dispatched' and key is not null`
    yield* sql`create index if not exists ${sql(`${t.outbox}_dispatched_at`)} on ${table} (dispatched_at)
      where state = 'dispatched'`
    yield* sql`create index if not exists ${sql(`${t.outbox}_dead`)} on ${table} (id) where state = 'dead'`
    // Partial: marking a row dispatched then adds no entry here (replay only targets undispatched rows).
    yield* sql`create index if not exists ${sql(`${t.outbox}_undispatched_message_id`)} on ${table} (message_id)
      where state <> 'dispatched'`
  }))
}

/** @internal */
export interface NewRow {
  readonly messageId: string
  readonly topic: string
  readonly key: string | null
  /** JSON text of the headers, or null. */
  readonly headers: string | null
  readonly body: string
  readonly traceparent: string | null
}

/** @internal */
export const insert = (sql: SqlClient.SqlClient, t: Tables, row: NewRow): Effect.Effect<void, SqlError> =>
  Effect.asVoid(sql`insert into ${sql(t.outbox)} (message_id, topic, key, headers, body, traceparent)
    values (${row.messageId}, ${row.topic}, ${row.key}, ${row.headers}::jsonb, ${row.body}, ${row.traceparent})`)

/** A claimed row as the dispatcher sees it. @internal */
export interface ClaimedRow {
  readonly id: string
  readonly message_id: string
  readonly topic: string
  readonly key: string | null
  readonly headers: Record<string, string> | null
  readonly body: string
  readonly traceparent: string | null
  readonly attempts: number
  readonly state: RowState
  /** Epoch milliseconds, as float8 text or number. */
  readonly created_ms: number | string
  readonly due: boolean
}

const columns = (sql: SqlClient.SqlClient) =>
  sql`id, message_id, topic, key, headers, body, traceparent, attempts, state,
    extract(epoch from created_at) * 1000 as created_ms, next_attempt_at <= now() as due`

/**
 * Unordered claim: the oldest due pending rows no other dispatcher holds. The caller's
 * transaction keeps them locked until it commits the outcome, so a crash releases them at once.
 *
 * @internal
 */
export const claim = (sql: SqlClient.SqlClient, t: Tables, limit: number) =>
  sql<ClaimedRow>`select ${columns(sql)} from ${sql(t.outbox)}
    where state = 'pending' and next_attempt_at <= now()
    order by id limit ${limit} for update skip locked`

/**
 * Per-key claim, step 1: rows that are the oldest undispatched row of their key (or have no
 * key). Locking a head makes this dispatcher the key's only publisher until it commits: other
 * dispatchers skip the locked head and see its successors as blocked by it.
 *
 * @internal
 */
export const claimHeads = (sql: SqlClient.SqlClient, t: Tables, limit: number) =>
  sql<ClaimedRow>`select ${columns(sql)} from ${sql(t.outbox)} o
    where o.state = 'pending' and o.next_attempt_at <= now()
      and (o.key is null or not exists (
        select 1 from ${sql(t.outbox)} p where p.key = o.key and p.id < o.id and p.state <> 'dispatched'
      ))
    order by o.id limit ${limit} for update of o skip locked`

/**
 * Per-key claim, step 2: the undispatched rows after the heads of the keys we own, in order.
 * The caller keeps only each key's contiguous run of due pending rows.
 *
 * @internal
 */
export const claimSuccessors = (
  sql: SqlClient.SqlClient,
  t: Tables,
  keys: ReadonlyArray<string>,
  heads: ReadonlyArray<string>,
  limit: number
) =>
  sql<ClaimedRow>`select ${columns(sql)} from ${sql(t.outbox)} o
    join unnest(${keys}::text[], ${heads}::bigint[]) as h(k, head) on o.key = h.k and o.id > h.head
    where o.state <> 'dispatched'
    order by o.key, o.id limit ${limit} for update of o`

/** @internal */
export const markDispatched = (sql: SqlClient.SqlClient, t: Tables, ids: ReadonlyArray<string>) =>
  sql`update ${sql(t.outbox)} set state = 'dispatched', dispatched_at = now(), attempts = attempts + 1
    where id = any(${ids}::bigint[])`

/**
 * Deletes dispatched rows instead of marking them (a retention of 0): PostgreSQL then writes no
 * new row version and no index entries for them.
 *
 * @internal
 */
export const deleteRows = (sql: SqlClient.SqlClient, t: Tables, ids: ReadonlyArray<string>) =>
  sql`delete from ${sql(t.outbox)} where id = any(${ids}::bigint[])`

/** @internal */
export interface Failure {
  readonly id: string
  readonly error: string
  /** `pending` with a delay, or `dead`. */
  readonly state: "pending" | "dead"
  readonly delayMs: number
}

/** Records the failed rows of a batch in one statement. @internal */
export const markFailed = (sql: SqlClient.SqlClient, t: Tables, failures: ReadonlyArray<Failure>) =>
  sql`update ${sql(t.outbox)} o set
      attempts = o.attempts + 1,
      last_error = f.error,
      state = f.state,
      next_attempt_at = now() + f.delay_ms * interval '1 millisecond'
    from unnest(
      ${failures.map((f) => f.id)}::bigint[],
      ${failures.map((f) => f.error)}::text[],
      ${failures.map((f) => f.state)}::text[],
      ${failures.map((f) => f.delayMs)}::float8[]
    ) as f(id, error, state, delay_ms)
    where o.id = f.id`

/**
 * Requeues dead (or pending, to retry now) events by message id; returns how many.
 *
 * @internal
 */
export const replay = (sql: SqlClient.SqlClient, t: Tables, messageIds: ReadonlyArray<string>) =>
  Effect.map(
    sql<{ readonly id: string }>`update ${sql(t.outbox)} set state = 'pending', attempts = 0,
        next_attempt_at = now(), last_error = null
      where message_id = any(${messageIds}::text[]) and state <> 'dispatched' returning id`,
    (rows) => rows.length
  )

/** @internal */
export interface DeadRow {
  readonly message_id: string
  readonly topic: string
  readonly key: string | null
  readonly attempts: number
  readonly last_error: string | null
  readonly created_at: Date
}

/** @internal */
export const dead = (sql: SqlClient.SqlClient, t: Tables, limit: number) =>
  sql<DeadRow>`select message_id, topic, key, attempts, last_error, created_at from ${sql(t.outbox)}
    where state = 'dead' order by id limit ${limit}`

/** @internal */
export interface StatsRow {
  readonly pending: string | number
  readonly retrying: string | number
  readonly dead: string | number
  readonly lag_ms: string | number | null
  readonly dispatched_last_minute: string | number
}

/** @internal */
export const stats = (sql: SqlClient.SqlClient, t: Tables) =>
  sql<StatsRow>`select
    (select count(*) from ${sql(t.outbox)} where state = 'pending') as pending,
    (select count(*) from ${sql(t.outbox)} where state = 'pending' and attempts > 0) as retrying,
    (select count(*) from ${sql(t.outbox)} where state = 'dead') as dead,
    (select extract(epoch from (clock_timestamp() - min(created_at))) * 1000
       from ${sql(t.outbox)} where state = 'pending') as lag_ms,
    (select count(*) from ${sql(t.outbox)}
       where state = 'dispatched' and dispatched_at > clock_timestamp() - interval '60 seconds') as dispatched_last_minute`

/**
 * Deletes at most `limit` dispatched rows older than `maxAgeMs`; returns how many.
 *
 * @internal
 */
export const deleteDispatched = (sql: SqlClient.SqlClient, t: Tables, maxAgeMs: number, limit: number) =>
  Effect.map(
    sql<{ readonly id: string }>`delete from ${sql(t.outbox)} where id in (
        select id from ${sql(t.outbox)}
        where state = 'dispatched' and dispatched_at < now() - ${maxAgeMs}::float8 * interval '1 millisecond'
        limit ${limit} for update skip locked
      ) returning id`,
    (rows) => rows.length
  )

/**
 * Deletes dispatched rows older than `maxAgeMs`, `limit` at a time, until a statement deletes
 * fewer; returns how many in all.
 *
 * @internal
 */
export const pruneDispatched = (sql: SqlClient.SqlClient, t: Tables, maxAgeMs: number, limit: number) =>
  Effect.gen(function*() {
    let total = 0
    while (true) {
      const deleted = yield* deleteDispatched(sql, t, maxAgeMs, limit)
      total += deleted
      if (deleted < limit) return total
    }
  })

/**
 * Coalesced wake-up, sent on its own connection after the writer's statement. A wake-up needs no
 * durability, so its commit does not wait for a WAL flush.
 *
 * @internal
 */
export const notify = (sql: SqlClient.SqlClient, t: Tables) =>
  sql`select set_config('synchronous_commit', 'off', true), pg_notify(${t.channel}, '')`

/**
 * The settings of a dispatch batch's transaction, in one round trip:
 * - its commit skips waiting for the WAL flush: losing a "dispatched" mark in a database crash
 *   only republishes those rows (at-least-once), and each batch saves an fsync;
 * - claims walk the pending index in id order. With stale statistics (a backlog that built up
 *   since the last ANALYZE, a freshly filled table) the planner otherwise reads and sorts every
 *   pending row for each batch: ~100 ms per claim at 50,000 rows, growing with the backlog.
 *
 * @internal
 */
export const batchSettings = (sql: SqlClient.SqlClient) =>
  sql`select set_config('synchronous_commit', 'off', true), set_config('enable_seqscan', 'off', true),
    set_config('enable_bitmapscan', 'off', true)`
