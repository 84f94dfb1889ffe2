/**
 * Typed, at-least-once publish/subscribe: what an application uses. The typed front (Schema
 * codecs, envelope, poison classification, retries, trace context, spans, per-delivery
 * isolation) lives here once; implementations in `layers/` only supply a byte-level
 * `BrokerTransport.Transport`.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import type * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type {
  BrokerUnavailable,
  HandlerDefect,
  InvalidName,
  PublishError,
  SubscribeError,
  Unsupported
} from "./BrokerError.js"
import type * as BrokerTransport from "./BrokerTransport.js"
import * as internal from "./internal/broker.js"
import * as names from "./internal/names.js"
import type { InvalidOptions } from "./InvalidOptions.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-background/Broker")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

export {
  BrokerUnavailable,
  DeclareConflict,
  DecodeError,
  EncodeError,
  ErrorTypeId,
  HandlerDefect,
  InvalidName,
  isBrokerError,
  PublishRejected,
  Unsupported
} from "./BrokerError.js"
export type { BrokerError, PublishError, SubscribeError } from "./BrokerError.js"

// ---------------------------------------------------------------------------
// topics
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category type ids
 */
export const TopicTypeId: unique symbol = Symbol.for("effect-background/Broker/Topic")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TopicTypeId = typeof TopicTypeId

/**
 * What producers and consumers share about a message: its name and Schema. The codec is
 * compiled once, here, never per message.
 *
 * @since 0.1.0
 * @category models
 */
export interface Subscribable<A, I = A> {
  /** The routing key (`orders.paid`) or, for a pattern, the binding key (`orders.*`). */
  readonly name: string
  readonly schema: Schema.Schema<A, I>
  /** @internal */
  readonly codec: internal.Codec<A>
}

/**
 * A named, Schema-typed message contract: `Broker.topic("orders.paid", OrderPaid)`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Topic<A, I = A> extends Subscribable<A, I> {
  readonly [TopicTypeId]: "topic"
}

/**
 * A subscribe-only binding with RabbitMQ topic wildcards (`*` one word, `#` zero or more words)
 * whose messages all share one Schema: `Broker.pattern("orders.#", OrderEvent)`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Pattern<A, I = A> extends Subscribable<A, I> {
  readonly [TopicTypeId]: "pattern"
}

/**
 * Defines a topic, or returns the `InvalidName` for a name RabbitMQ would reject or misroute
 * (empty, over 255 bytes, empty words, wildcards). The non-throwing twin of {@link topic}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const topicEither = <A, I>(name: string, schema: Schema.Schema<A, I>): Either.Either<Topic<A, I>, InvalidName> =>
  Either.map(
    names.validateTopic(name),
    (): Topic<A, I> => ({ [TopicTypeId]: "topic", name, schema, codec: internal.makeCodec(name, schema) })
  )

/**
 * Defines a topic. Throws `InvalidName` (see {@link topicEither}) for a bad name: topics are
 * static definitions, so a bad one is a programming error reported when the module loads.
 *
 * @since 0.1.0
 * @category constructors
 */
export const topic = <A, I>(name: string, schema: Schema.Schema<A, I>): Topic<A, I> =>
  Either.getOrThrowWith(topicEither(name, schema), (error) => error)

/**
 * Defines a wildcard binding for subscriptions, or returns the `InvalidName` for a malformed
 * pattern. The non-throwing twin of {@link pattern}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const patternEither = <A, I>(
  name: string,
  schema: Schema.Schema<A, I>
): Either.Either<Pattern<A, I>, InvalidName> =>
  Either.map(
    names.validatePattern(name),
    (): Pattern<A, I> => ({ [TopicTypeId]: "pattern", name, schema, codec: internal.makeCodec(name, schema) })
  )

/**
 * Defines a wildcard binding for subscriptions. Throws `InvalidName` (see {@link patternEither})
 * for a malformed pattern.
 *
 * @since 0.1.0
 * @category constructors
 */
export const pattern = <A, I>(name: string, schema: Schema.Schema<A, I>): Pattern<A, I> =>
  Either.getOrThrowWith(patternEither(name, schema), (error) => error)

// ---------------------------------------------------------------------------
// envelope, options
// ---------------------------------------------------------------------------

/**
 * What a handler receives beside the decoded message.
 *
 * @since 0.1.0
 * @category models
 */
