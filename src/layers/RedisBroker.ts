/**
 * The Redis Streams implementation of {@link Broker.Broker}, on node-redis 5: a topic is a stream,
 * a subscription group is a consumer group on it (every group gets every message; consumers of a
 * group compete), publish is `XADD`, ack is `XACK`. One command connection per layer; each
 * subscription reads on its own blocking connection. Standalone Redis: Redis Cluster is not
 * supported (the scripts touch keys of several slots), and Sentinel discovery is not built in
 * (with Sentinel, `url` must name the current primary, e.g. through a DNS name or proxy that
 * follows it: a connection left on a demoted primary fails its writes until it reconnects).
 *
 * Keys, all under `prefix` (default `eb`):
 *
 * | key | type | purpose |
 * |---|---|---|
 * | `<prefix>:s:<topic>` | stream | every publish to the topic; one consumer group per subscription group |
 * | `<prefix>:groups:<topic>` | set | groups bound to the topic (empty: publish fails `unroutable`, nothing stored) |
 * | `<prefix>:topics` | set | every topic with a group |
 * | `<prefix>:q:<group>` | stream | the group's own entries: retries, publish delays come due, requeues, redriven dead letters |
 * | `<prefix>:z:<group>` | sorted set | the group's delayed entries (score: due time, epoch ms) |
 * | `<prefix>:dlq:<group>` | stream | dead letters, field `d` = reason; kept until redriven or deleted |
 *
 * Guarantees:
 * - **Publish** succeeds once `XADD` returned: the entry is in the primary's memory. What survives
 *   a crash is the server's persistence: with `appendonly yes` + `appendfsync always` every
 *   confirmed message survives a restart; with `everysec` up to about a second of them may be
 *   lost; without AOF (RDB only, or none) everything since the last snapshot is. A failover to a
 *   replica can lose what had not replicated yet: `waitForReplicas` makes each publish (or each
 *   window of a `publishAll`) wait for `WAIT <replicas>` before succeeding, and fail
 *   `PublishRejected` (`timeout`, ambiguous) when fewer replicas acknowledged in time.
 * - A publish to a topic no group is declared on fails `unroutable` (as with RabbitMQ); declare
 *   the group first (`Broker.declare`, which the TaskQueue does) to keep messages for consumers
 *   that start later. A new group starts at the stream's end: it receives messages published
 *   after it was declared.
 * - **Retries** go through the group's delayed set and its stream (only the failing group sees
 *   them), with the attempt carried in the entry; exhausted or poison → the group's dead-letter
 *   stream with the reason; `Broker.redrive` moves them back from attempt 1.
 * - **Dead consumers**: entries a consumer read and did not settle are claimed (`XPENDING IDLE` +
 *   `XCLAIM`) by a live consumer of the group once idle for `claimIdle`, delivered flagged
 *   `redelivered` and counted in `Broker.health`'s detail; one handed out `maxDeliveries` times
 *   without being settled (it crashes its consumer) is dead-lettered with that reason, counted
 *   as stalled, instead of taking every consumer down in turn. A live consumer renews what it holds every
 *   `claimIdle / 4`, so a slow handler is not claimed while its process is alive.
 * - **Trimming**: each stream is trimmed (`XTRIM MINID`) to what every group has acknowledged,
 *   every `trimInterval`: an unread or unacknowledged entry is never trimmed. A group that
 *   stops consuming therefore keeps its topic's stream growing: delete unused groups
 *   (`XGROUP DESTROY` and `SREM <prefix>:groups:<topic>`). Dead-letter streams are never trimmed.
 * - `delay` and retry delays are precise to about `pollInterval` (the mover sleeps until the next
 *   due entry, at most that long) and need a running consumer of the group to come due;
 *   `expiration` counts from the moment an entry entered the stream it is read from, and its
 *   retries keep that deadline (a redriven dead letter starts it again). Delays and expirations
 *   use the clocks of the publishing and consuming processes and the server's (stream ids):
 *   keep them in sync.
 * - Not supported (rejected by the front with `Unsupported`): `priority`/`maxPriority`, wildcard
 *   patterns, `persistent: false` has no effect (persistence is the server's). `publishAll`'s
 *   `pack` sends messages one by one.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as Broker from "../Broker.js"
import type { BrokerUnavailable } from "../BrokerError.js"
import * as checks from "../internal/options.js"
import * as transport from "../internal/redis/transport.js"
import type { InvalidOptions } from "../InvalidOptions.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** `redis://[user@]host:6379[/db]` or `rediss://` (TLS). */
  readonly url: Redacted.Redacted<string>
  /** Password (or ACL password), kept out of the URL. */
  readonly password?: Redacted.Redacted<string> | undefined
  /** Connect with TLS (also implied by a `rediss://` URL). Default false. */
  readonly tls?: boolean | undefined
  /** Names every key (`<prefix>:s:<topic>`, …). Default `eb`. */
  readonly prefix?: string | undefined
  /** How long a delivery stays unacknowledged before a live consumer claims it from a dead one. Default 30 s. */
  readonly claimIdle?: Duration.DurationInput | undefined
  /**
   * A delivery handed out this many times without being settled (its consumer crashed or stalled
   * each time) is dead-lettered instead of claimed again. Default 5.
   */
  readonly maxDeliveries?: number | undefined
  /** Longest sleep of the mover of delayed entries (precision of delays). Default 100 ms. */
  readonly pollInterval?: Duration.DurationInput | undefined
  /** How often streams are trimmed to what every group acknowledged. Default 5 s. */
  readonly trimInterval?: Duration.DurationInput | undefined
  /** Bounds the first connection attempt. Default 10 s. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** How long in-flight handlers may finish when a subscription or the layer closes. Default 10 s. */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
  /** How long a publish waits for a connection during an outage. Default 30 s. */
  readonly publishTimeout?: Duration.DurationInput | undefined
  /** Largest message body accepted by `publish`, checked before sending. Default 16 MiB. */
  readonly maxMessageBytes?: number | undefined
  /** Publish succeeds only once this many replicas acknowledged it (`WAIT`), within `timeout`. */
  readonly waitForReplicas?: {
    readonly replicas: number
    readonly timeout: Duration.DurationInput
  } | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export const defaults = {
  prefix: "eb",
  claimIdle: Duration.seconds(30),
  maxDeliveries: 5,
  pollInterval: Duration.millis(100),
  trimInterval: Duration.seconds(5),
  connectTimeout: Duration.seconds(10),
  shutdownTimeout: Duration.seconds(10),
  publishTimeout: Duration.seconds(30),
  maxMessageBytes: 16 * 1024 * 1024
} as const

