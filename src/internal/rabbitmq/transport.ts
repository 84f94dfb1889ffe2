import type * as Amqp from "amqplib"
import * as Clock from "effect/Clock"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type * as Broker from "../../Broker.js"
import { BrokerUnavailable, DeclareConflict, PublishRejected } from "../../BrokerError.js"
import type * as BrokerTransport from "../../BrokerTransport.js"
import { oversize } from "../broker.js"
import { yieldToEventLoop } from "../eventLoop.js"
import * as MessageId from "../messageId.js"
import * as wire from "../wire.js"
import * as connection from "./connection.js"
import * as consumer from "./consumer.js"
import * as declarer from "./declarer.js"
import * as packed from "./packed.js"
import * as publisher from "./publisher.js"
import * as redrive from "./redrive.js"
import * as topology from "./topology.js"
import { describe, type Endpoint } from "./url.js"

/** Messages prepared between two returns to the event loop while a batch is being sent. */
const sliceSize = 256

/** Fully resolved options (defaults applied, validated). @internal */
export interface Resolved {
  readonly endpoint: Endpoint
  readonly prefix: string
  readonly queueType: topology.QueueType
  readonly heartbeatSeconds: number
  readonly connectTimeout: Duration.Duration
  readonly reconnect: Schedule.Schedule<unknown, BrokerUnavailable>
  readonly shutdownTimeout: Duration.Duration
  readonly maxMessageBytes: number
  readonly publishTimeout: Duration.Duration
}

