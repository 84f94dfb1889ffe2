import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Predicate from "effect/Predicate"
import * as Schedule from "effect/Schedule"
import type * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import type * as Broker from "../Broker.js"
import { BrokerUnavailable, DecodeError, EncodeError, HandlerDefect, InvalidName, PublishRejected } from "../BrokerError.js"
import type { InvalidOptions } from "../InvalidOptions.js"
import * as fiberLocal from "./fiberLocal.js"
import * as messageId from "./messageId.js"
import * as names from "./names.js"
import * as checks from "./options.js"
import { nextRetryDelay } from "./retry.js"
import { builtInTracer, currentTraceparent, withSpanWhenTraced, withTraceContext } from "./tracing.js"

/** @internal */
export const TypeId: Broker.TypeId = Symbol.for("effect-background/Broker") as Broker.TypeId

/** @internal */
export const headers = {
  attempt: "x-eb-attempt",
  traceparent: "traceparent",
  deadReason: "x-eb-dead-reason",
  lastError: "x-eb-last-error",
  group: "x-eb-group"
} as const

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

/** @internal */
export const makeCodec = <A, I>(name: string, schema: Schema.Schema<A, I>): Codec<A> => {
  const encode = ParseResult.encodeEither(schema)
  const decode = ParseResult.decodeUnknownEither(schema)
  return {
    encode: (message) =>
      Either.match(encode(message), {
        onLeft: (error) => Either.left(new EncodeError({ topic: name, issue: formatIssue(error) })),
        onRight: (encoded) => {
          const text = JSON.stringify(encoded)
          if (text === undefined) return Either.left(new EncodeError({ topic: name, issue: "the encoded value is not JSON (undefined)" }))
          // JSON writes NaN and ±Infinity as null: the consumer would get null and dead-letter it.
          // Only a text containing `null` can hide one, so the walk is skipped on the usual path.
          if (text.includes("null")) {
            const path = nonFinitePath(encoded, "")
            if (path !== undefined) {
              return Either.left(new EncodeError({ topic: name, issue: `${path === "" ? "the value" : path} is not a finite number (JSON cannot carry NaN or Infinity)` }))
            }
          }
          return Either.right(Buffer.from(text, "utf8"))
        }
      }),
    decode: (body, messageId, routingKey) => {
      let json: unknown
      try {
        json = JSON.parse(toBuffer(body).toString("utf8"))
      } catch (error) {
        return Either.left(
          new DecodeError({ topic: routingKey, messageId, issue: `not JSON: ${error instanceof Error ? error.message : String(error)}` })
        )
      }
      return Either.mapLeft(decode(json), (error) => new DecodeError({ topic: routingKey, messageId, issue: formatIssue(error) }))
    }
  }
}

/** @internal */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("200 millis").pipe(
  Schedule.intersect(Schedule.recurs(5))
)

/** Parses a W3C traceparent into a parent span; None when malformed. */
const parentSpanOf = (traceparent: string | undefined): Tracer.ExternalSpan | undefined => {
  if (traceparent === undefined) return undefined
  const parts = traceparent.split("-")
  const [version, traceId, spanId, flags] = parts
  if (parts.length < 4 || version === undefined || traceId?.length !== 32 || spanId?.length !== 16 || flags === undefined) {
    return undefined
  }
  return Tracer.externalSpan({ traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1 })
}

/** @internal */
export type Prepare = (traceparent: string | undefined, now: number) => Either.Either<Broker.TransportMessage, EncodeError | InvalidName | InvalidOptions>

const invalidOption = (field: string, value: unknown, reason: string) => Either.left(checks.invalid("Broker", field, value, reason))

const optionalMillis = (input: Duration.DurationInput | undefined, name: string): Either.Either<number | undefined, InvalidOptions> => {
  if (input === undefined) return Either.right(undefined)
  const duration = Duration.decodeUnknown(input)
  if (Option.isNone(duration)) return invalidOption(name, input, "is not a duration")
  const millis = Duration.toMillis(duration.value)
  if (!Number.isFinite(millis) || millis < 0) return invalidOption(name, input, "must be a finite, non-negative duration")
  return Either.right(Math.round(millis))
}

