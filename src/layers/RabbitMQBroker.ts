/**
 * The RabbitMQ implementation of {@link Broker.Broker}, on amqplib: one connection per layer,
 * publisher confirms with `mandatory` on a confirm channel, a channel per subscription,
 * topology declared on start and after every reconnect, consumers resumed automatically.
 *
 * Everything it creates is named from `prefix` (default `eb`):
 *
 * | name | kind | purpose |
 * |---|---|---|
 * | `<prefix>.topic` | durable topic exchange | every publish; groups bind their pattern here |
 * | `<prefix>.delay` | durable headers exchange | publishes with `delay`, routed by header `x-eb-delay` (bindings match with `all-with-x`: RabbitMQ 3.10+) |
 * | `<prefix>.delay.<ms>` | classic queue, TTL `<ms>`, `x-expires` | holds delayed messages, then dead-letters them to `<prefix>.topic` with their routing key |
 * | `<prefix>.group.<group>` | durable queue (classic or quorum, `x-max-priority` when asked) | a subscription group |
 * | `<prefix>.retry.<ms>.<group>` | classic queue, TTL `<ms>`, `x-expires` | retries of the group, dead-lettered back to `<prefix>.group.<group>` through the default exchange |
 * | `<prefix>.dlq.<group>` | durable queue | dead letters of the group, header `x-eb-dead-reason` |
 *
 * Retry and publish delays are rounded up to two significant digits (1234 ms → 1300 ms) so a
 * jittered schedule does not create a queue per message; a queue per delay (rather than
 * per-message TTLs in one queue) means a long delay never holds up a short one. Unused delay and
 * retry queues expire on their own. Messages published with a `delay` are routable to the delay
 * queue, so an unroutable topic is not detected for them.
 *
 * Caller headers and library metadata share the AMQP header table; metadata names are reserved
 * (`x-eb-*`, `traceparent`, `tracestate`), so no caller header can collide with them, and they
 * are split apart again on delivery. Transport headers: `x-eb-attempt`, `x-eb-routing-key` (the
 * original topic of a retried or dead-lettered message), `x-eb-last-error`, `x-eb-dead-reason`,
 * `x-eb-group`, `x-eb-delay`; library metadata: `traceparent`, `x-eb-task-key`. A message with
 * neither carries no header table at all (cheaper to encode). Its publish time travels in its
 * UUIDv7 message id (millisecond precision) or, for a caller-chosen id, in AMQP's `timestamp`
 * property (whole seconds, as the spec defines it).
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Broker from "../Broker.js"
import type { BrokerUnavailable } from "../BrokerError.js"
import * as checks from "../internal/options.js"
import * as transport from "../internal/rabbitmq/transport.js"
import * as url from "../internal/rabbitmq/url.js"
import type { InvalidOptions } from "../InvalidOptions.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** `amqp://user:password@host:5672/vhost` (or `amqps://`); percent-encode `:` `@` `/` in the password. */
  readonly url: Redacted.Redacted<string>
  /** Names every exchange and queue (`<prefix>.topic`, `<prefix>.group.<group>`, …). Default `eb`. */
  readonly prefix?: string | undefined
  /** Type of group and dead-letter queues. Default `classic`. */
  readonly queueType?: "classic" | "quorum" | undefined
  /** AMQP heartbeat in seconds; a half-open connection is noticed after about 3 × this. Default 5. */
  readonly heartbeat?: number | undefined
  /** Bounds each connection attempt (TCP, TLS, AMQP handshake, exchange declarations). Default 10 s. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** Delays between reconnect attempts after the connection dropped. Default {@link defaultReconnect}. */
  readonly reconnect?: Schedule.Schedule<unknown, BrokerUnavailable> | undefined
  /**
   * How long in-flight handlers may finish when a subscription or the layer closes. Default 10 s.
   * It bounds a subscription's whole shutdown (cancel, drain, channel close), even on a
   * connection that stopped answering; the layer's release takes at most twice it (its
   * channels, then the connection).
   */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
  /** Largest message body accepted by `publish`, checked before sending. Default 16 MiB. */
  readonly maxMessageBytes?: number | undefined
  /**
   * How long a publish waits for a connection during an outage, and for a confirm without any
   * progress, before failing typed. Default 30 s.
   */
  readonly publishTimeout?: Duration.DurationInput | undefined
}

/**
 * Reconnect policy: exponential from 100 ms, capped at 5 s, jittered, never giving up.
 *
 * @since 0.1.0
 * @category models
 */
export const defaultReconnect: Schedule.Schedule<unknown, BrokerUnavailable> = Schedule.exponential("100 millis").pipe(
  Schedule.union(Schedule.spaced("5 seconds")),
  Schedule.jittered
)