export interface Envelope {
  /** The publisher's `messageId`, or a UUIDv7 made at publish time. */
  readonly id: string
  /** The routing key the message was published with (the concrete topic under a pattern). */
  readonly topic: string
  /** The caller's headers, exactly as published (string values). */
  readonly headers: Readonly<Record<string, string>>
  /**
   * Headers whose wire value is not a string, kept with their type: a foreign AMQP producer's
   * numbers, booleans, byte arrays, timestamps, decimals, arrays, tables and voids (see
   * {@link HeaderValue}). Never in `headers`, never stringified; empty for this library's own
   * messages, whose headers are strings on every transport.
   */
  readonly typedHeaders: Readonly<Record<string, HeaderValue>>
  /**
   * Library metadata (reserved names: `x-eb-*`, `traceparent`, …), apart from `headers`: what
   * `PublishOptions.metadata` carried, the trace context, and transport bookkeeping.
   */
  readonly metadata: Readonly<Record<string, string>>
  /** 1 on first delivery; incremented by each retry the handler's failure caused. */
  readonly attempt: number
  /** True when the broker redelivers after a crash or lost connection (not a retry). */
  readonly redelivered: boolean
  /**
   * To the millisecond for library-made ids; to the second when the publisher chose the id.
   * `undefined` when the producer did not record it (a foreign AMQP message without `timestamp`):
   * the library does not invent one.
   */
  readonly publishedAt: Date | undefined
  readonly correlationId: string | undefined
  /** W3C traceparent of the producer's span. */
  readonly traceparent: string | undefined
}

/**
 * A typed header value as a foreign AMQP producer can send it (the AMQP 0-9-1 field types):
 * numbers (every integer and float width; a 64-bit integer beyond 2^53 loses precision, as
 * amqplib decodes it), booleans, byte arrays, timestamps (`Date`, whole seconds), decimals, voids
 * (`null`), arrays and nested tables (a `ReadonlyMap`, so a table is never mistaken for a
 * decimal). Strings appear only inside arrays and tables; top-level strings are `Envelope.headers`.
 *
 * @since 0.1.0
 * @category models
 */
export type HeaderValue =
  | string
  | number
  | boolean
  | null
  | Uint8Array
  | Date
  | HeaderDecimal
  | ReadonlyArray<HeaderValue>
  | ReadonlyMap<string, HeaderValue>

/**
 * An AMQP decimal: `digits / 10^places`, kept exact.
 *
 * @since 0.1.0
 * @category models
 */
