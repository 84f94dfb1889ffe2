/**
 * The consumer kernel: one subscription's deliveries, run as one fiber each and settled from the
 * fiber's observer (no extra Effect steps per message), because it is the hot path of every
 * consume. What it guarantees for one `consume` call (a subscription):
 *
 * - Channel: one channel per attachment, `basic.qos(prefetch)` per consumer, manual
 *   acknowledgement, a channel `error` listener always attached.
 * - Prefetch: RabbitMQ hands at most `prefetch` unacknowledged AMQP messages to the channel. A
 *   packed carrier is one of them, so up to `prefetch` × its member count messages can be held
 *   in the process.
 * - Concurrency: at most `concurrency` handler fibers of the subscription run at once, across
 *   re-attachments (handlers still running from a lost channel count). Deliveries beyond it wait,
 *   unacknowledged, in arrival order. The republish of a Retry or DeadLetter runs after the
 *   handler's slot is freed and is not counted.
 * - Settled at most once, exactly once while the channel is open: each delivery is acked or
 *   nacked once (a second settle of a tag would close the channel). `Ack` → ack. `Retry` /
 *   `DeadLetter` → the copy (retry queue or dead-letter queue, with the library headers) is
 *   published and confirmed first, then the original is acked; if the copy fails, the original
 *   is nacked (requeued) after a pause, so a message may be duplicated, never lost. `handle`
 *   interrupted (shutdown) or failed → nack with requeue. A delivery of a channel that has closed
 *   is neither settled nor, if still waiting, started: RabbitMQ redelivers it.
 * - Acks (see `acker.ts`): coalesced per microtask into one `multiple` ack for the contiguous run
 *   of settled tags from the lowest unsettled one, acks above a gap sent singly at once, nacks sent
 *   at once; a multiple ack never covers a tag this channel has not settled.
 * - Packs: each member of a packed carrier is a delivery of its own (own id, headers, attempt,
 *   retries, dead letter). The carrier is settled once, after its last member: acked when every
 *   member was acked, nacked whole (requeued) otherwise, so members already handled run again,
 *   redelivered, and a member already forwarded to a retry or dead-letter queue exists twice.
 * - Runs again only after a redelivery: a message handled to an end runs again only if one of
 *   its deliveries was a redelivery (`redelivered: true`) after a nack, a requeued pack or a lost
 *   channel; retries are new attempts (`attempt + 1`), not repeats.
 * - Shutdown (scope close): stop starting deliveries (one racing the cancel is nacked at once),
 *   nack the waiting ones, cancel the consumer, wait for in-flight handlers and republishes up to
 *   `shutdownTimeout`, interrupt the rest (their messages are nacked, requeued), flush the acks,
 *   close the channel. Cancel and wait run side by side, and the close gets what is left: the
 *   whole shutdown of a subscription is bounded by one `shutdownTimeout`, even on a connection
 *   that stopped answering; a handler in an uninterruptible region holds the close until that
 *   region ends.
 * - Re-attach: after a channel loss or a broker cancel (queue deleted), a supervisor re-attaches
 *   with backoff, forever, re-declaring the queue, until the scope closes.
 *
 * Checked by `test/broker/consumer.stress.test.ts` (seeded handler fates per message and attempt,
 * subscriptions closed and replaced, connection resets) and fault tests B2, B9, B10, P1.
 */
import type * as Amqp from "amqplib"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { randomUUID } from "node:crypto"
import type * as Broker from "../../Broker.js"
import { BrokerUnavailable, DeclareConflict } from "../../BrokerError.js"
import type * as BrokerTransport from "../../BrokerTransport.js"
import { Fifo } from "../fifo.js"
import * as MessageId from "../messageId.js"
import * as wire from "../wire.js"
import { Acker } from "./acker.js"
import { closeChannel } from "./closeChannel.js"
import type { Connection, Manager } from "./connection.js"
import type { Declarer } from "./declarer.js"
import * as headerValue from "./headerValue.js"
import * as packed from "./packed.js"
import type { OutMessage, Publisher } from "./publisher.js"
import * as topology from "./topology.js"

