import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Predicate from "effect/Predicate"
import * as Schedule from "effect/Schedule"
import type * as Schema from "effect/Schema"
import type * as Broker from "../Broker.js"
import type { InvalidName } from "../BrokerError.js"
import { DecodeError, EncodeError, HandlerDefect, PublishRejected, Unsupported } from "../BrokerError.js"
import type * as BrokerTransport from "../BrokerTransport.js"
import type { InvalidOptions } from "../InvalidOptions.js"
import * as isolation from "./isolation.js"
import * as messageId from "./messageId.js"
import * as names from "./names.js"
import * as checks from "./options.js"
import * as plainSchema from "./plainSchema.js"
import { nextRetryDelay } from "./retry.js"
import {
  builtInTracer,
  currentTraceparent,
  spanOfTraceparent,
  withSpanWhenTraced,
  withTraceContext
} from "./tracing.js"
import * as wire from "./wire.js"

const headers = wire.headers

/** @internal */
export const TypeId: Broker.TypeId = Symbol.for("effect-background/Broker") as Broker.TypeId

/** @internal */
export interface Codec<A> {
  readonly encode: (message: A) => Either.Either<Uint8Array, EncodeError>
  readonly decode: (body: Uint8Array, messageId: string, routingKey: string) => Either.Either<A, DecodeError>
}

const formatIssue = (issue: ParseResult.ParseIssue): string => ParseResult.TreeFormatter.formatIssueSync(issue)

/** @internal */
export const toBuffer = (body: Uint8Array): Buffer =>
  Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength)

/** The path of the first NaN or ±Infinity in an encoded value (`["items"][2].price`), if any. */
const nonFinitePath = (value: unknown, path: string): string | undefined => {
  if (typeof value === "number") return Number.isFinite(value) ? undefined : path
  if (typeof value !== "object" || value === null) return undefined
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = nonFinitePath(value[i], `${path}[${i}]`)
      if (found !== undefined) return found
    }
    return undefined
  }
  // toJSON (Date, …) decides its own text: what it writes is what is sent.
  if (typeof (value as { toJSON?: unknown }).toJSON === "function") return undefined
  for (const key in value) {
    const found = nonFinitePath((value as Record<string, unknown>)[key], path === "" ? key : `${path}.${key}`)
    if (found !== undefined) return found
  }
  return undefined
}

/** The failure of an encode: NaN or ±Infinity in the encoded value, or nothing JSON can write. */
const encodeIssue = (encoded: unknown, text: string | undefined): string | undefined => {
  if (text === undefined) return "the encoded value is not JSON (undefined)"
  // JSON writes NaN and ±Infinity as null: the consumer would get null and dead-letter it.
  // Only a text containing `null` can hide one, so the walk is skipped on the usual path.
  if (!text.includes("null")) return undefined
  const path = nonFinitePath(encoded, "")
  if (path === undefined) return undefined
  return `${path === "" ? "the value" : path} is not a finite number (JSON cannot carry NaN or Infinity)`
}

/** @internal */
export const makeCodec = <A, I>(name: string, schema: Schema.Schema<A, I>): Codec<A> => {
  const encode = ParseResult.encodeEither(schema)
  const decode = ParseResult.decodeUnknownEither(schema)
  // A plain struct is checked by compiled code; anything else, and every failure, by Effect's parser.
  const plain = plainSchema.compile(schema.ast) ?? (() => plainSchema.invalid)
  // Plain branches, no callbacks: both run once per message.
  return {
    encode: (message) => {
      let value = plain(message)
      if (value === plainSchema.invalid) {
        const encoded = encode(message)
        if (Either.isLeft(encoded)) {
          return Either.left(new EncodeError({ topic: name, issue: formatIssue(encoded.left) }))
        }
        value = encoded.right
      }
      const text = JSON.stringify(value)
      const issue = encodeIssue(value, text)
      if (issue !== undefined || text === undefined) {
        return Either.left(new EncodeError({ topic: name, issue: issue ?? "the encoded value is not JSON" }))
      }
      return Either.right(Buffer.from(text, "utf8"))
    },
    decode: (body, messageId, routingKey) => {
      let json: unknown
      try {
        json = JSON.parse(toBuffer(body).toString("utf8"))
      } catch (error) {
        return Either.left(
          new DecodeError({
            topic: routingKey,
            messageId,
            issue: `not JSON: ${error instanceof Error ? error.message : String(error)}`
          })
        )
      }
      // Sound: `plain` answers only for a value the parser would decode to the same A.
      const value = plain(json) as A | typeof plainSchema.invalid
      if (value !== plainSchema.invalid) return Either.right(value)
      const decoded = decode(json)
      return Either.isRight(decoded)
        ? Either.right(decoded.right)
        : Either.left(new DecodeError({ topic: routingKey, messageId, issue: formatIssue(decoded.left) }))
    }
  }
}

