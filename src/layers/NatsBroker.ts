/**
 * The NATS JetStream implementation of {@link Broker.Broker}, on the `@nats-io/transport-node` and
 * `@nats-io/jetstream` clients (server 2.9 or later): one connection per layer, drained when the
 * layer's scope closes; the client reconnects on its own and the pull consumers resume.
 *
 * Mapping (all names from `stream`, default `EB`):
 *
 * | Broker | NATS |
 * |---|---|
 * | topic `orders.created` | subject `orders.created` |
 * | pattern `orders.*` / `orders.#` | filter subject `orders.*` / `orders.>` (`#` only as the last word; it matches one or more words, not zero) |
 * | group | durable pull consumer on stream `<stream>` (interest retention: a message stays until every group bound to its subject acked it; each group gets every message, its consumers compete) |
 * | a topic no group is bound to | no stream captures the subject: `PublishRejected("unroutable")` |
 * | message id | `Nats-Msg-Id`: a publish retried within `duplicateWindow` (default 2 minutes) is stored once |
 * | publish confirm | the PubAck (stored per the stream's `storage`: on disk by default) |
 * | retry after a delay | `nak` with the delay; `attempt` is the delivery count |
 * | dead letters | stream `<stream>_DLQ`, subject `_eb.dlq.<stream>.<group>`, headers `x-eb-dead-reason`, `x-eb-group`, `x-eb-routing-key` |
 * | `delay` | stream `<stream>_DELAY` until due, then moved to the topic by any broker on the stream |
 * | `expiration` | header `x-eb-expiration`, checked on delivery (server 2.9 has no per-message TTL) |
 * | `priority` | not supported: rejected with `Unsupported` |
 * | `persistent: false` | no per-message choice: the stream's `storage` (`"memory"` keeps every message in memory) |
 *
 * The broker's stream is created by the first group and given each group's pattern as a subject
 * (JetStream refuses overlapping subjects in one stream, so a pattern covering others replaces
 * them). Pass `subjects` to create it with a fixed list and never change it. An existing stream or
 * consumer with other settings fails `DeclareConflict` naming the field; nothing is reconfigured.
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
import type { BrokerUnavailable, DeclareConflict } from "../BrokerError.js"
import * as transport from "../internal/nats/transport.js"
import * as checks from "../internal/options.js"
import type { InvalidOptions } from "../InvalidOptions.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** `nats://host:4222`, several separated by commas; may hold `user:password@`. */
  readonly url: Redacted.Redacted<string>
  readonly token?: Redacted.Redacted<string> | undefined
  readonly user?: string | undefined
  readonly password?: Redacted.Redacted<string> | undefined
  /** An nkey seed (`SU…`). */
  readonly nkeySeed?: Redacted.Redacted<string> | undefined
  /** The content of a `.creds` file (user JWT and nkey seed). */
  readonly creds?: Redacted.Redacted<string> | undefined
  /** Client name shown by the server. Default `effect-background`. */
  readonly name?: string | undefined
  /** Names the streams: `<stream>`, `<stream>_DLQ`, `<stream>_DELAY`. Default `EB`. */
  readonly stream?: string | undefined
  /** Where the streams keep messages. Default `file`. */
  readonly storage?: "file" | "memory" | undefined
  /** Stream replicas (a cluster). Default 1. */
  readonly replicas?: number | undefined
  /** Oldest message the broker's stream keeps, even unconsumed. Default 0: no limit. */
  readonly maxAge?: Duration.DurationInput | undefined
  /**
   * Bytes each stream keeps. Full, the broker's and the delay stream refuse publishes
   * (`PublishRejected("nacked")`) rather than drop messages; the dead-letter stream drops its
   * oldest. Default -1: no limit.
   */
  readonly maxBytes?: number | undefined
  /** How long a message id is remembered to drop a republished copy. Default 2 minutes. */
  readonly duplicateWindow?: Duration.DurationInput | undefined
  /** Fixed subjects of the broker's stream (NATS wildcards); default: grown from the groups' patterns. */
  readonly subjects?: ReadonlyArray<string> | undefined
  /** Oldest dead letter kept. Default 0: no limit. */
  readonly deadLetterMaxAge?: Duration.DurationInput | undefined
  /** An unacked delivery is redelivered after this (slow handlers extend it). Default 30 s. */
  readonly ackWait?: Duration.DurationInput | undefined
  /** Deliveries a group may have unacked, retries waiting included. Default 10,000. */
  readonly maxAckPending?: number | undefined
  /** A message delivered more often than this is dead-lettered unhandled. Default 100. */
  readonly maxDeliver?: number | undefined
  /** Bounds the first connection and each management call. Default 10 s. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** Between reconnect attempts. Default 1 s. */
  readonly reconnectWait?: Duration.DurationInput | undefined
  /** How long in-flight handlers may finish when a subscription or the layer closes. Default 10 s. */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
  /** How long a publish waits for its PubAck (across a reconnect) before failing ambiguous. Default 30 s. */
  readonly publishTimeout?: Duration.DurationInput | undefined
  /** Largest body accepted by `publish`; capped by the server's `max_payload` less 34 KiB for headers. Default 1 MiB. */
  readonly maxMessageBytes?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export const defaults = {
  name: "effect-background",
  stream: "EB",
  storage: "file",
  replicas: 1,
  maxAge: Duration.zero,
  maxBytes: -1,
  duplicateWindow: Duration.minutes(2),
  deadLetterMaxAge: Duration.zero,
  ackWait: Duration.seconds(30),
  maxAckPending: 10_000,
  maxDeliver: 100,
  connectTimeout: Duration.seconds(10),
  reconnectWait: Duration.seconds(1),
  shutdownTimeout: Duration.seconds(10),
  publishTimeout: Duration.seconds(30),
  maxMessageBytes: 1024 * 1024
} as const

