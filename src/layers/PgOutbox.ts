/**
 * The Outbox on PostgreSQL: the table (created idempotently on Layer build), `Outbox.add` through
 * the ambient `SqlClient`, and the dispatcher — `FOR UPDATE SKIP LOCKED` claims, confirmed
 * publishes through the `Broker`, LISTEN/NOTIFY wake-ups with a poll as fallback.
 *
 * @since 0.1.0
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import type * as Pg from "pg"
import * as Broker from "../Broker.js"
import { InvalidName } from "../BrokerError.js"
import * as Dispatcher from "../internal/outbox/dispatcher.js"
import * as Sql from "../internal/outbox/sql.js"
import * as Store from "../internal/outbox/store.js"
import * as Outbox from "../Outbox.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Table name prefix: the table is `<prefix>_outbox`. Default `eb`. */
  readonly prefix?: string | undefined
  /**
   * After each `add`, wake dispatchers in other processes with a `pg_notify` sent on a separate
   * connection, coalesced to at most one per `notifyInterval` (never inside the caller's
   * transaction). Default true.
   */
  readonly notify?: boolean | undefined
  /** Default 20 milliseconds (the first NOTIFY after a quiet period goes at once). */
  readonly notifyInterval?: Duration.DurationInput | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface DispatcherOptions extends Options, Outbox.DispatcherOptions {}

/**
 * @since 0.1.0
 * @category models
 */
export const defaults = {
  prefix: "eb",
  notifyInterval: "20 millis"
} as const

const resolveTables = (options: Options | undefined): Effect.Effect<Sql.Tables, InvalidName> =>
  Either.match(Sql.tables(options?.prefix ?? defaults.prefix), { onLeft: Effect.fail, onRight: Effect.succeed })

/**
 * Creates the table if needed and returns the `Outbox` service.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options?: Options
): Effect.Effect<Outbox.Service, SqlError | InvalidName, SqlClient.SqlClient | Scope.Scope> =>
  Effect.gen(function*() {
    const tables = yield* resolveTables(options)
    const sql = yield* SqlClient.SqlClient
    yield* Sql.setup(sql, tables)
    return yield* Store.make(sql, {
      tables,
      notify: options?.notify ?? true,
      notifyInterval: Duration.decode(options?.notifyInterval ?? defaults.notifyInterval)
    })
  })

/**
 * The `Outbox` service alone (producers that do not dispatch).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerStore = (options?: Options): Layer.Layer<Outbox.Outbox, SqlError | InvalidName, SqlClient.SqlClient> =>
  Layer.scoped(Outbox.Outbox, make(options))

const invalidOption = (name: string, value: unknown, reason: string) =>
  new InvalidName({ kind: "option", value: `${name}=${String(value)}`, reason })

const positiveInt = (name: string, value: number, max: number) =>
  Number.isInteger(value) && value >= 1 && value <= max
    ? Effect.succeed(value)
    : Effect.fail(invalidOption(name, value, `must be an integer from 1 to ${max}`))

const listenConfig = (config: PgClient.PgClientConfig, applicationName: string): Pg.ClientConfig => ({
  connectionString: config.url === undefined ? undefined : Redacted.value(config.url),
  host: config.path ?? config.host,
  port: config.port,
  database: config.database,
  user: config.username,
  password: config.password === undefined ? undefined : Redacted.value(config.password),
  ssl: config.ssl,
  application_name: applicationName,
  keepAlive: true
})

/**
 * Runs a dispatcher for as long as the Layer lives: `concurrency` claim loops, the LISTEN
 * connection, retention and metrics. Batches run on the `SqlClient` it is given (give it its own
 * pool with an `applicationName` to tell its connections apart). Creates the table if needed.
 *
 * LISTEN opens its own connection from the `PgClient`'s config; without a `PgClient` in the
 * context (another SqlClient, such as PGlite) the dispatcher is woken by in-process signals and
 * the poll interval, and says so in the log.
 *
 * @since 0.1.0
 * @category layers
 */
export const dispatcher = (
  options?: DispatcherOptions
): Layer.Layer<never, SqlError | InvalidName, SqlClient.SqlClient | Broker.Broker> =>
  Layer.scopedDiscard(Effect.gen(function*() {
    const tables = yield* resolveTables(options)
    const sql = yield* SqlClient.SqlClient
    const pg = yield* Effect.serviceOption(PgClient.PgClient)
    const broker = yield* Broker.Broker
    yield* Sql.setup(sql, tables)
    const batchSize = yield* positiveInt("batchSize", options?.batchSize ?? Outbox.defaults.batchSize, 100_000)
    const concurrency = yield* positiveInt("concurrency", options?.concurrency ?? Outbox.defaults.concurrency, 64)
    const window = yield* positiveInt("window", options?.window ?? batchSize, 100_000)
    const pack = yield* positiveInt("pack", options?.pack ?? 1, 10_000)
    const retention = options?.retention === false ? Option.none() : Option.some({
      maxAgeMs: Duration.toMillis(Duration.decode(options?.retention?.maxAge ?? Outbox.defaults.retentionMaxAge)),
      every: Duration.decode(options?.retention?.every ?? Outbox.defaults.retentionEvery),
      batchSize: yield* positiveInt(
        "retention.batchSize",
        options?.retention?.batchSize ?? Outbox.defaults.retentionBatchSize,
        1_000_000
      )
    })
    // The stats query needs no service: reuse the store's statement on this client.
    const stats = Store.readStats(sql, tables)
    const wake = yield* Queue.sliding<void>(1)
    const local = yield* Effect.serviceOption(Outbox.Outbox)
    if (Option.isSome(local)) yield* local.value.wake.register(wake)
    const resolved: Dispatcher.Resolved = {
      tables,
      batchSize,
      concurrency,
      window,
      pack,
      pollInterval: Duration.decode(options?.pollInterval ?? Outbox.defaults.pollInterval),
      ordering: options?.ordering ?? "unordered",
      retry: options?.retry ?? Outbox.defaultRetry,
      brokerBackoff: options?.brokerBackoff ?? Outbox.defaultBrokerBackoff,
      retention,
      listen: options?.listen === false ? Option.none() : Option.map(
        pg,
        (client) => listenConfig(client.config, options?.listenApplicationName ?? Outbox.defaults.listenApplicationName)
      ),
      metricsInterval: Duration.decode(options?.metricsInterval ?? Outbox.defaults.metricsInterval),
      metrics: Outbox.metrics,
      stats
    }
    if (options?.listen !== false && Option.isNone(pg)) {
      yield* Effect.logInfo("outbox dispatcher: no PgClient to LISTEN with; woken in-process and by the poll interval").pipe(
        Effect.annotateLogs({ package: "effect-background", module: "Outbox", table: tables.outbox })
      )
    }
    yield* Dispatcher.make(sql, broker, resolved, wake).start
  }))

/**
 * The `Outbox` service and a dispatcher in this process (in-process wake-ups skip the NOTIFY
 * round trip).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: DispatcherOptions
): Layer.Layer<Outbox.Outbox, SqlError | InvalidName, SqlClient.SqlClient | Broker.Broker> =>
  dispatcher(options).pipe(Layer.provideMerge(layerStore(options)))

/**
 * As `layer`, with the table prefix and notify settings read from `Config`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>,
  dispatcherOptions?: Outbox.DispatcherOptions
): Layer.Layer<
  Outbox.Outbox,
  SqlError | InvalidName | ConfigError.ConfigError,
  SqlClient.SqlClient | Broker.Broker
> =>
  Layer.unwrapEffect(Effect.map(Config.unwrap(config), (options) => layer({ ...dispatcherOptions, ...options })))