const module = "RedisBroker"

const checkUrl = (url: unknown): Either.Either<string, InvalidOptions> => {
  if (!Redacted.isRedacted(url)) {
    return Either.left(
      checks.invalid(module, "url", "<not redacted>", "must be a Redacted string (Redacted.make or Config.redacted)")
    )
  }
  const value: unknown = Redacted.value(url)
  const parsed = typeof value === "string" && URL.canParse(value) ? new URL(value) : undefined
  if (parsed === undefined || (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:")) {
    return Either.left(checks.invalid(module, "url", "<redacted>", "must be a redis:// or rediss:// URL"))
  }
  return Either.right(parsed.protocol)
}

/** Every option checked into one `InvalidOptions` before anything connects. */
const resolve = (options: Options): Effect.Effect<transport.Resolved, InvalidOptions> =>
  Effect.gen(function*() {
    const prefix = options.prefix ?? defaults.prefix
    if (typeof prefix !== "string" || !/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,31}$/.test(prefix)) {
      return yield* checks.invalid(module, "prefix", prefix, "must be 1-32 of letters, digits, . _ -")
    }
    const positive = { positive: true }
    const resolved = yield* Either.all({
      ...checks.connectionTimeouts(module, options, defaults),
      claimIdle: checks.duration(module, "claimIdle", options.claimIdle, { ...positive, fallback: defaults.claimIdle }),
      pollInterval: checks.duration(module, "pollInterval", options.pollInterval, {
        ...positive,
        fallback: defaults.pollInterval
      }),
      trimInterval: checks.duration(module, "trimInterval", options.trimInterval, {
        ...positive,
        fallback: defaults.trimInterval
      }),
      maxDeliveries: checks.integer(module, "maxDeliveries", options.maxDeliveries, {
        min: 1,
        max: 1000,
        fallback: defaults.maxDeliveries
      }),
      maxMessageBytes: checks.integer(module, "maxMessageBytes", options.maxMessageBytes, {
        min: 1,
        max: 512 * 1024 * 1024,
        fallback: defaults.maxMessageBytes
      })
    })
    if (Duration.toMillis(resolved.claimIdle) < 100) {
      return yield* checks.invalid(module, "claimIdle", options.claimIdle, "must be at least 100 millis")
    }
    if (options.tls !== undefined && typeof options.tls !== "boolean") {
      return yield* checks.invalid(module, "tls", options.tls, "must be a boolean")
    }
    if (options.password !== undefined && !Redacted.isRedacted(options.password)) {
      return yield* checks.invalid(module, "password", "<not redacted>", "must be a Redacted string")
    }
    let waitForReplicas: transport.Resolved["waitForReplicas"]
    if (options.waitForReplicas !== undefined) {
      const wait = options.waitForReplicas
      waitForReplicas = yield* Either.all({
        replicas: checks.integer(module, "waitForReplicas.replicas", wait.replicas, { min: 1, max: 64, fallback: 1 }),
        timeout: checks.duration(module, "waitForReplicas.timeout", wait.timeout, {
          ...positive,
          fallback: Duration.seconds(1)
        })
      })
    }
    const protocol = yield* checkUrl(options.url)
    return {
      endpoint: {
        url: options.url,
        password: options.password,
        tls: options.tls === true || protocol === "rediss:",
        connectTimeoutMs: Duration.toMillis(resolved.connectTimeout)
      },
      prefix,
      claimIdle: resolved.claimIdle,
      maxDeliveries: resolved.maxDeliveries,
      pollInterval: resolved.pollInterval,
      trimInterval: resolved.trimInterval,
      shutdownTimeout: resolved.shutdownTimeout,
      publishTimeout: resolved.publishTimeout,
      maxMessageBytes: resolved.maxMessageBytes,
      waitForReplicas
    }
  })