/** @internal */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("200 millis").pipe(
  Schedule.intersect(Schedule.recurs(5))
)

/** @internal */
export type Prepare = (
  traceparent: string | undefined,
  now: number
) => Either.Either<BrokerTransport.TransportMessage, EncodeError | InvalidName | InvalidOptions>

const invalidOption = (field: string, value: unknown, reason: string) =>
  Either.left(checks.invalid("Broker", field, value, reason))

const optionalMillis = (
  input: Duration.DurationInput | undefined,
  name: string
): Either.Either<number | undefined, InvalidOptions> => {
  if (input === undefined) return Either.right(undefined)
  const checked = checks.duration("Broker", name, input, { fallback: Duration.zero })
  return Either.isLeft(checked) ? Either.left(checked.left) : Either.right(Math.round(Duration.toMillis(checked.right)))
}

const noProperties: Either.Either<
  { delay: number | undefined; expiration: number | undefined },
  InvalidName | InvalidOptions
> = Either.right({
  delay: undefined,
  expiration: undefined
})

// Plain branches rather than Either.gen: this runs once per published message (hot path).
const validateProperties = (
  options: Broker.PublishOptions | undefined
): Either.Either<{ delay: number | undefined; expiration: number | undefined }, InvalidName | InvalidOptions> => {
  if (options === undefined) return noProperties
  if (options.headers !== undefined) {
    const checked = names.validateHeaders(options.headers)
    if (Either.isLeft(checked)) return Either.left(checked.left)
  }
  if (options.metadata !== undefined) {
    const checked = names.validateMetadata(options.metadata)
    if (Either.isLeft(checked)) return Either.left(checked.left)
  }
  const priority = options.priority
  if (priority !== undefined && (!Number.isInteger(priority) || priority < 0 || priority > 255)) {
    return invalidOption("priority", priority, "must be an integer from 0 to 255")
  }
  const id = options.messageId
  if (id !== undefined && (id.length === 0 || Buffer.byteLength(id) > 255)) {
    return invalidOption("messageId", id, "must be 1-255 bytes")
  }
  if (options.delay === undefined && options.expiration === undefined) return noProperties
  const delay = optionalMillis(options.delay, "delay")
  if (Either.isLeft(delay)) return Either.left(delay.left)
  const expiration = optionalMillis(options.expiration, "expiration")
  if (Either.isLeft(expiration)) return Either.left(expiration.left)
  if (expiration.right === 0) return invalidOption("expiration", options.expiration, "must be positive")
  return Either.right({ delay: delay.right === 0 ? undefined : delay.right, expiration: expiration.right })
}

const withTraceparent = (
  metadata: Readonly<Record<string, string>> | undefined,
  traceparent: string | undefined
): Readonly<Record<string, string>> => {
  if (traceparent === undefined) return metadata ?? wire.noHeaders
  return metadata === undefined
    ? { [wire.headers.traceparent]: traceparent }
    : { ...metadata, [wire.headers.traceparent]: traceparent }
}