/** Carries the original routing key through retry and dead-letter queues. @internal */
export const routingKeyHeader = "x-eb-routing-key"
/**
 * Millisecond publish time, read when present. Publishes carry it in their UUIDv7 message id, or
 * else in AMQP's `timestamp` (whole seconds, as the spec says): a header table on every message
 * costs more than the precision is worth.
 *
 * @internal
 */
export const publishedAtHeader = "x-eb-published-at"

/**
 * The deadline (epoch ms) of a retry copy, or of a delayed message: its `expiration` counted
 * from the publish, or from the end of the delay. Not AMQP's own `expiration`: that would also
 * bound the wait in the retry or delay queue, and RabbitMQ removes it when the message comes
 * back. Checked when a delivery starts.
 *
 * @internal
 */
export const expiresAtHeader = "x-eb-expires-at"

/** The deadline header for a retry copy of `message`, unless it carries one already (copied on). */
const retryDeadline = (
  message: Amqp.Message,
  delivery: BrokerTransport.TransportDelivery
): Record<string, string> => {
  const expiration = delivery.message.expiration
  if (message.properties.headers?.[expiresAtHeader] !== undefined || expiration === undefined) return {}
  if (!Number.isFinite(expiration)) return {}
  return { [expiresAtHeader]: String((delivery.message.publishedAt ?? Date.now()) + expiration) }
}

/** Whether a delivery (a retry copy, or a delayed message) is past its deadline. */
const pastDeadline = (message: Amqp.Message): boolean => {
  const deadline: unknown = message.properties.headers?.[expiresAtHeader]
  return deadline !== undefined && Number(deadline) <= Date.now()
}

/** @internal */
export interface ConsumerDeps {
  readonly manager: Manager
  readonly publisher: Publisher
  readonly declarer: Declarer
  readonly names: topology.Names
  readonly queueType: topology.QueueType
  readonly shutdownTimeout: Duration.Duration
  readonly attachTimeout: Duration.Duration
  /** Attached consumers, for health. */
  readonly active: Set<object>
}

/**
 * Converts an amqplib delivery to the transport's shape: the one AMQP header table is split into
 * the caller's headers and the library's metadata (reserved names), RabbitMQ's `x-death`
 * bookkeeping dropped.
 *
 * @internal
 */
export const toDelivery = (message: Amqp.Message): BrokerTransport.TransportDelivery => {
  const table = message.properties.headers
  let user: Record<string, string> | undefined
  let library: Record<string, string> | undefined
  let typed: Record<string, Broker.HeaderValue> | undefined
  if (table !== undefined && table !== null) {
    for (const key in table) {
      const value: unknown = table[key]
      if (wire.isDeathHeader(key)) continue
      if (typeof value !== "string") (typed ??= {})[key] = headerValue.fromAmqp(value)
      else if (wire.isReservedHeader(key)) (library ??= {})[key] = value
      else (user ??= {})[key] = value
    }
  }
  const headers = user ?? wire.noHeaders
  const metadata = library ?? wire.noHeaders
  const routingKey = metadata[routingKeyHeader] ?? message.fields.routingKey
  const attempt = Number(metadata[wire.headers.attempt] ?? "1")
  const publishedAt = Number(metadata[publishedAtHeader])
  const timestamp: unknown = message.properties.timestamp
  const messageId: unknown = message.properties.messageId
  const correlationId: unknown = message.properties.correlationId
  const priority: unknown = message.properties.priority
  const expiration: unknown = message.properties.expiration
  return {
    message: {
      routingKey,
      body: message.content,
      headers,
      metadata,
      ...(typed === undefined ? {} : { typedHeaders: typed }),
      // A foreign message without an id gets a fresh one: its retry and dead-letter copies carry
      // it on (delivery tags restart per channel, so they cannot make an id). Random (v4), not a
      // UUIDv7: a receipt time in the id would read as the publish time on the copies.
      messageId: typeof messageId === "string" && messageId.length > 0 ? messageId : randomUUID(),
      correlationId: typeof correlationId === "string" ? correlationId : undefined,
      publishedAt: Number.isFinite(publishedAt)
        ? publishedAt
        : typeof timestamp === "number"
        ? timestamp * 1000
        // Not recorded by the producer (a foreign message without a timestamp): not invented.
        : typeof messageId === "string"
        ? MessageId.millisOf(messageId)
        : undefined,
      priority: typeof priority === "number" ? priority : undefined,
      expiration: expiration === undefined || expiration === null ? undefined : Number(expiration),
      delay: undefined,
      // AMQP's default delivery mode is 1 (transient).
      persistent: message.properties.deliveryMode === 2
    },
    attempt: Number.isInteger(attempt) && attempt >= 1 ? attempt : 1,
    redelivered: message.fields.redelivered
  }
}