/** @internal */
export const make = (options: Resolved): Effect.Effect<BrokerTransport.Transport, BrokerUnavailable, Scope.Scope> =>
  Effect.gen(function*() {
    const names = topology.names(options.prefix)
    const manager = yield* connection.make({
      endpoint: options.endpoint,
      heartbeatSeconds: options.heartbeatSeconds,
      connectTimeout: options.connectTimeout,
      shutdownTimeout: options.shutdownTimeout,
      reconnect: options.reconnect,
      connectionName: `effect-background ${options.prefix}`,
      setup: (channel) => topology.declareExchanges(channel, names)
    })
    const publish = yield* publisher.make(manager, options.publishTimeout)
    const declare = yield* declarer.make(manager, options.publishTimeout)
    // Both channels close side by side, each waiting at most shutdownTimeout (not the publish
    // timeout: a dead connection answers neither), before the connection itself closes.
    yield* Effect.addFinalizer(() =>
      Effect.all([declare.close(options.shutdownTimeout), publish.close(options.shutdownTimeout)], {
        concurrency: 2,
        discard: true
      })
    )
    const active = new Set<object>()

    const toOut = (message: BrokerTransport.TransportMessage, delay: number | undefined): publisher.OutMessage => {
      let exchange = names.exchange
      const properties: Amqp.Options.Publish = {
        persistent: message.persistent,
        mandatory: true,
        messageId: message.messageId,
        contentType: "application/json"
      }
      // A UUIDv7 id already tells the publish time (internal/messageId.ts); AMQP's whole seconds
      // go along only when it does not.
      const idMillis = MessageId.millisOf(message.messageId)
      if (
        message.publishedAt !== undefined &&
        (idMillis === undefined || Math.abs(idMillis - message.publishedAt) >= 1000)
      ) {
        properties.timestamp = Math.floor(message.publishedAt / 1000)
      }
      // One AMQP table for headers and metadata (metadata names are reserved, so they cannot
      // collide), and none unless needed: encoding one is a large part of amqplib's per-message cost.
      const table = wire.mergeHeaders(message.headers, message.metadata)
      if (delay !== undefined) {
        properties.headers = { ...table, [topology.delayHeader]: String(delay) }
        exchange = names.delayExchange
        // Not AMQP's `expiration`: in the delay queue it would cut the delay short (the message
        // dead-letters on the shorter TTL) and come out without it. A deadline counted from the
        // end of the delay, checked when the delivery starts.
        if (message.expiration !== undefined) {
          properties.headers[consumer.expiresAtHeader] = String(
            (message.publishedAt ?? Date.now()) + delay + message.expiration
          )
        }
      } else if (wire.hasHeaders(table)) {
        properties.headers = table
      }
      if (message.correlationId !== undefined) properties.correlationId = message.correlationId
      if (message.priority !== undefined) properties.priority = message.priority
      if (message.expiration !== undefined && delay === undefined) properties.expiration = String(message.expiration)
      return {
        exchange,
        routingKey: message.routingKey,
        content: Buffer.isBuffer(message.body)
          ? message.body
          : Buffer.from(message.body.buffer, message.body.byteOffset, message.body.byteLength),
        options: properties,
        topic: message.routingKey,
        messageId: message.messageId
      }
    }

    type Result = Either.Either<void, BrokerUnavailable | PublishRejected>
    /** Messages of one routing key travelling as one AMQP message, and their batch positions. */
    type Carrier = { members: Array<BrokerTransport.TransportMessage>; at: Array<number>; bytes: number }

    /** Several messages for one routing key as one AMQP message (see packed.ts). */
    const toCarrier = (members: ReadonlyArray<BrokerTransport.TransportMessage>): publisher.OutMessage => {
      const first = members[0]
      const routingKey = first?.routingKey ?? ""
      const messageId = MessageId.make(first?.publishedAt ?? 0)
      return {
        exchange: names.exchange,
        routingKey,
        content: packed.pack(members),
        options: {
          persistent: first?.persistent ?? true,
          mandatory: true,
          messageId,
          contentType: wire.packedContentType
        },
        topic: routingKey,
        messageId
      }
    }

    /** The outcome of a carrier, as each of its messages' own. */
    const forMember = (
      outcome: publisher.Outcome,
      member: BrokerTransport.TransportMessage | undefined
    ): publisher.Outcome =>
      outcome instanceof PublishRejected && member !== undefined
        ? new PublishRejected({ ...outcome, messageId: member.messageId })
        : outcome

    /**
     * Prepares the batch into `feed` in order, in slices that leave the event loop in between so
     * the publisher sends (and confirms come back) while later messages are still being encoded.
     * Returns, per feed item, the batch positions it answers for: one, or a carrier's members.
     */
    const produce = (
      batch: BrokerTransport.TransportBatch,
      pack: number,
      feed: publisher.Feed,
      results: Array<Result>
    ) =>
      Effect.gen(function*() {
        const positions: Array<number | Carrier> = []
        // Open carriers by routing key and persistence, filled in input order.
        const open = new Map<string, Carrier>()
        const close = (key: string) => {
          const carrier = open.get(key)
          if (carrier === undefined) return
          open.delete(key)
          const only = carrier.members.length === 1 ? carrier.members[0] : undefined
          feed.push(only !== undefined ? toOut(only, undefined) : toCarrier(carrier.members))
          positions.push(only !== undefined ? carrier.at[0] ?? 0 : carrier)
        }
        // Delay queues are declared (or their lease renewed) before anything is sent through them.
        const failedDelays = new Map<number, BrokerUnavailable>()
        for (let i = 0; i < batch.size; i++) {
          if (i > 0 && i % sliceSize === 0) {
            feed.flush()
            yield* yieldToEventLoop
          }
          const message = batch.prepare(i)
          if (message === undefined) continue
          const rejected = oversize(message, options.maxMessageBytes)
          if (rejected !== undefined) {
            results[i] = Either.left(rejected)
            continue
          }
          if (pack > 1 && packed.packable(message)) {
            const key = `${message.persistent ? 1 : 0}${message.routingKey}`
            const bytes = message.body.byteLength + packed.overheadOf(message)
            const carrier = open.get(key)
            if (carrier !== undefined && carrier.bytes + bytes > options.maxMessageBytes) close(key)
            const current = open.get(key) ?? { members: [], at: [], bytes: 4 }
            open.set(key, current)
            current.members.push(message)
            current.at.push(i)
            current.bytes += bytes
            if (current.members.length >= pack) close(key)
            continue
          }
          let delay: number | undefined
          if (message.delay !== undefined && message.delay > 0) {
            if (message.delay > topology.maxDelayMs) {
              results[i] = Either.left(
                new PublishRejected({
                  topic: message.routingKey,
                  messageId: message.messageId,
                  reason: "invalid",
                  ambiguous: false,
                  detail: `delay of ${message.delay} ms exceeds RabbitMQ's maximum TTL of ${topology.maxDelayMs} ms`
                })
              )
              continue
            }
            delay = topology.bucketDelay(message.delay)
            if (!failedDelays.has(delay)) {
              const ms = delay
              feed.flush()
              const ensured = yield* Effect.either(
                declare.ensure(names.delay(ms), ms, (channel) => topology.declareDelay(channel, names, ms))
              )
              if (Either.isLeft(ensured)) failedDelays.set(ms, ensured.left)
            }
            const failed = failedDelays.get(delay)
            if (failed !== undefined) {
              results[i] = Either.left(failed)
              continue
            }
          }
          feed.push(toOut(message, delay))
          positions.push(i)
        }
        for (const key of [...open.keys()]) close(key)
        feed.end()
        return positions
      })

    const publishAll = (batch: BrokerTransport.TransportBatch, window: number, pack = 1) =>
      Effect.gen(function*() {
        // Entries the front skipped keep Either.void (their outcome is the front's).
        const results = new Array<Result>(batch.size).fill(Either.void)
        const feed = new publisher.Feed()
        // A batch of one slice is prepared whole first: no second fiber for the common small batch.
        const [positions, outcomes] = yield* Effect.all([
          produce(batch, pack, feed, results),
          publish.publish(feed, window)
        ], {
          concurrency: batch.size <= sliceSize ? 1 : 2
        })
        for (let j = 0; j < positions.length; j++) {
          const position = positions[j]
          const outcome = outcomes[j]
          if (typeof position === "number") {
            results[position] = outcome === undefined
              ? Either.void
              : Either.left(outcome)
          } else if (position !== undefined) {
            for (let k = 0; k < position.at.length; k++) {
              const own = forMember(outcome, position.members[k])
              const at = position.at[k]
              if (at !== undefined) results[at] = own === undefined ? Either.void : Either.left(own)
            }
          }
        }
        return results
      })

    const health: Effect.Effect<Broker.Health> = Effect.map(
      Effect.zip(SubscriptionRef.get(manager.state), Clock.currentTimeMillis),
      ([state, now]) => {
        const where = describe(options.endpoint)
        const lastError = manager.lastError()
        switch (state._tag) {
          case "Open": {
            const blocked = state.connection.blocked.current
            if (blocked !== undefined) {
              return {
                status: "down",
                connection: "blocked",
                consumers: active.size,
                detail: `${where} blocks the connection (${blocked.reason}) for ${
                  now - blocked.since
                } ms: publishes wait until it lifts`
              }
            }
            return {
              status: "up",
              connection: "open",
              consumers: active.size,
              detail: `connected to ${where} (connection #${state.connection.generation})${
                lastError === undefined ? "" : `; last error: ${lastError}`
              }`
            }
          }
          case "Reconnecting":
            return {
              status: "down",
              connection: "reconnecting",
              consumers: active.size,
              detail: `reconnecting to ${where} for ${
                now - state.since
              } ms (${state.attempts} attempts): ${state.lastError}`
            }
          case "Closed":
            return { status: "down", connection: "closed", consumers: active.size, detail: `${where}: ${state.reason}` }
        }
      }
    )

    /** Declares a group's queue and binding on a short-lived channel (a 406 closes only it). */
    const declareGroup = (subscription: BrokerTransport.TransportSubscription) =>
      Effect.flatMap(manager.awaitOpen(options.publishTimeout), (connection) =>
        Effect.tryPromise({
          try: async () => {
            const channel = await connection.model.createChannel()
            channel.on("error", (error: unknown) =>
              manager.log({
                level: "warning",
                message: `declaring group ${subscription.group}: ${manager.describeError(error)}`
              }))
            await topology.declareGroup(channel, names, {
              group: subscription.group,
              pattern: subscription.pattern,
              queueType: options.queueType,
              maxPriority: subscription.maxPriority
            })
            await channel.close()
          },
          catch: (error) =>
            topology.isPreconditionFailed(error)
              ? new DeclareConflict({ group: subscription.group, detail: manager.describeError(error) })
              : new BrokerUnavailable({
                reason: "closed",
                detail: `declaring queue "${names.group(subscription.group)}" failed: ${manager.describeError(error)}`
              })
        }))

    const transport: BrokerTransport.Transport = {
      declare: declareGroup,
      redrive: redrive.make(manager, names, options.publishTimeout),
      publish: (message) =>
        // Without a delay (no delay queue to declare) and within the size limit: the short path.
        (message.delay === undefined || message.delay <= 0) && oversize(message, options.maxMessageBytes) === undefined
          ? Effect.flatMap(publish.publishOne(toOut(message, undefined)), (outcome) =>
            outcome === undefined ? Effect.void : Effect.fail(outcome))
          : Effect.flatMap(
            publishAll({
              size: 1,
              prepare: () =>
                message
            }, 1),
            (results) => {
              const result = results[0]
              return result === undefined || Either.isRight(result) ? Effect.void : Effect.fail(result.left)
            }
          ),
      publishAll,
      consume: consumer.consume({
        manager,
        publisher: publish,
        declarer: declare,
        names,
        queueType: options.queueType,
        shutdownTimeout: options.shutdownTimeout,
        attachTimeout: options.publishTimeout,
        active
      }),
      health,
      capabilities: {
        name: "rabbitmq",
        delay: true,
        priority: true,
        expiration: true,
        wildcards: true,
        packedContentType: wire.packedContentType,
        transient: true,
        redrive: true,
        maxMessageBytes: options.maxMessageBytes,
        // Every message goes through the one topic exchange; the routing key tells them apart.
        destination: (routingKey) => ({
          name: names.exchange,
          attributes: { "messaging.rabbitmq.destination.routing_key": routingKey }
        })
      }
    }
    return transport
  })