/**
 * @since 0.1.0
 * @category models
 */
export const defaults = {
  prefix: "eb",
  queueType: "classic",
  heartbeat: 5,
  connectTimeout: Duration.seconds(10),
  shutdownTimeout: Duration.seconds(10),
  maxMessageBytes: 16 * 1024 * 1024,
  publishTimeout: Duration.seconds(30)
} as const

const module = "RabbitMQBroker"

/** Every option checked into one `InvalidOptions` before anything connects. */
const resolve = (options: Options): Effect.Effect<transport.Resolved, InvalidOptions> =>
  Effect.gen(function*() {
    const prefix = options.prefix ?? defaults.prefix
    if (
      typeof prefix !== "string" || !/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,31}$/.test(prefix) || prefix.startsWith("amq.")
    ) {
      return yield* checks.invalid(
        module,
        "prefix",
        prefix,
        "must be 1-32 of letters, digits, . _ - and not start with amq."
      )
    }
    const resolved = yield* Either.all({
      ...checks.connectionTimeouts(module, options, defaults),
      queueType: checks.oneOf(module, "queueType", options.queueType, ["classic", "quorum"], defaults.queueType),
      heartbeat: checks.integer(module, "heartbeat", options.heartbeat, {
        min: 0,
        max: 600,
        fallback: defaults.heartbeat
      }),
      maxMessageBytes: checks.integer(module, "maxMessageBytes", options.maxMessageBytes, {
        min: 1,
        max: 512 * 1024 * 1024,
        fallback: defaults.maxMessageBytes
      })
    })
    if (options.reconnect !== undefined && !Schedule.isSchedule(options.reconnect)) {
      return yield* checks.invalid(module, "reconnect", "(not a Schedule)", "must be a Schedule")
    }
    if (!Redacted.isRedacted(options.url)) {
      return yield* checks.invalid(
        module,
        "url",
        "<not redacted>",
        "must be a Redacted string (Redacted.make or Config.redacted)"
      )
    }
    const endpoint = yield* url.parse(Redacted.value(options.url))
    return {
      endpoint,
      prefix,
      queueType: resolved.queueType,
      heartbeatSeconds: resolved.heartbeat,
      connectTimeout: resolved.connectTimeout,
      reconnect: options.reconnect ?? defaultReconnect,
      shutdownTimeout: resolved.shutdownTimeout,
      maxMessageBytes: resolved.maxMessageBytes,
      publishTimeout: resolved.publishTimeout
    }
  })

/**
 * Checks every option (a bad one, the URL included, fails `InvalidOptions` before connecting),
 * connects (bounded by `connectTimeout`), declares the exchanges and returns the Broker. Fails
 * with `BrokerUnavailable` (`connect`, `auth` or `timeout`) instead of retrying when the first
 * connection cannot be made; later drops are reconnected on `reconnect`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<Broker.Service, BrokerUnavailable | InvalidOptions, Scope.Scope> =>
  Effect.flatMap(resolve(options), transport.make).pipe(
    Effect.map(Broker.make),
    Effect.annotateLogs({ package: "effect-background", module: "RabbitMQBroker" })
  )

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Broker.Broker, BrokerUnavailable | InvalidOptions> =>
  Layer.scoped(Broker.Broker, make(options))

/**
 * `RabbitMQBroker.layerConfig({ url: Config.redacted("RABBITMQ_URL") })` or
 * `RabbitMQBroker.layerConfig(RabbitMQBroker.config)`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<Broker.Broker, BrokerUnavailable | InvalidOptions | ConfigError.ConfigError> =>
  Layer.scoped(Broker.Broker, Effect.flatMap(Config.unwrap(config), make))

/**
 * Reads `RABBITMQ_URL` (required, redacted), `RABBITMQ_PREFIX` (default `eb`) and
 * `RABBITMQ_QUEUE_TYPE` (`classic` or `quorum`, default `classic`).
 *
 * @since 0.1.0
 * @category config
 */
export const config: Config.Config<Options> = Config.all({
  url: Config.redacted("RABBITMQ_URL").pipe(
    Config.withDescription("AMQP URL, e.g. amqp://user:password@localhost:5672/vhost")
  ),
  prefix: Config.string("RABBITMQ_PREFIX").pipe(
    Config.withDefault(defaults.prefix),
    Config.withDescription("prefix of every exchange and queue name")
  ),
  queueType: Config.literal("classic", "quorum")("RABBITMQ_QUEUE_TYPE").pipe(
    Config.withDefault(defaults.queueType),
    Config.withDescription("type of group and dead-letter queues")
  )
})
