/**
 * An in-process Broker with RabbitMQ's semantics — topic routing with `*`/`#` wildcards, durable
 * group queues that keep receiving while no consumer is attached, competing consumers,
 * prefetch, retries and dead letters, delays, priorities, expiration, graceful shutdown — for
 * tests and single-process apps. Time goes through `Clock`, so `TestClock` drives delays, retry
 * delays and expiration. The `MemoryBroker` tag adds an inspection API for tests.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Broker from "../Broker.js"
import type { DecodeError } from "../BrokerError.js"
import { toBuffer } from "../internal/broker.js"
import * as internal from "../internal/memory/transport.js"
import * as names from "../internal/names.js"
import * as checks from "../internal/options.js"
import * as wire from "../internal/wire.js"
import type { InvalidOptions } from "../InvalidOptions.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Largest body accepted, in bytes. Default 16 MiB. */
  readonly maxMessageBytes?: number | undefined
  /** How long closing a subscription waits for in-flight handlers before interrupting (requeueing) them. Default 10 s. */
  readonly shutdownTimeout?: Duration.DurationInput | undefined
  /** How many published messages the inspection API keeps (oldest dropped first); 0 keeps none. Default 10,000. */
  readonly publishedLimit?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export const defaults = {
  maxMessageBytes: 16 * 1024 * 1024,
  shutdownTimeout: Duration.seconds(10),
  publishedLimit: 10_000
} as const

/**
 * A message the broker accepted.
 *
 * @since 0.1.0
 * @category models
 */
export interface Published {
  readonly topic: string
  readonly messageId: string
  /** The body as UTF-8 text (JSON for typed topics). */
  readonly body: string
  /** The caller's headers (library headers removed). */
  readonly headers: Readonly<Record<string, string>>
  readonly correlationId: string | undefined
  readonly traceparent: string | undefined
  /** As in `Broker.Envelope.publishedAt`. */
  readonly publishedAt: Date | undefined
  readonly priority: number | undefined
  /** Milliseconds. */
  readonly delay: number | undefined
  /** Milliseconds. */
  readonly expiration: number | undefined
  /** `PublishOptions.persistent` (a transient task's enqueue is false); memory keeps both alike. */
  readonly persistent: boolean
  /** The groups it was routed to. */
  readonly groups: ReadonlyArray<string>
}

/**
 * A message a group gave up on: retries exhausted, poison payload, or a dead handler.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetter {
  readonly group: string
  readonly topic: string
  readonly messageId: string
  /** Why: the last error (retries exhausted) or the decode error (poison). */
  readonly reason: string
  readonly body: string
  readonly headers: Readonly<Record<string, string>>
  readonly correlationId: string | undefined
  /** The attempt that failed last. */
  readonly attempt: number
  readonly publishedAt: Date | undefined
  readonly deadLetteredAt: Date
}

/**
 * The state of one group's queue.
 *
 * @since 0.1.0
 * @category models
 */
export interface QueueStats extends internal.GroupStats {}

/**
 * The Broker plus what tests want to look at.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service extends Broker.Service {
  /** Accepted messages in publish order (up to `publishedLimit`, newest kept). */
  readonly published: Effect.Effect<ReadonlyArray<Published>>
  /** The accepted messages whose topic matches `topic` (a topic or pattern), decoded with its Schema. */
  readonly messages: <A, I>(topic: Broker.Subscribable<A, I>) => Effect.Effect<ReadonlyArray<A>, DecodeError>
  readonly deadLetters: (group: string) => Effect.Effect<ReadonlyArray<DeadLetter>>
  readonly queues: Effect.Effect<ReadonlyArray<QueueStats>>
  readonly queue: (group: string) => Effect.Effect<Option.Option<QueueStats>>
  /**
   * Waits until nothing is in flight, no delay is pending and every queue that has a consumer is
   * empty (queues without consumers cannot drain and are ignored). Under `TestClock`, pending
   * delays need the clock moved. Add a timeout when a handler may block.
   */
  readonly awaitIdle: Effect.Effect<void>
}