/** @internal */
export const prepare =
  <A, I>(topic: Broker.Topic<A, I>, message: A, options: Broker.PublishOptions | undefined): Prepare =>
  (traceparent, now) => {
    const properties = validateProperties(options)
    if (Either.isLeft(properties)) return Either.left(properties.left)
    const body = topic.codec.encode(message)
    if (Either.isLeft(body)) return Either.left(body.left)
    return Either.right({
      routingKey: topic.name,
      body: body.right,
      headers: options?.headers ?? wire.noHeaders,
      metadata: withTraceparent(options?.metadata, traceparent),
      messageId: options?.messageId ?? messageId.make(now),
      correlationId: options?.correlationId,
      publishedAt: now,
      priority: options?.priority,
      expiration: properties.right.expiration,
      delay: properties.right.delay,
      persistent: options?.persistent ?? true
    })
  }

const prepareEncoded = (
  entry: Broker.EncodedEntry,
  traceparent: string | undefined,
  now: number
): Either.Either<BrokerTransport.TransportMessage, InvalidName> => {
  const topic = names.validateTopic(entry.topic)
  if (Either.isLeft(topic)) return Either.left(topic.left)
  if (entry.headers !== undefined) {
    const checked = names.validateHeaders(entry.headers)
    if (Either.isLeft(checked)) return Either.left(checked.left)
  }
  return Either.right({
    routingKey: entry.topic,
    body: typeof entry.body === "string" ? Buffer.from(entry.body, "utf8") : entry.body,
    headers: entry.headers ?? wire.noHeaders,
    metadata: withTraceparent(undefined, entry.traceparent === null ? undefined : entry.traceparent ?? traceparent),
    messageId: entry.messageId,
    correlationId: entry.correlationId,
    publishedAt: entry.publishedAt ?? now,
    priority: undefined,
    expiration: undefined,
    delay: undefined,
    persistent: true
  })
}

const maxReasonLength = 4000

/** A readable, bounded reason for dead-letter headers. */
const describeFailure = (error: unknown): string => {
  let text: string
  if (Predicate.hasProperty(error, "_tag") && error instanceof Error) text = `${String(error._tag)}: ${error.message}`
  else if (error instanceof Error) text = error.message
  else text = typeof error === "string" ? error : JSON.stringify(error) ?? String(error)
  return text.length > maxReasonLength ? `${text.slice(0, maxReasonLength)}…` : text
}

/**
 * The rejection for a body over `maxBytes`, or undefined. The front checks before any transport
 * call; transports repeat it because a 406 from RabbitMQ would close a shared channel.
 *
 * @internal
 */
export const oversize = (message: BrokerTransport.TransportMessage, maxBytes: number): PublishRejected | undefined =>
  message.body.byteLength <= maxBytes ? undefined : new PublishRejected({
    topic: message.routingKey,
    messageId: message.messageId,
    reason: "too-large",
    ambiguous: false,
    detail: `body of ${message.body.byteLength} bytes exceeds the maximum of ${maxBytes}; nothing was sent`
  })

const maxPack = 10_000
const maxWindow = 1_000_000

/** @internal */
export const mapBatch = <E>(
  batch: BrokerTransport.TransportBatch,
  publish: (message: BrokerTransport.TransportMessage) => Either.Either<void, E>
): Array<Either.Either<void, E>> => {
  const results = new Array<Either.Either<void, E>>(batch.size)
  for (let i = 0; i < batch.size; i++) {
    const message = batch.prepare(i)
    results[i] = message === undefined ? Either.void : publish(message)
  }
  return results
}

/** The outcome of a hole in a sparse array of entries. */
const missing = Either.left(checks.invalid("Broker", "entries", undefined, "no entry at this position of the batch"))

/**
 * The reason a prepared message cannot go through this transport: an option it cannot honour,
 * or a body over its maximum. Checked before any transport call.
 */
