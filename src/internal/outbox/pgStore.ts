import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as Pg from "pg"
import type * as OutboxStore from "../../OutboxStore.js"
import * as Listener from "./listener.js"
import * as Sql from "./sql.js"

const TypeId: OutboxStore.TypeId = Symbol.for("effect-background/OutboxStore") as OutboxStore.TypeId

/** @internal */
export interface Options {
  readonly tables: Sql.Tables
  /** Send a coalesced `pg_notify` after writes, for dispatchers in other processes. */
  readonly notify: boolean
  /** At most one NOTIFY per this interval (the first one after a quiet period goes at once). */
  readonly notifyInterval: Duration.Duration
  /** The LISTEN connection's settings; None without a `PgClient` to take them from. */
  readonly listen: Option.Option<Pg.ClientConfig>
}

/** Reconnects of the LISTEN connection: quickly at first, then once a second while PostgreSQL is away. */
const listenReconnect = Schedule.exponential("100 millis").pipe(Schedule.union(Schedule.spaced("1 second")))

const toClaimed = (row: Sql.ClaimedRow): OutboxStore.ClaimedEvent => ({
  id: row.id,
  messageId: row.message_id,
  topic: row.topic,
  key: row.key ?? undefined,
  headers: row.headers ?? undefined,
  body: row.body,
  traceparent: row.traceparent ?? undefined,
  attempts: row.attempts,
  createdAtMs: Number(row.created_ms),
  ready: row.state === "pending" && row.due
})

const toClaimedAll = (rows: ReadonlyArray<Sql.ClaimedRow>) => rows.map(toClaimed)

/**
 * The `OutboxStore` on an `SqlClient`, for PostgreSQL: creates the table if needed. `notify`
 * only signals a notifier fiber that sends at most one `pg_notify` per interval on a pooled
 * connection of its own — never inside the caller's transaction, where PostgreSQL would
 * serialise the commits of concurrent writers that queue notifications.
 *
 * @internal
 */
export const make = (
  sql: SqlClient.SqlClient,
  options: Options
): Effect.Effect<OutboxStore.Service, SqlError, Scope.Scope> =>
  Effect.gen(function*() {
    const t = options.tables
    yield* Sql.setup(sql, t)

    let notify: Effect.Effect<void> = Effect.void
    if (options.notify) {
      const notifications = yield* Queue.sliding<void>(1)
      yield* Effect.gen(function*() {
        while (true) {
          yield* Queue.take(notifications)
          yield* Sql.notify(sql, t)
          yield* Effect.sleep(options.notifyInterval)
        }
      }).pipe(
        Effect.sandbox,
        Effect.tapError((cause) => Effect.logWarning("outbox notify failed; retrying", cause)),
        Effect.retry({ schedule: Schedule.spaced("100 millis"), while: (cause) => !Cause.isInterruptedOnly(cause) }),
        Effect.annotateLogs({ package: "effect-background", module: "Outbox", fiber: "notify", table: t.outbox }),
        Effect.forkScoped,
        Effect.interruptible
      )
      notify = Effect.asVoid(Queue.offer(notifications, undefined))
    }

    const batch: OutboxStore.Batch = {
      claim: (limit) => Effect.map(Sql.claim(sql, t, limit), toClaimedAll),
      claimInKeyOrder: (limit) =>
        Effect.gen(function*() {
          const heads = yield* Sql.claimHeads(sql, t, limit)
          const keyed = heads.filter((row) => row.key !== null)
          const successors = keyed.length === 0 ? [] : yield* Sql.claimSuccessors(
            sql,
            t,
            keyed.map((row) => row.key ?? ""),
            keyed.map((row) => row.id),
            limit
          )
          return { heads: toClaimedAll(heads), successors: toClaimedAll(successors) }
        }),
      markDispatched: (ids) => Effect.asVoid(Sql.markDispatched(sql, t, ids)),
      remove: (ids) => Effect.asVoid(Sql.deleteRows(sql, t, ids)),
      markFailed: (failures) => Effect.asVoid(Sql.markFailed(sql, t, failures))
    }

    const store: OutboxStore.Service = {
      [TypeId]: TypeId,
      label: t.outbox,
      insert: (event) =>
        Sql.insert(sql, t, {
          messageId: event.messageId,
          topic: event.topic,
          key: event.key ?? null,
          headers: event.headers === undefined ? null : JSON.stringify(event.headers),
          body: event.body,
          traceparent: event.traceparent ?? null
        }),
      notify,
      dispatch: (use) => sql.withTransaction(Effect.zipRight(Sql.batchSettings(sql), use(batch))),
      replay: (messageIds) => Sql.replay(sql, t, messageIds),
      dead: (limit) =>
        Effect.map(Sql.dead(sql, t, limit), (rows) =>
          rows.map((row): OutboxStore.DeadEvent => ({
            messageId: row.message_id,
            topic: row.topic,
            key: row.key ?? undefined,
            attempts: row.attempts,
            lastError: row.last_error ?? undefined,
            createdAt: row.created_at
          }))),
      stats: Effect.map(Sql.stats(sql, t), (rows): OutboxStore.Stats => {
        const row = rows[0]
        return {
          pending: Number(row?.pending ?? 0),
          retrying: Number(row?.retrying ?? 0),
          dead: Number(row?.dead ?? 0),
          oldestPendingAgeMs: Math.max(0, Math.round(Number(row?.lag_ms ?? 0))),
          dispatchRatePerSecond: Number(row?.dispatched_last_minute ?? 0) / 60
        }
      }),
      prune: (maxAge, batchSize) => Sql.pruneDispatched(sql, t, Duration.toMillis(maxAge), batchSize),
      listen: Option.map(options.listen, (config) => (onWake: () => void) =>
        Listener.run({
          config,
          channel: t.channel,
          reconnect: listenReconnect,
          maxDelay: Duration.seconds(1),
          onNotify: onWake,
          onListening: onWake
        }))
    }
    return store
  })