const maxHeaderText = 2000

const bounded = (text: string) => (text.length > maxHeaderText ? `${text.slice(0, maxHeaderText)}…` : text)

/**
 * Publish options for a copy of `message` sent on through the default exchange (a retry, a dead
 * letter, a redriven dead letter): its headers less RabbitMQ's death bookkeeping and `dropped`,
 * plus `extra`; its correlation id, priority, timestamp, content type and encoding, type, app id
 * and reply-to kept.
 *
 * @internal
 */
export const copyOptions = (
  message: Amqp.Message,
  copy: {
    readonly messageId: string | undefined
    readonly persistent: boolean
    readonly extra?: Readonly<Record<string, string>>
    readonly dropped?: ReadonlySet<string>
  }
): Amqp.Options.Publish => {
  const headers: Record<string, unknown> = {}
  const table = message.properties.headers
  if (table !== undefined && table !== null) {
    for (const key in table) {
      if (wire.isDeathHeader(key) || copy.dropped?.has(key) === true) continue
      headers[key] = table[key]
    }
  }
  if (copy.extra !== undefined) Object.assign(headers, copy.extra)
  const { appId, contentEncoding, contentType, correlationId, priority, replyTo, timestamp, type } = message.properties
  const options: Amqp.Options.Publish = {
    persistent: copy.persistent,
    mandatory: true,
    headers,
    // A copy is what its consumer (possibly another client) got: the original's properties are
    // kept. A member of a pack is JSON on its own; `userId` is never copied (RabbitMQ checks it
    // against the connection's user).
    contentType: typeof contentType === "string" && contentType !== wire.packedContentType
      ? contentType
      : "application/json"
  }
  if (copy.messageId !== undefined) options.messageId = copy.messageId
  if (typeof correlationId === "string") options.correlationId = correlationId
  if (typeof priority === "number") options.priority = priority
  if (typeof timestamp === "number") options.timestamp = timestamp
  if (typeof contentEncoding === "string") options.contentEncoding = contentEncoding
  if (typeof type === "string") options.type = type
  if (typeof appId === "string") options.appId = appId
  if (typeof replyTo === "string") options.replyTo = replyTo
  return options
}

/**
 * A copy of the delivery for a retry or dead-letter queue. A retry keeps the original's
 * persistence; a dead letter is kept on disk whatever it was.
 */
const republished = (
  message: Amqp.Message,
  delivery: BrokerTransport.TransportDelivery,
  queue: string,
  extra: Record<string, string>,
  persistent: boolean
): OutMessage => {
  const options = copyOptions(message, {
    messageId: delivery.message.messageId,
    persistent,
    extra: { [routingKeyHeader]: delivery.message.routingKey, ...extra }
  })
  return {
    exchange: "",
    routingKey: queue,
    content: message.content,
    options,
    topic: delivery.message.routingKey,
    messageId: delivery.message.messageId
  }
}

/** A delivery to run: an AMQP message, or one member of a packed one. */
interface Source {
  readonly acker: Acker
  readonly message: Amqp.Message
  readonly pack: Pack | undefined
}

/** The members of one packed message: it is acked once all are, requeued whole if any was not. */
class Pack {
  private requeue = false
  constructor(private readonly acker: Acker, private readonly carrier: Amqp.Message, private remaining: number) {}

  settle(ack: boolean): void {
    if (!ack) this.requeue = true
    if (--this.remaining > 0) return
    if (this.requeue) this.acker.nack(this.carrier)
    else this.acker.ack(this.carrier)
  }
}

