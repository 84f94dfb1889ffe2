/**
 * The Inbox on PostgreSQL (any `@effect/sql` client: `PgClient`, or PGlite for an embedded
 * database): the table `<prefix>_inbox`, created idempotently on Layer build, keyed by
 * `(consumer, message_id)`.
 *
 * Each `run` is one transaction on the `SqlClient`: insert the pair first (`on conflict do
 * nothing`), run the handler, commit. The primary key is the lock: a second delivery of the same
 * message at the same time blocks on the first's uncommitted row, then finds it (skips) or finds
 * it rolled back (runs). The handler's statements on the same `SqlClient`, and `Outbox.add` on a
 * PgOutbox of the same database, run inside that transaction.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Inbox from "../Inbox.js"
import * as prune from "../internal/inbox/prune.js"
import * as Sql from "../internal/inbox/sql.js"
import * as transaction from "../internal/inbox/transaction.js"
import type { InvalidOptions } from "../InvalidOptions.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Table name prefix (a plain SQL identifier of at most 40 bytes): the table is `<prefix>_inbox`. Default `eb`. */
  readonly prefix?: string | undefined
}

const parse = (text: string | null | undefined): Effect.Effect<unknown> =>
  text === null || text === undefined ? Effect.succeed(null) : Effect.try(() => JSON.parse(text) as unknown).pipe(
    Effect.orDie
  )

/**
 * Creates the table if needed and returns the `Inbox` service on the `SqlClient` in context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options?: Options
): Effect.Effect<Inbox.Service, SqlError | InvalidOptions, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const name = yield* Sql.table(options?.prefix)
    const sql = yield* SqlClient.SqlClient
    yield* Sql.setup(sql, name)
    const oneRoundTrip = yield* transaction.supportsMultiStatement(sql)
    const quotedTable = sql`${sql(name)}`.compile()[0]
    const run = <A, E, R>(
      consumer: string,
      messageId: string,
      effect: Effect.Effect<A, E, R>,
      runOptions?: Inbox.RunOptions<A>
    ): Effect.Effect<Inbox.Outcome<A>, E | SqlError, R> => {
      const body = (recorded: boolean) => runRecorded(consumer, messageId, recorded, effect, runOptions)
      return Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (outer) => {
        // Not inside a transaction already, and the values can travel as literals: the record
        // rides on BEGIN's round trip. Otherwise a plain transaction (a savepoint when nested).
        const record = oneRoundTrip && Option.isNone(outer)
          ? Sql.recordText(quotedTable, consumer, messageId)
          : undefined
        return record === undefined
          ? sql.withTransaction(
            Effect.flatMap(Sql.record(sql, name, consumer, messageId), (rows) => body(rows.length > 0))
          )
          : transaction.withRecord(sql, record, body)
      })
    }
    const runRecorded = <A, E, R>(
      consumer: string,
      messageId: string,
      recorded: boolean,
      effect: Effect.Effect<A, E, R>,
      runOptions: Inbox.RunOptions<A> | undefined
    ): Effect.Effect<Inbox.Outcome<A>, E | SqlError, R> =>
      Effect.gen(function*() {
        if (!recorded) {
          const stored = yield* Sql.storedResult(sql, name, consumer, messageId)
          return { _tag: "Duplicate", result: yield* parse(stored[0]?.result) } as const
        }
        const value = yield* effect
        if (runOptions?.result !== undefined) {
          const result = yield* runOptions.result(value)
          if (result !== undefined && result !== null) {
            yield* Sql.storeResult(sql, name, consumer, messageId, JSON.stringify(result))
          }
        }
        return { _tag: "Ran", value } as const
      })
    return {
      [Inbox.TypeId]: Inbox.TypeId,
      run,
      prune: (pruneOptions) =>
        Effect.flatMap(
          prune.check(pruneOptions),
          ([maxAge, batchSize]) => Sql.prune(sql, name, Duration.toMillis(maxAge), batchSize)
        )
    }
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<Inbox.Inbox, SqlError | InvalidOptions, SqlClient.SqlClient> =>
  Layer.effect(Inbox.Inbox, make(options))

/**
 * As {@link layer}, with the options read from `Config`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<Inbox.Inbox, SqlError | InvalidOptions | ConfigError.ConfigError, SqlClient.SqlClient> =>
  Layer.effect(Inbox.Inbox, Effect.flatMap(Config.unwrap(config), make))