const noProperties: Either.Either<{ delay: number | undefined; expiration: number | undefined }, InvalidName | InvalidOptions> = Either.right({
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

/** The header table of a message without headers, shared. @internal */
export const noHeaders: Readonly<Record<string, string>> = Object.freeze({})

/** Whether a header table has an entry, without listing its keys. @internal */
export const hasHeaders = (table: Readonly<Record<string, string>>): boolean => {
  for (const _ in table) return true
  return false
}

const withTraceparent = (
  userHeaders: Readonly<Record<string, string>> | undefined,
  traceparent: string | undefined
): Readonly<Record<string, string>> => {
  if (traceparent === undefined) return userHeaders ?? noHeaders
  return { ...userHeaders, [headers.traceparent]: traceparent }
}

/** @internal */
export const prepare = <A, I>(topic: Broker.Topic<A, I>, message: A, options: Broker.PublishOptions | undefined): Prepare =>
(traceparent, now) => {
  const properties = validateProperties(options)
  if (Either.isLeft(properties)) return Either.left(properties.left)
  const body = topic.codec.encode(message)
  if (Either.isLeft(body)) return Either.left(body.left)
  return Either.right({
    routingKey: topic.name,
    body: body.right,
    headers: withTraceparent(options?.headers, traceparent),
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
): Either.Either<Broker.TransportMessage, InvalidName> => {
  const topic = names.validateTopic(entry.topic)
  if (Either.isLeft(topic)) return Either.left(topic.left)
  if (entry.headers !== undefined) {
    const checked = names.validateHeaders(entry.headers)
    if (Either.isLeft(checked)) return Either.left(checked.left)
  }
  return Either.right({
    routingKey: entry.topic,
    body: typeof entry.body === "string" ? Buffer.from(entry.body, "utf8") : entry.body,
    headers: withTraceparent(entry.headers, entry.traceparent === null ? undefined : entry.traceparent ?? traceparent),
    messageId: entry.messageId,
    correlationId: entry.correlationId,
    publishedAt: entry.publishedAt ?? now,
    priority: undefined,
    expiration: undefined,
    delay: undefined,
    persistent: true
  })
}

const userHeadersOf = (wire: Readonly<Record<string, string>>): Readonly<Record<string, string>> => {
  let result: Record<string, string> | undefined
  for (const key in wire) {
    if (key === headers.traceparent || key.startsWith("x-eb-") || key.startsWith("x-death")) continue
    const value = wire[key]
    if (value !== undefined) (result ??= {})[key] = value
  }
  return result ?? noHeaders
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

const ack: Effect.Effect<Broker.Disposition> = Effect.succeed({ _tag: "Ack" })

/**
 * `effect` run with the subscriber's `context`, and `parent` as its parent span when the message
 * carried one: nothing to do when the transport's fiber already runs in `context`.
 */
const provideDelivery = <A, R>(
  effect: Effect.Effect<A, never, R>,
  context: Context.Context<R>,
  parent: Tracer.AnySpan | undefined
): Effect.Effect<A> =>
  Effect.withFiberRuntime((fiber) => {
    if (parent === undefined && fiber.getFiberRef(FiberRef.currentContext) === context) {
      // Sound: the fiber's context is `context`.
      return effect as Effect.Effect<A>
    }
    return fiberLocal.provideContext(effect, parent === undefined ? context : Context.add(context, Tracer.ParentSpan, parent))
  })

/**
 * The rejection for a body over `maxBytes`, or undefined. The front checks before any transport
 * call; transports repeat it because a 406 from RabbitMQ would close a shared channel.
 *
 * @internal
 */
export const oversize = (message: Broker.TransportMessage, maxBytes: number): PublishRejected | undefined =>
  message.body.byteLength <= maxBytes ? undefined : new PublishRejected({
    topic: message.routingKey,
    messageId: message.messageId,
    reason: "too-large",
    ambiguous: false,
    detail: `body of ${message.body.byteLength} bytes exceeds the maximum of ${maxBytes}; nothing was sent`
  })

const maxPack = 10_000

/** @internal */
export const mapBatch = <E>(
  batch: Broker.TransportBatch,
  publish: (message: Broker.TransportMessage) => Either.Either<void, E>
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

/** @internal */
export const make = (transport: Broker.Transport): Broker.Service => {

  const publishWith = <A, I>(
    topic: Broker.Topic<A, I>,
    message: A,
    options: Broker.PublishOptions | undefined,
    traceparent: string | undefined
  ): Effect.Effect<void, Broker.PublishError> =>
    Effect.clockWith((clock): Effect.Effect<void, Broker.PublishError> => {
      const prepared = prepare(topic, message, options)(traceparent, clock.unsafeCurrentTimeMillis())
      if (Either.isLeft(prepared)) return Effect.fail(prepared.left)
      const rejected = oversize(prepared.right, transport.maxMessageBytes)
      if (rejected !== undefined) return Effect.fail(rejected)
      return transport.publish(prepared.right)
    })

  const publish = <A, I>(topic: Broker.Topic<A, I>, message: A, options?: Broker.PublishOptions) =>
    withTraceContext("broker.publish", {
      kind: "producer",
      captureStackTrace: false,
      attributes: { "messaging.destination.name": topic.name, "messaging.operation.type": "send" }
    }, (traceparent) => publishWith(topic, message, options, traceparent))

  /** Publishes `size` entries, each prepared only when the transport reaches it. */
  const publishBatch = (
    size: number,
    prepareAt: (index: number) => Either.Either<Broker.TransportMessage, Broker.PublishError>,
    options: Broker.PublishAllOptions | undefined
  ): Effect.Effect<ReadonlyArray<Either.Either<void, Broker.PublishError>>> =>
    Effect.suspend(() => {
      const pack = options?.pack ?? 1
      if (!Number.isInteger(pack) || pack < 1 || pack > maxPack) {
        const invalid = checks.invalid("Broker", "pack", pack, `must be an integer from 1 to ${maxPack}`)
        return Effect.succeed(Array.from({ length: size }, () => Either.left(invalid)))
      }
      if (size === 0) return Effect.succeed([])
      // Entries that cannot be published: their outcome is known here, the transport skips them.
      const failed = new Map<number, Broker.PublishError>()
      const batch: Broker.TransportBatch = {
        size,
        prepare: (index) => {
          const prepared = prepareAt(index)
          if (Either.isRight(prepared)) return prepared.right
          failed.set(index, prepared.left)
          return undefined
        }
      }
      const window = Math.max(1, options?.window ?? 1000)
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

  const checkSize = (
    item: Either.Either<Broker.TransportMessage, Broker.PublishError>
  ): Either.Either<Broker.TransportMessage, Broker.PublishError> => {
    if (Either.isLeft(item)) return item
    const rejected = oversize(item.right, transport.maxMessageBytes)
    return rejected === undefined ? item : Either.left(rejected)
  }

  const withBatchSpan = withSpanWhenTraced("broker.publishAll", { kind: "producer", captureStackTrace: false })

  const publishAll: Broker.Service["publishAll"] = (entries, options) =>
    Effect.gen(function*() {
      const traceparent = yield* currentTraceparent
      const now = yield* Clock.currentTimeMillis
      const list: ReadonlyArray<Broker.PublishEntry> = Array.isArray(entries) ? entries : Array.from(entries)
      return yield* publishBatch(list.length, (i) => checkSize(list[i]?.prepare(traceparent, now) ?? missing), options)
    }).pipe(withBatchSpan)

  const publishAllEncoded: Broker.Service["publishAllEncoded"] = (entries, options) =>
    Effect.gen(function*() {
      const traceparent = yield* currentTraceparent
      const now = yield* Clock.currentTimeMillis
      return yield* publishBatch(entries.length, (i) => {
        const entry = entries[i]
        return entry === undefined ? missing : checkSize(prepareEncoded(entry, traceparent, now))
      }, options)
    }).pipe(withBatchSpan)

  const subscribe = <A, I, E, R>(
    topic: Broker.Subscribable<A, I>,
    handler: Broker.Handler<A, E, R>,
    options: Broker.SubscribeOptions<E>
  ) =>
    Effect.gen(function*() {
      yield* names.validateGroup(options.group)
      const concurrency = yield* checks.integer("Broker", "concurrency", options.concurrency, { min: 1, max: 65535, fallback: 10 })
      const prefetch = yield* checks.integer("Broker", "prefetch", options.prefetch, { min: concurrency, max: 65535, fallback: concurrency })
      const maxPriority = yield* checks.optionalInteger("Broker", "maxPriority", options.maxPriority, { min: 1, max: 255 })
      const retry: Schedule.Schedule<unknown, E | HandlerDefect> = options.retry ?? defaultRetry
      const context = yield* Effect.context<R>()
      // The transport runs deliveries under the tracer of the fiber that subscribes.
      const builtIn = (yield* Effect.tracer) === builtInTracer

      const onFailure = options.onFailure
      const retryOrDeadLetter = (error: E | HandlerDefect, envelope: Broker.Envelope) =>
        Effect.flatMap(nextRetryDelay(retry, envelope.attempt, error), (delay): Effect.Effect<Broker.Disposition> => {
          const reason = describeFailure(error)
          const disposition: Broker.Disposition = Option.isSome(delay)
            ? { _tag: "Retry", delay: Duration.toMillis(delay.value), reason }
            : { _tag: "DeadLetter", reason: `attempt ${envelope.attempt} failed, retries exhausted: ${reason}` }
          if (onFailure === undefined) return Effect.succeed(disposition)
          return onFailure({ error, envelope, retryIn: delay }).pipe(
            Effect.catchAllCause((cause) => Effect.logWarning("onFailure of a subscription failed; the decision stands", cause)),
            Effect.as(disposition)
          )
        })

      const handle = (delivery: Broker.TransportDelivery): Effect.Effect<Broker.Disposition> => {
        const wire = delivery.message
        const decoded = topic.codec.decode(wire.body, wire.messageId, wire.routingKey)
        if (Either.isLeft(decoded)) {
          return Effect.logWarning("poison message dead-lettered").pipe(
            Effect.annotateLogs({ topic: wire.routingKey, messageId: wire.messageId, group: options.group }),
            Effect.as<Broker.Disposition>({ _tag: "DeadLetter", reason: decoded.left.message })
          )
        }
        const traceparent = wire.headers[headers.traceparent]
        const envelope: Broker.Envelope = {
          id: wire.messageId,
          topic: wire.routingKey,
          headers: userHeadersOf(wire.headers),
          attempt: delivery.attempt,
          redelivered: delivery.redelivered,
          publishedAt: new Date(wire.publishedAt),
          correlationId: wire.correlationId,
          traceparent
        }
        const run = handler(decoded.right, envelope)
        const traced = builtIn ? run : Effect.withSpan(run, "broker.process", {
          kind: "consumer",
          captureStackTrace: false,
          attributes: {
            "messaging.destination.name": wire.routingKey,
            "messaging.consumer.group.name": options.group,
            "messaging.message.id": wire.messageId,
            "messaging.operation.type": "process",
            "effect_background.attempt": delivery.attempt
          }
        })
        const settled = Effect.matchCauseEffect(traced, {
          onSuccess: () => ack,
          onFailure: (cause) => {
            const failure = Cause.failureOrCause(cause)
            const error: E | HandlerDefect = Either.isLeft(failure)
              ? failure.left
              : new HandlerDefect({ detail: Cause.pretty(failure.right).slice(0, maxReasonLength) })
            return retryOrDeadLetter(error, envelope)
          }
        })
        return provideDelivery(settled, context, parentSpanOf(traceparent))
      }

      yield* transport.consume(
        { pattern: topic.name, group: options.group, concurrency, prefetch, maxPriority },
        handle
      )
    })

  const declare = <A, I>(topic: Broker.Subscribable<A, I>, options: Broker.DeclareOptions) =>
    Effect.gen(function*() {
      yield* names.validateGroup(options.group)
      const maxPriority = yield* checks.optionalInteger("Broker", "maxPriority", options.maxPriority, { min: 1, max: 255 })
      if (transport.declare === undefined) return
      yield* transport.declare({ pattern: topic.name, group: options.group, concurrency: 1, prefetch: 1, maxPriority })
    })

  const redrive: Broker.Service["redrive"] = (group, options) =>
    Effect.gen(function*() {
      yield* names.validateGroup(group)
      const max = yield* checks.integer("Broker", "max", options?.max, { min: 1, fallback: Number.MAX_SAFE_INTEGER })
      if (transport.redrive === undefined) {
        return yield* new BrokerUnavailable({ reason: "closed", detail: "this broker's transport cannot redrive dead letters" })
      }
      return yield* transport.redrive(group, max)
    })

  return { [TypeId]: TypeId, publish, publishAll, publishAllEncoded, subscribe, declare, redrive, health: transport.health }
}