export interface HeaderDecimal {
  readonly _tag: "Decimal"
  readonly places: number
  readonly digits: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface PublishOptions {
  /**
   * The caller's headers: names of 1-128 bytes, not reserved (`x-eb-*`, `traceparent`,
   * `tracestate`, `x-death`); values without U+0000.
   */
  readonly headers?: Readonly<Record<string, string>> | undefined
  /**
   * For libraries built on the Broker (the TaskQueue's key travels here): entries named
   * `x-eb-<name>`, delivered in `Envelope.metadata` and never mixed with `headers`.
   */
  readonly metadata?: Readonly<Record<string, string>> | undefined
  /** Defaults to a new UUIDv7 (time-ordered); consumers may use it to deduplicate. */
  readonly messageId?: string | undefined
  readonly correlationId?: string | undefined
  /** Deliver no earlier than this from now. */
  readonly delay?: Duration.DurationInput | undefined
  /** 0-255; honoured by subscriptions declared with `maxPriority`. */
  readonly priority?: number | undefined
  /**
   * Drop the message if not consumed within this time, counted from the publish (or the end of
   * its `delay`). Its retries keep that deadline, so no retry outlives the message.
   */
  readonly expiration?: Duration.DurationInput | undefined
  /**
   * `false` lets the broker keep the message in memory only (AMQP delivery mode 1): RabbitMQ
   * takes it faster, still confirms it, and loses it if the broker restarts. For
   * messages that can be lost; the default is `true` (written to disk before the confirm).
   * Quorum queues (`queueType: "quorum"`) keep every message on disk whatever this says.
   */
  readonly persistent?: boolean | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface PublishAllOptions {
  /** Broker confirms in flight. Default 1,000. */
  readonly window?: number | undefined
  /**
   * Up to this many messages for the same topic travel as one RabbitMQ message (1 to 10,000;
   * default 1, off). RabbitMQ's work is per wire message, so packing multiplies the messages it
   * moves per second (see docs/benchmarks.md); each message is still delivered, retried and
   * dead-lettered on its own, with its own id, headers and metadata. Messages with a delay, priority or expiration are sent alone. Trade-offs:
   * only this library's consumers understand packed messages; a consumer that dies mid-way
   * gets the whole pack again (already-handled members run twice); queue depths count packs.
   * A transport that does not pack (`Capabilities.packedContentType` undefined) sends them one
   * by one, with the same delivery semantics.
   */
  readonly pack?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface PublishEntry {
  readonly topic: string
  /** @internal */
  readonly prepare: internal.Prepare
}

/**
 * An already-encoded message (an outbox row, a relay): published as is, without a Schema.
 *
 * @since 0.1.0
 * @category models
 */
export interface EncodedEntry {
  readonly topic: string
  /** JSON text as produced by the topic's Schema, or its UTF-8 bytes. */
  readonly body: string | Uint8Array
  readonly messageId: string
  readonly headers?: Readonly<Record<string, string>> | undefined
  readonly correlationId?: string | undefined
  /**
   * W3C traceparent to send. Omitted: the caller's current span, as `publish` does; `null`: none,
   * for a message whose trace context was recorded elsewhere (an outbox row added outside a span).
   */
  readonly traceparent?: string | null | undefined
  readonly publishedAt?: number | undefined
}

/**
 * Default retry policy of a subscription: 5 retries, exponential from 200 ms.
 *
 * @since 0.1.0
 * @category models
 */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = internal.defaultRetry

/**
 * @since 0.1.0
 * @category models
 */
export interface SubscribeOptions<E> {
  /** A durable queue: consumers in one group compete, each group receives every message. */
  readonly group: string
  /** Handlers run at once by this consumer. Default 10; 1 keeps strict order. */
  readonly concurrency?: number | undefined
  /**
   * Messages the broker may hand this consumer before it acknowledges any (RabbitMQ's prefetch).
   * Default: `concurrency`. Above it, the next message is already here when a handler ends, which
   * speeds up short handlers (the round trip to the broker no longer gaps each slot); the extra
   * messages wait in this process, unacknowledged, and go back to the queue if it stops. They run
   * in arrival order: priorities only reorder what is still in the broker. The in-memory broker
   * has no round trip and ignores it.
   */
  readonly prefetch?: number | undefined
  /** Decides, from the failure and the attempt count, the delay before the next attempt. */
  readonly retry?: Schedule.Schedule<unknown, E | HandlerDefect> | undefined
  /** Declares the group's queue with this maximum priority (RabbitMQ `x-max-priority`). */
  readonly maxPriority?: number | undefined
  /**
   * Runs once per failed attempt with the decision the subscription took (`retryIn`: the delay
   * before the next attempt; None: dead-lettered), before the broker carries it out, so a
   * library built on the Broker need not replay the retry Schedule to learn it. A failure of
   * this effect is logged and changes nothing.
   */
  readonly onFailure?: ((failure: Failure<E>) => Effect.Effect<void>) | undefined
}

/**
 * A failed attempt and what the subscription decided about it (see `SubscribeOptions.onFailure`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Failure<E> {
  readonly error: E | HandlerDefect
  readonly envelope: Envelope
  /** The delay before the next attempt; None when the message is dead-lettered. */
  readonly retryIn: Option.Option<Duration.Duration>
}

/**
 * @since 0.1.0
 * @category models
 */
export type Handler<A, E, R> = (message: A, envelope: Envelope) => Effect.Effect<void, E, R>

/**
 * @since 0.1.0
 * @category models
 */
export interface Health {
  /** `down` while the connection is not usable, including while the broker blocks it. */
  readonly status: "up" | "down"
  /** `blocked`: connected, but the broker refuses publishes for now (RabbitMQ's memory or disk alarm). */
  readonly connection: "open" | "blocked" | "reconnecting" | "closed"
  readonly consumers: number
  readonly detail: string
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly [TypeId]: TypeId
  /** Encodes with the topic's Schema; succeeds once the broker confirmed the message. */
  readonly publish: <A, I>(
    topic: Topic<A, I>,
    message: A,
    options?: PublishOptions
  ) => Effect.Effect<void, PublishError>
  /**
   * Publishes a batch keeping up to `window` confirms in flight; one outcome per entry, in order.
   * Succeeds even when some entries failed — inspect the results.
   */
  readonly publishAll: (
    entries: Iterable<PublishEntry>,
    options?: PublishAllOptions
  ) => Effect.Effect<ReadonlyArray<Either.Either<void, PublishError>>>
  /** As `publishAll` for already-encoded messages (the Outbox dispatcher uses it). */
  readonly publishAllEncoded: (
    entries: ReadonlyArray<EncodedEntry>,
    options?: PublishAllOptions
  ) => Effect.Effect<ReadonlyArray<Either.Either<void, PublishError>>>
  /**
   * Consumes until the enclosing Scope closes: ack on success; failure or defect → retried
   * after the schedule's delay with `attempt + 1`, dead-lettered when it is exhausted;
   * undecodable payload → dead-lettered at once; interrupted → requeued.
   */
  readonly subscribe: <A, I, E, R>(
    topic: Subscribable<A, I>,
    handler: Handler<A, E, R>,
    options: SubscribeOptions<E>
  ) => Effect.Effect<void, SubscribeError, R | Scope.Scope>
  /**
   * Declares a group's durable queue bound to the topic without consuming, so messages published
   * before the group's first consumer starts are kept (TaskQueue enqueues before any worker
   * runs). Idempotent. A no-op on a transport that cannot declare. Fails `DeclareConflict`
   * when the group exists with other arguments.
   */
  readonly declare: <A, I>(topic: Subscribable<A, I>, options: DeclareOptions) => Effect.Effect<void, SubscribeError>
  /**
   * Moves a group's dead letters back to its queue, oldest first, to be consumed again from
   * attempt 1 (after fixing what killed them). Moves at most what was dead when it started (and at
   * most `max`), so messages that die again wait for the next call; returns how many it moved.
   * At least once: a copy is in the queue before its dead letter is removed.
   */
  readonly redrive: (
    group: string,
    options?: RedriveOptions
  ) => Effect.Effect<number, BrokerUnavailable | InvalidName | InvalidOptions | Unsupported>
  readonly health: Effect.Effect<Health>
  /** What the transport underneath can honour. */
  readonly capabilities: BrokerTransport.Capabilities
}

/**
 * @since 0.1.0
 * @category models
 */
export interface RedriveOptions {
  /** Move at most this many (a positive integer). Default: all. */
  readonly max?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface DeclareOptions {
  readonly group: string
  /** Must match the `maxPriority` the group's subscribers use (RabbitMQ refuses other arguments). */
  readonly maxPriority?: number | undefined
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Broker extends Context.Tag("effect-background/Broker")<Broker, Service>() {}

// ---------------------------------------------------------------------------
// constructors, accessors
// ---------------------------------------------------------------------------

/**
 * Derives the typed service from a byte-level transport; every layer in `layers/` calls it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (transport: BrokerTransport.Transport) => Service = internal.make

/**
 * @since 0.1.0
 * @category accessors
 */
export const publish = <A, I>(
  topic: Topic<A, I>,
  message: A,
  options?: PublishOptions
): Effect.Effect<void, PublishError, Broker> =>
  Effect.flatMap(Broker, (broker) => broker.publish(topic, message, options))

/**
 * @since 0.1.0
 * @category accessors
 */
export const publishAll = (
  entries: Iterable<PublishEntry>,
  options?: PublishAllOptions
): Effect.Effect<ReadonlyArray<Either.Either<void, PublishError>>, never, Broker> =>
  Effect.flatMap(Broker, (broker) => broker.publishAll(entries, options))

/**
 * @since 0.1.0
 * @category accessors
 */
export const subscribe = <A, I, E, R>(
  topic: Subscribable<A, I>,
  handler: Handler<A, E, R>,
  options: SubscribeOptions<E>
): Effect.Effect<void, SubscribeError, Broker | R | Scope.Scope> =>
  Effect.flatMap(Broker, (broker) => broker.subscribe(topic, handler, options))

/**
 * @since 0.1.0
 * @category accessors
 */
export const health: Effect.Effect<Health, never, Broker> = Effect.flatMap(Broker, (broker) => broker.health)

/**
 * Moves a group's dead letters back to its queue (see `Service.redrive`).
 *
 * @since 0.1.0
 * @category accessors
 */
export const redrive = (
  group: string,
  options?: RedriveOptions
): Effect.Effect<number, BrokerUnavailable | InvalidName | InvalidOptions | Unsupported, Broker> =>
  Effect.flatMap(Broker, (broker) => broker.redrive(group, options))

/**
 * Builds a `PublishEntry` with its types checked against the topic.
 *
 * @since 0.1.0
 * @category constructors
 */
export const entry = <A, I>(topic: Topic<A, I>, message: A, options?: PublishOptions): PublishEntry => ({
  topic: topic.name,
  prepare: internal.prepare(topic, message, options)
})