const module = "NatsBroker"

const redacted = (field: string, value: unknown): Either.Either<void, InvalidOptions> =>
  value === undefined || Redacted.isRedacted(value)
    ? Either.void
    : Either.left(
      checks.invalid(module, field, "<not redacted>", "must be a Redacted string (Redacted.make or Config.redacted)")
    )

const parseServers = (text: string): Either.Either<ReadonlyArray<string>, InvalidOptions> => {
  const servers = text.split(",").map((s) => s.trim()).filter((s) => s.length > 0)
  const bad = servers.find((s) => {
    try {
      const url = new URL(s.includes("://") ? s : `nats://${s}`)
      return !["nats:", "tls:", "ws:", "wss:"].includes(url.protocol) || url.hostname.length === 0
    } catch {
      return true
    }
  })
  if (servers.length === 0 || bad !== undefined) {
    return Either.left(
      checks.invalid(module, "url", "<redacted>", "must be nats://host:port (several separated by commas)")
    )
  }
  return Either.right(servers)
}

const subjectPattern = /^[^\s.*>]+(\.[^\s.*>]+|\.\*)*(\.(\*|>))?$|^(\*|>)$/

/** Every option checked into one `InvalidOptions` before anything connects. */
const resolve = (options: Options): Effect.Effect<transport.Resolved, InvalidOptions> =>
  Effect.gen(function*() {
    for (const field of ["url", "token", "password", "nkeySeed", "creds"] as const) {
      yield* redacted(field, options[field])
    }
    if (!Redacted.isRedacted(options.url)) {
      return yield* checks.invalid(module, "url", "<not redacted>", "must be a Redacted string")
    }
    const servers = yield* parseServers(Redacted.value(options.url))
    const stream = options.stream ?? defaults.stream
    if (typeof stream !== "string" || !/^[A-Za-z0-9_-]{1,32}$/.test(stream)) {
      return yield* checks.invalid(module, "stream", stream, "must be 1-32 of letters, digits, _ -")
    }
    const name = options.name ?? defaults.name
    if (typeof name !== "string" || name.length === 0 || name.length > 128) {
      return yield* checks.invalid(module, "name", name, "must be 1-128 characters")
    }
    if (options.user !== undefined && (typeof options.user !== "string" || options.user.length === 0)) {
      return yield* checks.invalid(module, "user", options.user, "must be a non-empty string")
    }
    const fixed = options.subjects
    if (
      fixed !== undefined &&
      (!Array.isArray(fixed) || fixed.length === 0 ||
        fixed.some((s) => typeof s !== "string" || !subjectPattern.test(s)))
    ) {
      return yield* checks.invalid(module, "subjects", fixed, "must be a non-empty list of NATS subjects")
    }
    const positive = { fallback: Duration.zero, positive: true }
    const resolved = yield* Either.all({
      ...checks.connectionTimeouts(module, options, defaults),
      storage: checks.oneOf(module, "storage", options.storage, ["file", "memory"], defaults.storage),
      replicas: checks.integer(module, "replicas", options.replicas, { min: 1, max: 5, fallback: defaults.replicas }),
      maxAge: checks.duration(module, "maxAge", options.maxAge, { fallback: defaults.maxAge }),
      maxBytes: options.maxBytes === -1
        ? Either.right(-1)
        : checks.integer(module, "maxBytes", options.maxBytes, { min: 1, fallback: defaults.maxBytes }),
      duplicateWindow: checks.duration(module, "duplicateWindow", options.duplicateWindow, {
        ...positive,
        fallback: defaults.duplicateWindow
      }),
      deadLetterMaxAge: checks.duration(module, "deadLetterMaxAge", options.deadLetterMaxAge, {
        fallback: defaults.deadLetterMaxAge
      }),
      ackWait: checks.duration(module, "ackWait", options.ackWait, { ...positive, fallback: defaults.ackWait }),
      maxAckPending: checks.integer(module, "maxAckPending", options.maxAckPending, {
        min: 1,
        max: 1_000_000,
        fallback: defaults.maxAckPending
      }),
      maxDeliver: checks.integer(module, "maxDeliver", options.maxDeliver, {
        min: 1,
        max: 1_000_000,
        fallback: defaults.maxDeliver
      }),
      reconnectWait: checks.duration(module, "reconnectWait", options.reconnectWait, {
        ...positive,
        fallback: defaults.reconnectWait
      }),
      maxMessageBytes: checks.integer(module, "maxMessageBytes", options.maxMessageBytes, {
        min: 1,
        max: 64 * 1024 * 1024,
        fallback: defaults.maxMessageBytes
      })
    })
    // The server takes durations at nanosecond precision, at most what fits in an int64.
    const maxAgeMs = Duration.toMillis(resolved.maxAge)
    if (maxAgeMs > 0 && maxAgeMs < 1000) {
      return yield* checks.invalid(module, "maxAge", options.maxAge, "must be 0 (no limit) or at least 1 second")
    }
    if (Duration.toMillis(resolved.duplicateWindow) < 100) {
      return yield* checks.invalid(module, "duplicateWindow", options.duplicateWindow, "must be at least 100 ms")
    }
    if (maxAgeMs > 0 && Duration.toMillis(resolved.duplicateWindow) > maxAgeMs) {
      return yield* checks.invalid(module, "duplicateWindow", options.duplicateWindow, "must not exceed maxAge")
    }
    return {
      connect: {
        servers,
        name,
        connectTimeout: resolved.connectTimeout,
        reconnectWait: resolved.reconnectWait,
        token: options.token,
        user: options.user,
        password: options.password,
        nkeySeed: options.nkeySeed,
        creds: options.creds
      },
      stream,
      streamSettings: {
        storage: resolved.storage,
        replicas: resolved.replicas,
        maxAge: resolved.maxAge,
        maxBytes: resolved.maxBytes,
        duplicateWindow: resolved.duplicateWindow,
        subjects: fixed,
        deadLetterMaxAge: resolved.deadLetterMaxAge
      },
      consumerSettings: { ackWait: resolved.ackWait, maxAckPending: resolved.maxAckPending },
      maxDeliver: resolved.maxDeliver,
      maxMessageBytes: resolved.maxMessageBytes,
      shutdownTimeout: resolved.shutdownTimeout,
      publishTimeout: resolved.publishTimeout
    }
  })