/**
 * The inspection API of the in-memory broker (the same value as its `Broker.Broker`).
 *
 * @since 0.1.0
 * @category tags
 */
export class MemoryBroker extends Context.Tag("effect-background/layers/MemoryBroker")<MemoryBroker, Service>() {}

const text = (body: Uint8Array): string => toBuffer(body).toString("utf8")

const dateOf = (millis: number | undefined): Date | undefined => (millis === undefined ? undefined : new Date(millis))

const toPublished = ({ groups, message }: internal.PublishedRecord): Published => ({
  topic: message.routingKey,
  messageId: message.messageId,
  body: text(message.body),
  headers: message.headers,
  correlationId: message.correlationId,
  traceparent: message.metadata[wire.headers.traceparent],
  publishedAt: dateOf(message.publishedAt),
  priority: message.priority,
  delay: message.delay,
  expiration: message.expiration,
  persistent: message.persistent,
  groups
})

const toDeadLetter = (record: internal.DeadLetterRecord): DeadLetter => ({
  group: record.group,
  topic: record.message.routingKey,
  messageId: record.message.messageId,
  reason: record.reason,
  body: text(record.message.body),
  headers: record.message.headers,
  correlationId: record.message.correlationId,
  attempt: record.attempt,
  publishedAt: dateOf(record.message.publishedAt),
  deadLetteredAt: new Date(record.at)
})

const resolve = (options: Options | undefined): Either.Either<internal.Options, InvalidOptions> =>
  Either.all({
    maxMessageBytes: checks.integer("MemoryBroker", "maxMessageBytes", options?.maxMessageBytes, {
      min: 1,
      fallback: defaults.maxMessageBytes
    }),
    publishedLimit: checks.integer("MemoryBroker", "publishedLimit", options?.publishedLimit, {
      min: 0,
      fallback: defaults.publishedLimit
    }),
    shutdownTimeout: checks.duration("MemoryBroker", "shutdownTimeout", options?.shutdownTimeout, {
      fallback: Duration.decode(defaults.shutdownTimeout)
    })
  })

/**
 * Makes a broker whose state lives in the current Scope (one broker per call; nothing global).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options?: Options): Effect.Effect<Service, InvalidOptions, Scope.Scope> =>
  Effect.gen(function*() {
    const resolved = yield* resolve(options)
    const memory = yield* internal.make(resolved)
    const broker = Broker.make(memory.transport)
    const service: Service = {
      ...broker,
      published: Effect.sync(() => memory.published().map(toPublished)),
      messages: <A, I>(topic: Broker.Subscribable<A, I>) =>
        Effect.suspend(() => {
          const decoded: Array<A> = []
          for (const { message } of memory.published()) {
            if (!names.matchesPattern(topic.name, message.routingKey)) continue
            const result = topic.codec.decode(message.body, message.messageId, message.routingKey)
            if (Either.isLeft(result)) return Effect.fail(result.left)
            decoded.push(result.right)
          }
          return Effect.succeed(decoded)
        }),
      deadLetters: (group) => Effect.sync(() => memory.deadLetters(group).map(toDeadLetter)),
      queues: Effect.sync(memory.stats),
      queue: (group) => Effect.sync(() => Option.fromNullable(memory.statsOf(group))),
      awaitIdle: memory.awaitIdle
    }
    return service
  })

const toContext = (service: Service) => Context.make(Broker.Broker, service).pipe(Context.add(MemoryBroker, service))

/**
 * Provides `Broker.Broker` and the `MemoryBroker` inspection API from one broker.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<Broker.Broker | MemoryBroker, InvalidOptions> =>
  Layer.scopedContext(Effect.map(make(options), toContext))

/**
 * As {@link layer}, reading the options from `Config`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<Broker.Broker | MemoryBroker, InvalidOptions | ConfigError.ConfigError> =>
  Layer.scopedContext(Effect.map(Effect.flatMap(Config.unwrap(config), make), toContext))
