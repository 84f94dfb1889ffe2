import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import type * as Broker from "../../Broker.js"
import { BrokerUnavailable, PublishRejected } from "../../BrokerError.js"
import type * as BrokerTransport from "../../BrokerTransport.js"
import { oversize } from "../broker.js"
import { yieldToEventLoop } from "../eventLoop.js"
import * as codec from "./codec.js"
import * as connection from "./connection.js"
import * as consumer from "./consumer.js"
import * as Keys from "./keys.js"
import { Packer } from "./pack.js"
import * as scripts from "./scripts.js"

/** Fully resolved options (defaults applied, validated). @internal */
export interface Resolved {
  readonly endpoint: connection.Endpoint
  readonly prefix: string
  readonly claimIdle: Duration.Duration
  readonly maxDeliveries: number
  readonly pollInterval: Duration.Duration
  readonly trimInterval: Duration.Duration
  readonly shutdownTimeout: Duration.Duration
  readonly publishTimeout: Duration.Duration
  readonly maxMessageBytes: number
  readonly waitForReplicas: { readonly replicas: number; readonly timeout: Duration.Duration } | undefined
}

/** @internal */
export interface RedisTransport {
  readonly transport: BrokerTransport.Transport
  readonly stats: consumer.Stats
  readonly keys: Keys.Keys
  readonly command: connection.Connection
}

/** Messages of one topic per `publishMany` call, and the bytes after which a chunk goes out sooner. */
const chunkSize = 128
// The last chunks of a window shrink, down to this: the window's last reply waits for Redis to
// run its last chunk, and this process waits for that reply with nothing left to encode.
const minTailChunk = 16
const chunkBytes = 4 * 1024 * 1024

/** How long a topic known to have a group is published to without checking again. */
const routableTtlMs = 1000

type Outcome = BrokerUnavailable | PublishRejected | undefined

const isUnsentResult = (result: Either.Either<void, BrokerUnavailable | PublishRejected> | undefined): boolean =>
  result !== undefined && Either.isLeft(result) && result.left._tag === "BrokerUnavailable"