/**
 * Checks every option (a bad one fails `InvalidOptions` before connecting), connects (bounded by
 * `connectTimeout`; `BrokerUnavailable` `connect`, `auth` or `timeout` when the first connection
 * cannot be made) and returns the Broker. Later drops are reconnected (100 ms doubling to 5 s,
 * jittered, forever) and subscriptions resume reading.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<Broker.Service, BrokerUnavailable | InvalidOptions, Scope.Scope> =>
  Effect.flatMap(resolve(options), transport.make).pipe(
    Effect.map((made) => Broker.make(made.transport)),
    Effect.annotateLogs({ package: "effect-background", module })
  )

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Broker.Broker, BrokerUnavailable | InvalidOptions> =>
  Layer.scoped(Broker.Broker, make(options))

/**
 * `RedisBroker.layerConfig(RedisBroker.config)` or
 * `RedisBroker.layerConfig({ url: Config.redacted("REDIS_URL") })`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<Broker.Broker, BrokerUnavailable | InvalidOptions | ConfigError.ConfigError> =>
  Layer.scoped(Broker.Broker, Effect.flatMap(Config.unwrap(config), make))

/**
 * Reads `REDIS_URL` (required, redacted), `REDIS_PASSWORD` (optional, redacted), `REDIS_TLS`
 * (default false) and `REDIS_PREFIX` (default `eb`).
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<Options> = Config.all({
  url: Config.redacted("REDIS_URL").pipe(Config.withDescription("Redis URL, e.g. redis://localhost:6379/0")),
  password: Config.option(Config.redacted("REDIS_PASSWORD")).pipe(
    Config.map(Option.getOrUndefined),
    Config.withDescription("Redis password, kept out of the URL")
  ),
  tls: Config.boolean("REDIS_TLS").pipe(Config.withDefault(false), Config.withDescription("connect with TLS")),
  prefix: Config.string("REDIS_PREFIX").pipe(
    Config.withDefault(defaults.prefix),
    Config.withDescription("prefix of every key")
  )
})
