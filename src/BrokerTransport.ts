/**
 * The port a transport author implements: bytes plus properties in, deliveries with a
 * `Disposition` out. `Broker.make(transport)` derives the typed service (codecs, envelope, poison,
 * retries, trace context, per-delivery isolation) from it, so a transport only moves bytes and
 * declares what it can honour in its {@link Capabilities}.
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import type * as Broker from "./Broker.js"
import type { BrokerUnavailable, DeclareConflict, PublishRejected } from "./BrokerError.js"
import * as internal from "./internal/broker.js"
import * as wire from "./internal/wire.js"

/**
 * A message as the transport moves it. `headers` are the caller's; `metadata` is the library's
 * (trace context, a task's key, …) and travels apart, so no legal user header can collide with
 * it. A transport that has a single header table (AMQP) may merge both, since every metadata
 * name is reserved (see {@link isReservedHeader}), and must split them again on delivery.
 *
 * @since 0.1.0
 * @category models
 */
export interface TransportMessage {
  readonly routingKey: string
  readonly body: Uint8Array
  readonly headers: Readonly<Record<string, string>>
  readonly metadata: Readonly<Record<string, string>>
  /**
   * Delivered headers whose wire value is not a string (only a foreign producer sends them; see
   * `Broker.Envelope.typedHeaders`). Omitted: none.
   */
  readonly typedHeaders?: Readonly<Record<string, Broker.HeaderValue>> | undefined
  readonly messageId: string
  readonly correlationId: string | undefined
  /**
   * Epoch milliseconds. Always set on publish; `undefined` on delivery when the producer did not
   * record it (a foreign message without a timestamp).
   */
  readonly publishedAt: number | undefined
  readonly priority: number | undefined
  /** Milliseconds. */
  readonly expiration: number | undefined
  /** Milliseconds; only on publish. */
  readonly delay: number | undefined
  /** False: the transport may keep it in memory only (see `Broker.PublishOptions.persistent`). */
  readonly persistent: boolean
}

/**
 * A batch whose messages are prepared (encoded, given ids) on demand, so a transport can send
 * the first while later ones are still being encoded.
 *
 * @since 0.1.0
 * @category models
 */