/**
 * Checks every option (a bad one fails `InvalidOptions` before connecting), connects (bounded by
 * `connectTimeout`), checks or creates the delay and dead-letter streams (an existing one with
 * other settings fails `DeclareConflict`) and returns the Broker. Fails `BrokerUnavailable`
 * (`connect`, `auth` or `timeout`) when the first connection cannot be made.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<Broker.Service, BrokerUnavailable | DeclareConflict | InvalidOptions, Scope.Scope> =>
  Effect.flatMap(resolve(options), transport.make).pipe(
    Effect.map((made) => Broker.make(made.transport)),
    Effect.annotateLogs({ package: "effect-background", module })
  )

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<Broker.Broker, BrokerUnavailable | DeclareConflict | InvalidOptions> =>
  Layer.scoped(Broker.Broker, make(options))

/**
 * `NatsBroker.layerConfig(NatsBroker.config)` or with your own `Config`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<Broker.Broker, BrokerUnavailable | DeclareConflict | InvalidOptions | ConfigError.ConfigError> =>
  Layer.scoped(Broker.Broker, Effect.flatMap(Config.unwrap(config), make))

const optionalRedacted = (name: string) => Config.option(Config.redacted(name)).pipe(Config.map(Option.getOrUndefined))

/**
 * Reads `NATS_URL` (required, redacted), `NATS_TOKEN`, `NATS_USER` + `NATS_PASSWORD`,
 * `NATS_NKEY_SEED`, `NATS_CREDS` (each redacted, optional), `NATS_STREAM` (default `EB`) and
 * `NATS_STORAGE` (`file` or `memory`, default `file`).
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<Options> = Config.all({
  url: Config.redacted("NATS_URL").pipe(Config.withDescription("NATS server URL(s), e.g. nats://localhost:4222")),
  token: optionalRedacted("NATS_TOKEN"),
  user: Config.option(Config.string("NATS_USER")).pipe(Config.map(Option.getOrUndefined)),
  password: optionalRedacted("NATS_PASSWORD"),
  nkeySeed: optionalRedacted("NATS_NKEY_SEED"),
  creds: optionalRedacted("NATS_CREDS"),
  stream: Config.string("NATS_STREAM").pipe(
    Config.withDefault(defaults.stream),
    Config.withDescription("prefix of the stream names")
  ),
  storage: Config.literal("file", "memory")("NATS_STORAGE").pipe(
    Config.withDefault(defaults.storage),
    Config.withDescription("storage of the streams")
  )
})