interface Attached {
  readonly connection: Connection
  readonly channel: Amqp.Channel
  readonly acker: Acker
  readonly consumerTag: string
  /** Completes with the reason when the channel closes or the broker cancels the consumer. */
  readonly lost: Deferred.Deferred<string>
}

/** Backoff between attempts to re-attach a consumer; consumers never give up on their own. */
const reattachSchedule = Schedule.exponential("100 millis").pipe(
  Schedule.union(Schedule.spaced("5 seconds")),
  Schedule.jittered
)

/** @internal */
export const consume = (deps: ConsumerDeps) =>
(
  subscription: BrokerTransport.TransportSubscription,
  handle: (delivery: BrokerTransport.TransportDelivery) => Effect.Effect<BrokerTransport.Disposition>
): Effect.Effect<void, BrokerUnavailable | DeclareConflict, Scope.Scope> =>
  Effect.gen(function*() {
    const { manager, names } = deps
    const queue = names.group(subscription.group)
    // A fiber per delivery, tracked in a plain Set: cheaper than a worker pool on Effect's Queue
    // or a FiberSet (both measured), and prefetch already bounds how many run at once. Settling
    // happens in the fiber's observer, so an ack costs the fiber no extra steps.
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const inFlight = new Set<Fiber.RuntimeFiber<unknown>>()
    let drained: Deferred.Deferred<void> | undefined
    const track = <A>(fiber: Fiber.RuntimeFiber<A>, onExit: (exit: Exit.Exit<A>) => void) => {
      inFlight.add(fiber)
      fiber.addObserver((exit) => {
        onExit(exit)
        inFlight.delete(fiber)
        if (inFlight.size === 0 && drained !== undefined) Deferred.unsafeDone(drained, Effect.void)
      })
    }
    // With a prefetch above the concurrency, deliveries beyond it wait here (unacked) for a slot.
    let running = 0
    const waiting = new Fifo<Source>()
    const start = (source: Source) => {
      if (running >= subscription.concurrency) {
        waiting.push(source)
        return
      }
      // A retry or delayed message that came due after its deadline: dropped, as RabbitMQ drops
      // an expired message.
      if (pastDeadline(source.message)) {
        settle(source, { done: false }, true)
        runFork(Effect.logDebug("dropped a delivery past its expiration"))
        return
      }
      running++
      const state = { done: false }
      const delivery = toDelivery(source.message)
      track(runFork(handle(delivery)), (exit) => {
        running--
        startWaiting()
        if (Exit.isFailure(exit)) return settle(source, state, false)
        const disposition = exit.value
        if (disposition._tag === "Ack") return settle(source, state, true)
        // Retry and dead-letter republish first; interrupted (shutdown), the message is requeued.
        track(runFork(carryOut(source, delivery, state, disposition)), () => settle(source, state, false))
      })
    }
    const startWaiting = () => {
      while (running < subscription.concurrency && !stopping) {
        const next = waiting.shift()
        if (next === undefined) return
        // From a channel that has closed since: the broker redelivers it, so it must not run here.
        if (!next.acker.closed) start(next)
      }
    }
    /** A delivery: on its own, or one of a packed message's. */
    const received = (acker: Acker, message: Amqp.Message) => {
      const members = message.properties.contentType === wire.packedContentType
        ? packed.unpack(message, publishedAtHeader)
        : undefined
      if (members === undefined) return start({ acker, message, pack: undefined })
      const pack = new Pack(acker, message, members.length)
      for (const member of members) start({ acker, message: member, pack })
    }
    const token = {}
    let stopping = false
    let attached: Attached | undefined

    const annotations = { group: subscription.group, pattern: subscription.pattern }
    const fail = (detail: string, error: unknown) =>
      new BrokerUnavailable({ reason: "closed", detail: `${detail}: ${manager.describeError(error)}` })

    /** Acks or nacks once: a second settle of a delivery tag would close the channel. */
    const settle = (source: Source, state: { done: boolean }, ack: boolean) => {
      if (state.done) return
      state.done = true
      if (source.pack !== undefined) source.pack.settle(ack)
      else if (ack) source.acker.ack(source.message)
      else source.acker.nack(source.message)
    }

    /** Carries out a retry or dead-letter; on failure the original is requeued after a pause. */
    const forward = (
      source: Source,
      state: { done: boolean },
      prepare: Effect.Effect<OutMessage, BrokerUnavailable>
    ) =>
      Effect.gen(function*() {
        const prepared = yield* Effect.either(prepare)
        const outcome = Either.isLeft(prepared) ? prepared.left : yield* deps.publisher.publishOne(prepared.right)
        if (outcome === undefined) return settle(source, state, true)
        yield* Effect.logWarning(`could not forward the message, requeueing it: ${outcome.message}`)
        yield* Effect.sleep("1 second")
        settle(source, state, false)
      })

    const carryOut = (
      source: Source,
      delivery: BrokerTransport.TransportDelivery,
      state: { done: boolean },
      disposition: Exclude<BrokerTransport.Disposition, { readonly _tag: "Ack" }>
    ): Effect.Effect<void> => {
      const message = source.message
      switch (disposition._tag) {
        case "Retry": {
          const extra = {
            [wire.headers.attempt]: String(delivery.attempt + 1),
            [wire.headers.lastError]: bounded(disposition.reason),
            ...retryDeadline(message, delivery)
          }
          if (disposition.delay <= 0) {
            return forward(
              source,
              state,
              Effect.succeed(republished(message, delivery, queue, extra, delivery.message.persistent))
            )
          }
          const ms = topology.bucketDelay(disposition.delay)
          const retryQueue = names.retry(subscription.group, ms)
          return forward(
            source,
            state,
            Effect.as(
              deps.declarer.ensure(retryQueue, ms, (ch) => topology.declareRetry(ch, names, subscription.group, ms)),
              republished(message, delivery, retryQueue, extra, delivery.message.persistent)
            )
          )
        }
        case "DeadLetter":
          return forward(
            source,
            state,
            Effect.succeed(
              republished(message, delivery, names.deadLetter(subscription.group), {
                [wire.headers.deadReason]: bounded(disposition.reason),
                [wire.headers.group]: subscription.group
              }, true)
            )
          )
      }
    }

    const attach = (after: number): Effect.Effect<Attached, BrokerUnavailable | DeclareConflict> =>
      Effect.gen(function*() {
        const connection = yield* manager.awaitOpen(deps.attachTimeout, after)
        const channel = yield* Effect.tryPromise({
          try: () => connection.model.createChannel(),
          catch: (error) => fail("cannot open a consumer channel", error)
        })
        const lost = yield* Deferred.make<string>()
        const acker = new Acker(channel, (operation, error) =>
          manager.log({
            level: "debug",
            message: `${operation} on a closed channel (the broker redelivers): ${manager.describeError(error)}`,
            annotations
          }))
        channel.on("error", (error: unknown) => {
          manager.log({
            level: "warning",
            message: `consumer channel error: ${manager.describeError(error)}`,
            annotations
          })
        })
        channel.on("close", () => {
          acker.closed = true
          Deferred.unsafeDone(lost, Effect.succeed("channel closed"))
        })
        const setup = Effect.gen(function*() {
          yield* Effect.tryPromise({
            try: () =>
              topology.declareGroup(channel, names, {
                group: subscription.group,
                pattern: subscription.pattern,
                queueType: deps.queueType,
                maxPriority: subscription.maxPriority
              }),
            catch: (error) =>
              topology.isPreconditionFailed(error)
                ? new DeclareConflict({ group: subscription.group, detail: manager.describeError(error) })
                : fail(`declaring queue "${queue}" failed`, error)
          })
          yield* Effect.tryPromise({
            try: () => channel.prefetch(subscription.prefetch),
            catch: (error) => fail("setting prefetch failed", error)
          })
          const reply = yield* Effect.tryPromise({
            try: () =>
              channel.consume(queue, (message) => {
                if (message === null) {
                  // The broker cancelled us (queue deleted): drop the channel, the supervisor re-attaches.
                  manager.log({
                    level: "warning",
                    message: `the broker cancelled the consumer of ${queue}`,
                    annotations
                  })
                  Deferred.unsafeDone(lost, Effect.succeed("consumer cancelled by the broker"))
                  channel.close().then(
                    undefined,
                    (error: unknown) =>
                      manager.log({
                        level: "debug",
                        message: `closing a cancelled consumer: ${manager.describeError(error)}`
                      })
                  )
                  return
                }
                // A delivery racing the shutdown's cancel goes straight back to the queue.
                if (stopping) acker.nack(message)
                else received(acker, message)
              }, { noAck: false }),
            catch: (error) => fail(`consuming from "${queue}" failed`, error)
          })
          return reply.consumerTag
        })
        const consumerTag = yield* setup.pipe(
          Effect.onError(() => closeConsumerChannel(channel, lost, deps.shutdownTimeout))
        )
        return { connection, channel, acker, consumerTag, lost }
      })

    /** Closes a consumer channel unless its connection is already gone. */
    const closeConsumerChannel = (channel: Amqp.Channel, lost: Deferred.Deferred<string>, timeout: Duration.Duration) =>
      Effect.flatMap(
        Deferred.isDone(lost),
        (gone) => gone ? Effect.void : closeChannel(channel, timeout, manager, "a consumer channel")
      )

    attached = yield* attach(0)
    deps.active.add(token)

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        stopping = true
        deps.active.delete(token)
        // One deadline for the whole shutdown: on a connection that stopped answering, cancel,
        // drain and close each bounded alone took three times `shutdownTimeout`.
        const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(deps.shutdownTimeout)
        const left = Effect.map(Clock.currentTimeMillis, (now) => Duration.millis(Math.max(0, deadline - now)))
        // Not started: straight back to the queue.
        for (const source of waiting.drain()) settle(source, { done: false }, false)
        const current = attached
        // The cancel and the wait for handlers run side by side: a delivery racing the cancel is
        // nacked at once (`stopping`), so nothing new starts meanwhile.
        const cancel = current === undefined || (yield* Deferred.isDone(current.lost))
          ? Effect.void
          : Effect.tryPromise(() => current.channel.cancel(current.consumerTag)).pipe(
            Effect.interruptible,
            Effect.timeout(deps.shutdownTimeout),
            Effect.catchAll((error) => Effect.logDebug(`cancelling the consumer: ${manager.describeError(error)}`))
          )
        const drain = inFlight.size === 0 ? Effect.void : Effect.gen(function*() {
          const signal = yield* Deferred.make<void>()
          drained = signal
          const result = yield* Deferred.await(signal).pipe(
            Effect.interruptible,
            Effect.timeoutOption(deps.shutdownTimeout)
          )
          if (result._tag === "None") {
            yield* Effect.logWarning(
              `shutdown timeout: interrupting ${inFlight.size} in-flight handler(s); their messages are requeued`
            )
          }
        })
        yield* Effect.all([cancel, drain], { concurrency: 2, discard: true })
        // Interrupted handlers requeue their message (see `start`).
        yield* Fiber.interruptAll([...inFlight])
        if (current === undefined) return
        current.acker.flush()
        // What is left of the deadline: the acks and nacks are written before the close either
        // way, and a channel not closed here goes with its connection.
        yield* closeConsumerChannel(current.channel, current.lost, yield* left)
      }).pipe(Effect.annotateLogs(annotations))
    )

    const supervise = Effect.gen(function*() {
      while (true) {
        const current = attached
        if (current === undefined) return
        const reason = yield* Deferred.await(current.lost)
        if (stopping) return
        deps.active.delete(token)
        yield* Effect.logWarning(`consumer lost (${reason}); re-attaching`)
        const connectionGone = yield* Deferred.isDone(current.connection.closed)
        const next = yield* attach(connectionGone ? current.connection.generation : 0).pipe(
          Effect.tapError((error) => Effect.logWarning(`re-attaching failed: ${error.message}`)),
          Effect.retry(reattachSchedule)
        )
        attached = next
        deps.active.add(token)
        yield* Effect.logInfo("consumer re-attached")
      }
    }).pipe(
      Effect.annotateLogs({ package: "effect-background", module: "RabbitMQBroker", ...annotations })
    )
    yield* Effect.forkScoped(Effect.interruptible(supervise))
  })