/** @internal */
export const make = (options: Resolved): Effect.Effect<RedisTransport, BrokerUnavailable, Scope.Scope> =>
  Effect.gen(function*() {
    const keys = Keys.make(options.prefix)
    const command = yield* connection.make(
      options.endpoint,
      `effect-background-${options.prefix}`,
      scripts.all.map((script) => script.lua)
    )
    const stats: consumer.Stats = { claimed: 0, stalled: 0, expired: 0, requeued: 0, settleFailures: 0 }
    const active = new Set<object>()
    const clock = yield* Effect.clock
    const now = () => clock.unsafeCurrentTimeMillis()
    const publishTimeoutMs = Duration.toMillis(options.publishTimeout)
    /** Topics with a group, and until when that is trusted (groups are never removed by the library). */
    const routable = new Map<string, number>()

    const unavailable = (error: unknown, doing: string) =>
      new BrokerUnavailable({ reason: "closed", detail: `${doing}: ${connection.describeError(error)}` })

    /** What a failed command means for a publish: not sent, refused, or maybe stored. */
    const publishError = (
      message: BrokerTransport.TransportMessage,
      error: unknown
    ): BrokerUnavailable | PublishRejected => {
      if (connection.isUnsent(error)) return unavailable(error, `publishing to ${message.routingKey}`)
      const isReply = connection.isReply(error)
      return new PublishRejected({
        topic: message.routingKey,
        messageId: message.messageId,
        reason: isReply ? "nacked" : "channel-closed",
        ambiguous: !isReply,
        detail: connection.describeError(error)
      })
    }

    const unroutable = (message: BrokerTransport.TransportMessage) =>
      new PublishRejected({
        topic: message.routingKey,
        messageId: message.messageId,
        reason: "unroutable",
        ambiguous: false,
        detail: `no group is declared on topic "${message.routingKey}"; nothing was stored`
      })

    /** Sends one message; resolves to its outcome (never rejects). */
    const send = (message: BrokerTransport.TransportMessage): Promise<Outcome> => {
      const trusted = message.delay === undefined || message.delay <= 0
        ? routable.get(message.routingKey)
        : undefined
      if (trusted !== undefined && trusted > now()) {
        return command.sendPlain(codec.toFields(message, ["XADD", keys.topic(message.routingKey), "*"])).then(
          () => undefined,
          (error) => publishError(message, error)
        )
      }
      const fields = codec.toFields(message)
      if (message.delay !== undefined && message.delay > 0) {
        const due = now() + message.delay
        return scripts.run<number>(command, scripts.publishDelayed, [keys.groupsOf(message.routingKey)], [
          `${options.prefix}:z:`,
          String(due),
          nonce16(),
          ...fields,
          "k",
          message.routingKey
        ]).then(
          (groups) => Number(groups) > 0 ? undefined : unroutable(message),
          (error) => publishError(message, error)
        )
      }
      return scripts.run<unknown>(
        command,
        scripts.publish,
        [keys.groupsOf(message.routingKey), keys.topic(message.routingKey)],
        fields
      ).then((id) => {
        if (id === null) return unroutable(message)
        routable.set(message.routingKey, now() + routableTtlMs)
        return undefined
      }, (error) => publishError(message, error))
    }

    /** With `waitForReplicas`: the outcome of the messages just sent once enough replicas have them. */
    const replicated = (topics: ReadonlyArray<BrokerTransport.TransportMessage>): Promise<Outcome> => {
      const wait = options.waitForReplicas
      if (wait === undefined || topics.length === 0) return Promise.resolve(undefined)
      const first = topics[0]
      return command.send<number>(["WAIT", String(wait.replicas), String(Duration.toMillis(wait.timeout))]).then(
        (count) =>
          Number(count) >= wait.replicas ? undefined : new PublishRejected({
            topic: first?.routingKey ?? "",
            messageId: first?.messageId ?? "",
            reason: "timeout",
            ambiguous: true,
            detail: `stored on the primary but only ${count} of ${wait.replicas} replicas acknowledged within ${
              Duration.format(wait.timeout)
            }`
          }),
        (error) => first === undefined ? undefined : publishError(first, error)
      )
    }

    const ready = command.awaitReady(publishTimeoutMs)
    /** Waits for the connection until `deadline` (epoch ms). */
    const readyBy = (deadline: number) => command.awaitReady(Math.max(1, deadline - now()))

    const publish = (
      message: BrokerTransport.TransportMessage
    ): Effect.Effect<void, BrokerUnavailable | PublishRejected> => {
      const rejected = oversize(message, options.maxMessageBytes)
      if (rejected !== undefined) return Effect.fail(rejected)
      const deadline = now() + publishTimeoutMs
      // A command refused while reconnecting was never sent: wait for the connection and send it
      // again, until publishTimeout. One lost in flight is ambiguous and not repeated.
      const attempt: Effect.Effect<void, BrokerUnavailable | PublishRejected> = Effect.zipRight(
        readyBy(deadline),
        Effect.flatMap(
          Effect.promise(async () => (await send(message)) ?? (await replicated([message]))),
          (outcome) =>
            outcome === undefined
              ? Effect.void
              : outcome._tag === "BrokerUnavailable" && now() < deadline
              ? attempt
              : Effect.fail(outcome)
        )
      )
      return attempt
    }

    type Result = Either.Either<void, BrokerUnavailable | PublishRejected>
    interface Chunk {
      readonly packer: Packer
      /** How many messages it takes: `chunkSize`, or fewer near the end of the window. */
      readonly limit: number
      readonly messages: Array<BrokerTransport.TransportMessage>
      readonly at: Array<number>
    }
    /** One message's fields at a time, before they are packed (reused: see codec.writeFields). */
    const scratch: Array<string | Buffer> = []
    /** One script call for a chunk of one topic; its outcome is each member's. */
    const sendChunk = (topic: string, chunk: Chunk, results: Array<Result>): Promise<void> =>
      scripts.run<unknown>(command, scripts.publishMany, [keys.groupsOf(topic), keys.topic(topic)], [
        chunk.packer.finish()
      ]).then(
        (count) => {
          if (count !== null) return
          chunk.messages.forEach((message, i) => {
            const at = chunk.at[i]
            if (at !== undefined) results[at] = Either.left(unroutable(message))
          })
        },
        (error: unknown) => {
          chunk.messages.forEach((message, i) => {
            const at = chunk.at[i]
            if (at !== undefined) results[at] = Either.left(publishError(message, error))
          })
        }
      )
    const publishAll = (batch: BrokerTransport.TransportBatch, window: number) =>
      Effect.gen(function*() {
        const results = new Array<Result>(batch.size).fill(Either.void)
        const readiness = yield* Effect.either(ready)
        let index = 0
        while (index < batch.size) {
          const end = Math.min(batch.size, index + Math.max(1, window))
          const sent: Array<Promise<void>> = []
          const chunks = new Map<string, Chunk>()
          const messages: Array<BrokerTransport.TransportMessage> = []
          const positions: Array<number> = []
          for (; index < end; index++) {
            const message = batch.prepare(index)
            if (message === undefined) continue
            if (Either.isLeft(readiness)) {
              results[index] = Either.left(readiness.left)
              continue
            }
            const rejected = oversize(message, options.maxMessageBytes)
            if (rejected !== undefined) {
              results[index] = Either.left(rejected)
              continue
            }
            const at = index
            messages.push(message)
            positions.push(at)
            if (message.delay === undefined || message.delay <= 0) {
              // Chunked per topic: one script call carries up to `chunkSize` messages.
              let chunk = chunks.get(message.routingKey)
              if (chunk === undefined) {
                const limit = Math.min(chunkSize, Math.max(minTailChunk, Math.ceil((end - index) / 2)))
                const capacity = Math.min(chunkBytes, limit * (message.body.byteLength + 128))
                chunk = { packer: new Packer(capacity), limit, messages: [], at: [] }
                chunks.set(message.routingKey, chunk)
              }
              chunk.packer.add(scratch, codec.writeFields(message, scratch, 0))
              chunk.messages.push(message)
              chunk.at.push(at)
              if (chunk.messages.length >= chunk.limit || chunk.packer.byteLength >= chunkBytes) {
                chunks.delete(message.routingKey)
                sent.push(sendChunk(message.routingKey, chunk, results))
                // Redis runs this chunk while the next one is encoded.
                yield* yieldToEventLoop
              }
              continue
            }
            // Commands issued in one tick share one write (node-redis pipelines them).
            sent.push(
              send(message).then((outcome) => {
                if (outcome !== undefined) results[at] = Either.left(outcome)
              })
            )
          }
          for (const [topic, chunk] of chunks) sent.push(sendChunk(topic, chunk, results))
          chunks.clear()
          if (sent.length === 0) continue
          yield* Effect.promise(() => Promise.all(sent))
          // Refused while reconnecting (never sent): sent again once connected, until publishTimeout.
          const deadline = now() + publishTimeoutMs
          let unsent = positions.filter((at) => isUnsentResult(results[at]))
          while (unsent.length > 0 && now() < deadline) {
            if (Either.isLeft(yield* Effect.either(readyBy(deadline)))) break
            const again = unsent
            yield* Effect.promise(() =>
              Promise.all(again.map((at) => {
                const message = messages[positions.indexOf(at)]
                return message === undefined ? undefined : send(message).then((outcome) => {
                  results[at] = outcome === undefined ? Either.void : Either.left(outcome)
                })
              }))
            )
            unsent = again.filter((at) => isUnsentResult(results[at]))
          }
          const wait = yield* Effect.promise(() => replicated(messages))
          if (wait !== undefined) {
            for (const at of positions) {
              const current = results[at]
              if (current !== undefined && Either.isRight(current)) results[at] = Either.left(wait)
            }
          }
        }
        return results
      })

    const declareGroup = (topic: string, group: string, from: "$" | "0") =>
      Effect.zipRight(
        ready,
        Effect.tryPromise({
          try: () =>
            scripts.run(
              command,
              scripts.declare,
              [keys.topic(topic), keys.queue(group), keys.groupsOf(topic), keys.topics],
              [group, topic, from]
            ),
          catch: (error) => unavailable(error, `declaring group ${group} on ${topic}`)
        })
      ).pipe(Effect.tap(() => Effect.sync(() => routable.set(topic, now() + routableTtlMs))), Effect.asVoid)

    const redrive = (group: string, max: number): Effect.Effect<number, BrokerUnavailable> =>
      Effect.gen(function*() {
        yield* ready
        const dead = keys.dead(group)
        // Only what was dead when the redrive started: bounded by the newest id now.
        const last = yield* Effect.tryPromise({
          try: () => command.send<unknown>(["XREVRANGE", dead, "+", "-", "COUNT", "1"]),
          catch: (error) => unavailable(error, `reading dead letters of ${group}`)
        })
        const newest = Array.isArray(last) && Array.isArray(last[0]) ? codec.asText(last[0][0]) : undefined
        if (newest === undefined) return 0
        let moved = 0
        while (moved < max) {
          const chunk = Math.min(100, max - moved)
          const count = yield* Effect.tryPromise({
            try: () =>
              scripts.run<number>(command, scripts.redrive, [dead, keys.queue(group)], [newest, String(chunk)]),
            catch: (error) => unavailable(error, `redriving dead letters of ${group}`)
          })
          moved += Number(count)
          if (Number(count) < chunk) break
        }
        return moved
      })

    const health: Effect.Effect<Broker.Health> = Effect.sync(() => {
      const where = connection.describe(options.endpoint.url)
      const lastError = command.lastError()
      const counters =
        `claimed ${stats.claimed}, stalled ${stats.stalled}, expired ${stats.expired}, requeued ${stats.requeued}, settle failures ${stats.settleFailures}`
      if (command.client.isReady) {
        return {
          status: "up",
          connection: "open",
          consumers: active.size,
          detail: `connected to ${where}; ${counters}${lastError === undefined ? "" : `; last error: ${lastError}`}`
        }
      }
      return {
        status: "down",
        connection: command.client.isOpen ? "reconnecting" : "closed",
        consumers: active.size,
        detail: `${command.client.isOpen ? "reconnecting to" : "closed:"} ${where}${
          lastError === undefined ? "" : `: ${lastError}`
        }`
      }
    })

    const transport: BrokerTransport.Transport = {
      capabilities: {
        name: "redis",
        delay: true,
        priority: false,
        expiration: true,
        wildcards: false,
        packedContentType: undefined,
        transient: false,
        redrive: true,
        maxMessageBytes: options.maxMessageBytes
      },
      publish,
      publishAll,
      consume: consumer.consume({
        command,
        endpoint: options.endpoint,
        keys,
        claimIdleMs: Duration.toMillis(options.claimIdle),
        maxDeliveries: options.maxDeliveries,
        pollMs: Duration.toMillis(options.pollInterval),
        trimMs: Duration.toMillis(options.trimInterval),
        blockMs: 2000,
        shutdownTimeout: options.shutdownTimeout,
        stats,
        active,
        declareGroup
      }),
      declare: (subscription) => declareGroup(subscription.pattern, subscription.group, "$"),
      redrive,
      health
    }
    return { transport, stats, keys, command }
  })

const nonce16 = (): string =>
  (Math.random().toString(36).slice(2) + Date.now().toString(36)).padEnd(16, "0").slice(0, 16)