export interface TransportBatch {
  readonly size: number
  /**
   * The message at `index`; call once per index, in order. `undefined`: the entry cannot be
   * published (bad input) and the front already holds its outcome; the transport's result for
   * that index is ignored.
   */
  readonly prepare: (index: number) => TransportMessage | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface TransportDelivery {
  readonly message: TransportMessage
  /** 1-based; the transport increments it when it carries out a `Retry`. */
  readonly attempt: number
  /** True when the transport hands the message again after a crash or lost connection. */
  readonly redelivered: boolean
}

/**
 * What the typed front decided about a delivery. Interruption of `handle` means: requeue.
 *
 * @since 0.1.0
 * @category models
 */
export type Disposition =
  | { readonly _tag: "Ack" }
  | { readonly _tag: "Retry"; readonly delay: number; readonly reason: string }
  | { readonly _tag: "DeadLetter"; readonly reason: string }

/**
 * @since 0.1.0
 * @category models
 */
export interface TransportSubscription {
  /** Topic or wildcard pattern, validated. */
  readonly pattern: string
  /** Validated group name. */
  readonly group: string
  readonly concurrency: number
  /** Unacknowledged deliveries the transport may hand over; at least `concurrency`. */
  readonly prefetch: number
  readonly maxPriority: number | undefined
}

/**
 * What a transport can honour. The typed front rejects a publish or subscribe option the
 * transport cannot honour with `BrokerError.Unsupported` instead of ignoring it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Capabilities {
  /** Short name for errors and documents (`"rabbitmq"`, `"memory"`). */
  readonly name: string
  /** `PublishOptions.delay`. */
  readonly delay: boolean
  /** `PublishOptions.priority` and `SubscribeOptions.maxPriority`. */
  readonly priority: boolean
  /** `PublishOptions.expiration`. */
  readonly expiration: boolean
  /** `Broker.pattern` subscriptions with `*` / `#`. */
  readonly wildcards: boolean
  /**
   * Several messages travel as one wire message when `PublishAllOptions.pack` asks for it; the
   * wire content type of such a message. Undefined: the transport sends them one by one, which
   * honours the same delivery semantics.
   */
  readonly packedContentType: string | undefined
  /** `PublishOptions.persistent: false` keeps a message in memory only (false: always stored). */
  readonly transient: boolean
  /** `Broker.redrive` (the transport then implements `Transport.redrive`). */
  readonly redrive: boolean
  /** Largest body the transport accepts, in bytes. */
  readonly maxMessageBytes: number
  /**
   * Where a message goes, for tracing (OpenTelemetry messaging conventions): the destination
   * (`messaging.destination.name`, e.g. RabbitMQ's exchange, and the span names `send <name>` /
   * `process <name>`) and attributes of the transport's own. Default: the routing key.
   */
  readonly destination?: ((routingKey: string) => Destination) | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Destination {
  readonly name: string
  readonly attributes: Readonly<Record<string, string>>
}

/**
 * The byte-level port every implementation supplies; `Broker.make` derives the typed service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Transport {
  readonly capabilities: Capabilities
  /** Succeeds once the server has taken responsibility for the message. */
  readonly publish: (message: TransportMessage) => Effect.Effect<void, BrokerUnavailable | PublishRejected>
  /** One outcome per index of the batch, in order (see `TransportBatch`). */
  readonly publishAll: (
    batch: TransportBatch,
    window: number,
    /** Up to this many messages per wire message where the transport packs (see `Capabilities.packedContentType`). */
    pack?: number
  ) => Effect.Effect<ReadonlyArray<Either.Either<void, BrokerUnavailable | PublishRejected>>>
  /**
   * Delivers each message to `handle`, at most `concurrency` at a time, and carries out the
   * disposition (ack; republish with `attempt + 1` after the delay; dead-letter with the reason)
   * before acknowledging the original. Lives until the Scope closes; closing stops new
   * deliveries, lets in-flight ones finish within the transport's shutdown timeout, and
   * requeues the rest.
   *
   * `handle` isolates itself: it sets the subscriber's context, log annotations and span for the
   * delivery and puts the fiber's back when it returns, so a transport may call it from any
   * fiber, one delivery after another.
   */
  readonly consume: (
    subscription: TransportSubscription,
    handle: (delivery: TransportDelivery) => Effect.Effect<Disposition>
  ) => Effect.Effect<void, BrokerUnavailable | DeclareConflict, Scope.Scope>
  /**
   * Declares the subscription's durable group queue and binding without consuming; idempotent.
   * Optional: without it `Broker.declare` is a no-op and publishes stay unroutable until the
   * group's first consumer starts.
   */
  readonly declare?:
    | ((subscription: TransportSubscription) => Effect.Effect<void, BrokerUnavailable | DeclareConflict>)
    | undefined
  /**
   * Moves up to `max` of the group's dead letters back to its queue with their attempt count reset
   * (see `Broker.Service.redrive`). Present when `capabilities.redrive` is true.
   */
  readonly redrive?: ((group: string, max: number) => Effect.Effect<number, BrokerUnavailable>) | undefined
  readonly health: Effect.Effect<Broker.Health>
}

// ---------------------------------------------------------------------------
// header policy
// ---------------------------------------------------------------------------

/**
 * Header names the library and the transports own on the wire; user headers may not use them.
 *
 * @since 0.1.0
 * @category header policy
 */
export const headers: typeof wire.headers = wire.headers

/**
 * Whether a header name is reserved for library metadata or transport bookkeeping: `x-eb-*`,
 * `traceparent`, `tracestate`, and RabbitMQ's dead-lettering headers (`x-death`, …).
 *
 * @since 0.1.0
 * @category header policy
 */
export const isReservedHeader: (name: string) => boolean = wire.isReservedHeader

/**
 * Splits a single wire header table into the caller's headers and the library's metadata, for
 * transports that merge them on publish (see {@link mergeHeaders}). RabbitMQ's `x-death`
 * bookkeeping is dropped.
 *
 * @since 0.1.0
 * @category header policy
 */
export const splitHeaders: (
  table: Readonly<Record<string, string>>
) => { readonly headers: Readonly<Record<string, string>>; readonly metadata: Readonly<Record<string, string>> } =
  wire.splitHeaders

/**
 * One header table holding both, for transports that have a single one; no copy when either is
 * empty.
 *
 * @since 0.1.0
 * @category header policy
 */
export const mergeHeaders: (
  headers: Readonly<Record<string, string>>,
  metadata: Readonly<Record<string, string>>
) => Readonly<Record<string, string>> = wire.mergeHeaders

/**
 * The header table of a message without headers or metadata, shared.
 *
 * @since 0.1.0
 * @category header policy
 */
export const noHeaders: Readonly<Record<string, string>> = wire.noHeaders

/**
 * Each message of a batch through `publish`, in order: for transports that need not stream.
 *
 * @since 0.1.0
 * @category combinators
 */
export const mapBatch: <E>(
  batch: TransportBatch,
  publish: (message: TransportMessage) => Either.Either<void, E>
) => Array<Either.Either<void, E>> = internal.mapBatch