const refusal = (
  message: BrokerTransport.TransportMessage,
  capabilities: BrokerTransport.Capabilities
): Unsupported | PublishRejected | undefined => {
  if (message.delay !== undefined && !capabilities.delay) {
    return new Unsupported({ transport: capabilities.name, feature: "delay", detail: "publish without `delay`" })
  }
  if (message.priority !== undefined && !capabilities.priority) {
    return new Unsupported({ transport: capabilities.name, feature: "priority", detail: "publish without `priority`" })
  }
  if (message.expiration !== undefined && !capabilities.expiration) {
    return new Unsupported({
      transport: capabilities.name,
      feature: "expiration",
      detail: "publish without `expiration`"
    })
  }
  return oversize(message, capabilities.maxMessageBytes)
}

/** @internal */
export const make = (transport: BrokerTransport.Transport): Broker.Service => {
  const capabilities = transport.capabilities

  const publishWith = <A, I>(
    topic: Broker.Topic<A, I>,
    message: A,
    options: Broker.PublishOptions | undefined,
    traceparent: string | undefined
  ): Effect.Effect<void, Broker.PublishError> =>
    Effect.clockWith((clock): Effect.Effect<void, Broker.PublishError> => {
      const prepared = prepare(topic, message, options)(traceparent, clock.unsafeCurrentTimeMillis())
      if (Either.isLeft(prepared)) return Effect.fail(prepared.left)
      const refused = refusal(prepared.right, capabilities)
      if (refused !== undefined) return Effect.fail(refused)
      return transport.publish(prepared.right)
    })

  /** OpenTelemetry messaging attributes of an operation on `routingKey`, and the span name. */
  const messaging = (operation: "send" | "process", routingKey: string) => {
    const destination = capabilities.destination?.(routingKey) ?? { name: routingKey, attributes: {} }
    return {
      name: `${operation} ${destination.name}`,
      attributes: {
        "messaging.system": capabilities.name,
        "messaging.operation.name": operation,
        "messaging.operation.type": operation,
        "messaging.destination.name": destination.name,
        ...destination.attributes
      }
    }
  }

  const publish = <A, I>(topic: Broker.Topic<A, I>, message: A, options?: Broker.PublishOptions) =>
    withTraceContext(() => {
      const { attributes, name } = messaging("send", topic.name)
      return [name, { kind: "producer", captureStackTrace: false, attributes }]
    }, (traceparent) => publishWith(topic, message, options, traceparent))

  /** Publishes `size` entries, each prepared only when the transport reaches it. */
  const publishBatch = (
    size: number,
    prepareAt: (index: number) => Either.Either<BrokerTransport.TransportMessage, Broker.PublishError>,
    options: Broker.PublishAllOptions | undefined
  ): Effect.Effect<ReadonlyArray<Either.Either<void, Broker.PublishError>>> =>
    Effect.suspend(() => {
      const checked = Either.all({
        pack: checks.integer("Broker", "pack", options?.pack, { min: 1, max: maxPack, fallback: 1 }),
        window: checks.integer("Broker", "window", options?.window, { min: 1, max: maxWindow, fallback: 1000 })
      })
      if (Either.isLeft(checked)) {
        const invalid = checked.left
        return Effect.succeed(Array.from({ length: size }, () => Either.left(invalid)))
      }
      const { pack, window } = checked.right
      if (size === 0) return Effect.succeed([])
      // Entries that cannot be published: their outcome is known here, the transport skips them.
      const failed = new Map<number, Broker.PublishError>()
      const batch: BrokerTransport.TransportBatch = {
        size,
        prepare: (index) => {
          const prepared = prepareAt(index)
          if (Either.isRight(prepared)) return prepared.right
          failed.set(index, prepared.left)
          return undefined
        }
      }
      return Effect.map(transport.publishAll(batch, window, pack), (sent) => {
        if (failed.size === 0 && sent.length === size) return sent
        const results = new Array<Either.Either<void, Broker.PublishError>>(size)
        for (let i = 0; i < size; i++) {
          const error = failed.get(i)
          results[i] = error !== undefined ? Either.left(error) : sent[i] ?? Either.void
        }
        return results
      })
    })

  const admit = (
    item: Either.Either<BrokerTransport.TransportMessage, Broker.PublishError>
  ): Either.Either<BrokerTransport.TransportMessage, Broker.PublishError> => {
    if (Either.isLeft(item)) return item
    const refused = refusal(item.right, capabilities)
    return refused === undefined ? item : Either.left(refused)
  }

  // A batch may go to many destinations: the conventions name it after the operation alone.
  const withBatchSpan = withSpanWhenTraced("send", {
    kind: "producer",
    captureStackTrace: false,
    attributes: {
      "messaging.system": capabilities.name,
      "messaging.operation.name": "send",
      "messaging.operation.type": "send"
    }
  })

  const publishAll: Broker.Service["publishAll"] = (entries, options) =>
    Effect.gen(function*() {
      const traceparent = yield* currentTraceparent
      const now = yield* Clock.currentTimeMillis
      const list: ReadonlyArray<Broker.PublishEntry> = Array.isArray(entries) ? entries : Array.from(entries)
      return yield* publishBatch(list.length, (i) => admit(list[i]?.prepare(traceparent, now) ?? missing), options)
    }).pipe(withBatchSpan)

  const publishAllEncoded: Broker.Service["publishAllEncoded"] = (entries, options) =>
    Effect.gen(function*() {
      const traceparent = yield* currentTraceparent
      const now = yield* Clock.currentTimeMillis
      return yield* publishBatch(entries.length, (i) => {
        const entry = entries[i]
        return entry === undefined ? missing : admit(prepareEncoded(entry, traceparent, now))
      }, options)
    }).pipe(withBatchSpan)

  /** Refuses a subscription the transport cannot honour: a wildcard pattern, a priority queue. */
  const supports = <A, I>(
    topic: Broker.Subscribable<A, I>,
    maxPriority: number | undefined
  ): Effect.Effect<void, Unsupported> => {
    if (!capabilities.wildcards && names.hasWildcard(topic.name)) {
      return Effect.fail(
        new Unsupported({
          transport: capabilities.name,
          feature: "wildcards",
          detail: `subscribe to concrete topics, not "${topic.name}"`
        })
      )
    }
    if (maxPriority !== undefined && !capabilities.priority) {
      return Effect.fail(
        new Unsupported({
          transport: capabilities.name,
          feature: "priority",
          detail: "subscribe without `maxPriority`"
        })
      )
    }
    return Effect.void
  }

  const subscribe = <A, I, E, R>(
    topic: Broker.Subscribable<A, I>,
    handler: Broker.Handler<A, E, R>,
    options: Broker.SubscribeOptions<E>
  ) =>
    Effect.gen(function*() {
      yield* names.validateGroup(options.group)
      const concurrency = yield* checks.integer("Broker", "concurrency", options.concurrency, {
        min: 1,
        max: 65535,
        fallback: 10
      })
      const prefetch = yield* checks.integer("Broker", "prefetch", options.prefetch, {
        min: concurrency,
        max: 65535,
        fallback: concurrency
      })
      const maxPriority = yield* checks.optionalInteger("Broker", "maxPriority", options.maxPriority, {
        min: 1,
        max: 255
      })
      yield* supports(topic, maxPriority)
      const retry: Schedule.Schedule<unknown, E | HandlerDefect> = options.retry ?? defaultRetry
      const context = yield* Effect.context<R>()
      // The transport runs deliveries under the tracer of the fiber that subscribes.
      const builtIn = (yield* Effect.tracer) === builtInTracer

      const onFailure = options.onFailure
      const failureOf = (cause: Cause.Cause<E>): E | HandlerDefect => {
        const failure = Cause.failureOrCause(cause)
        return Either.isLeft(failure)
          ? failure.left
          : new HandlerDefect({ detail: Cause.pretty(failure.right).slice(0, maxReasonLength) })
      }
      const retryOrDeadLetter = (error: E | HandlerDefect, envelope: Broker.Envelope) =>
        Effect.flatMap(
          nextRetryDelay(retry, envelope.attempt, error),
          (delay): Effect.Effect<BrokerTransport.Disposition> => {
            const reason = describeFailure(error)
            const disposition: BrokerTransport.Disposition = Option.isSome(delay)
              ? { _tag: "Retry", delay: Duration.toMillis(delay.value), reason }
              : { _tag: "DeadLetter", reason: `attempt ${envelope.attempt} failed, retries exhausted: ${reason}` }
            if (onFailure === undefined) return Effect.succeed(disposition)
            return onFailure({ error, envelope, retryIn: delay }).pipe(
              Effect.catchAllCause((cause) =>
                Effect.logWarning("onFailure of a subscription failed; the decision stands", cause)
              ),
              Effect.as(disposition)
            )
          }
        )

      const handle = (delivery: BrokerTransport.TransportDelivery): Effect.Effect<BrokerTransport.Disposition> => {
        const received = delivery.message
        const decoded = topic.codec.decode(received.body, received.messageId, received.routingKey)
        if (Either.isLeft(decoded)) {
          return Effect.logWarning("poison message dead-lettered").pipe(
            Effect.annotateLogs({ topic: received.routingKey, messageId: received.messageId, group: options.group }),
            Effect.as<BrokerTransport.Disposition>({ _tag: "DeadLetter", reason: decoded.left.message })
          )
        }
        const traceparent = received.metadata[headers.traceparent]
        const envelope: Broker.Envelope = {
          id: received.messageId,
          topic: received.routingKey,
          headers: received.headers,
          typedHeaders: received.typedHeaders ?? wire.noTypedHeaders,
          metadata: received.metadata,
          attempt: delivery.attempt,
          redelivered: delivery.redelivered,
          publishedAt: received.publishedAt === undefined ? undefined : new Date(received.publishedAt),
          correlationId: received.correlationId,
          traceparent
        }
        const run = handler(decoded.right, envelope)
        let traced = run
        if (!builtIn) {
          const span = messaging("process", received.routingKey)
          traced = Effect.withSpan(run, span.name, {
            kind: "consumer",
            captureStackTrace: false,
            attributes: {
              ...span.attributes,
              "messaging.consumer.group.name": options.group,
              "messaging.message.id": received.messageId,
              "effect_background.attempt": delivery.attempt
            }
          })
        }
        return isolation.run(
          traced,
          context,
          spanOfTraceparent(traceparent),
          (cause) => retryOrDeadLetter(failureOf(cause), envelope)
        )
      }

      yield* transport.consume(
        { pattern: topic.name, group: options.group, concurrency, prefetch, maxPriority },
        handle
      )
    })

  const declare = <A, I>(topic: Broker.Subscribable<A, I>, options: Broker.DeclareOptions) =>
    Effect.gen(function*() {
      yield* names.validateGroup(options.group)
      const maxPriority = yield* checks.optionalInteger("Broker", "maxPriority", options.maxPriority, {
        min: 1,
        max: 255
      })
      yield* supports(topic, maxPriority)
      if (transport.declare === undefined) return
      yield* transport.declare({ pattern: topic.name, group: options.group, concurrency: 1, prefetch: 1, maxPriority })
    })

  const redrive: Broker.Service["redrive"] = (group, options) =>
    Effect.gen(function*() {
      yield* names.validateGroup(group)
      const max = yield* checks.integer("Broker", "max", options?.max, { min: 1, fallback: Number.MAX_SAFE_INTEGER })
      if (!capabilities.redrive || transport.redrive === undefined) {
        return yield* new Unsupported({
          transport: capabilities.name,
          feature: "redrive",
          detail: "dead letters cannot be moved back"
        })
      }
      return yield* transport.redrive(group, max)
    })

  return {
    [TypeId]: TypeId,
    publish,
    publishAll,
    publishAllEncoded,
    subscribe,
    declare,
    redrive,
    health: transport.health,
    capabilities
  }
}
