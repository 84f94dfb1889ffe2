/**
 * The publisher kernel: publisher confirms on one shared confirm channel, written with plain
 * callbacks and mutable state (no Effect per message) because it is the hot path of every
 * publish. What it guarantees, for `publish(feed, window)` and `publishOne(message)`:
 *
 * - Channel: one confirm channel per layer, opened lazily under a lock and shared by every
 *   call (the consumer's retry and dead-letter forwards included); after it closes, the next
 *   call opens another, on a newer connection when the old one is gone. A channel `error`
 *   listener is always attached (without one amqplib closes the whole connection).
 * - Window: one call has at most `window` (at least 1) of its messages handed to the channel
 *   and not yet confirmed, counting those queued behind amqplib's backpressure (`drain`).
 *   Nothing bounds the sum over concurrent calls.
 * - One outcome per message, in input order: `publish` resolves once the feed has ended and
 *   every item is decided, with exactly `feed.items.length` outcomes, outcome `i` for item `i`.
 * - Success only on the message's own confirm: `undefined` is reported only from the confirm
 *   callback of that very publish, without error, and with no `basic.return` counted for its
 *   exchange, routing key and message id (RabbitMQ sends the return before the ack of the same
 *   publish). Publishes in flight that share all three are routed alike, so ids need not be
 *   unique: one that shares only its id with a returned publish is not taken for it.
 * - Definite failures, never stored by RabbitMQ: a nack → `nacked`; a return → `unroutable`;
 *   a field amqplib cannot encode (it throws before writing anything) → `invalid`, the channel
 *   stays open. None of them is `ambiguous`.
 * - Written at most once: the kernel hands a message to amqplib at most once. Only messages no
 *   channel took (it was already closed, or amqplib refused the write as an illegal operation)
 *   are sent again, on the next channel, in input order. A message that was written and whose
 *   channel closed before its confirm fails `channel-closed`, `ambiguous: true`: it may be stored,
 *   and resending is the caller's decision.
 * - Watchdog: a call gives up when no confirm arrived (and, for a streamed feed, no new item)
 *   for `publishTimeout`: every undecided message fails `timeout`, ambiguous when it had been
 *   handed to the channel (or was waiting on its backpressure), not when it was never sent. A
 *   confirm arriving later is ignored. No channel within what is left of the timeout →
 *   `BrokerUnavailable` for every message not yet sent.
 * - After giving up: a message still queued behind amqplib's backpressure when its call gave up
 *   (watchdog or interruption) may be written later; its reported outcome is already ambiguous.
 *
 * Time here is the wall clock (`Date.now`, `setTimeout`), not Effect's `Clock`: the watchdog
 * bounds real I/O, and a fiber plus a sleep per publish would cost more than amqplib's own
 * work. Every state change happens synchronously in an amqplib callback or in the fiber running
 * a round, so no state is read and written across an `await`.
 *
 * Checked by `test/broker/publisher.stress.test.ts` (a ledger of writes and confirms per
 * message id, against what the queues hold).
 */
import type * as Amqp from "amqplib"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { BrokerUnavailable, PublishRejected } from "../../BrokerError.js"
import { closeChannel } from "./closeChannel.js"
import type { Connection, Manager } from "./connection.js"

/** A message ready for `channel.publish`. @internal */
export interface OutMessage {
  readonly exchange: string
  readonly routingKey: string
  readonly content: Buffer
  readonly options: Amqp.Options.Publish
  /** For error messages: the topic the caller published to. */
  readonly topic: string
  readonly messageId: string
}

/** `undefined` = confirmed. @internal */
export type Outcome = undefined | PublishRejected | BrokerUnavailable

/**
 * Messages handed to `publish` while they are still being produced: the first are on the wire
 * while later ones are encoded. `items` only grows; `end` says no more will come.
 *
 * @internal
 */
export class Feed {
  /** Set by the round sending the feed: called when more items or the end arrived. */
  listener: (() => void) | undefined = undefined

  constructor(readonly items: Array<OutMessage> = [], public ended = false) {}

  /** A feed of messages that are all there already. */
  static of(items: Array<OutMessage>): Feed {
    return new Feed(items, true)
  }

  push(message: OutMessage): void {
    this.items.push(message)
  }

  /** Wakes the round waiting for items. */
  flush(): void {
    this.listener?.()
  }

  end(): void {
    this.ended = true
    this.flush()
  }
}

const Ok: unique symbol = Symbol("Ok")
const Unsent: unique symbol = Symbol("Unsent")
const Pending: unique symbol = Symbol("Pending")
const InFlight: unique symbol = Symbol("InFlight")

type SendResult = typeof Ok | typeof Unsent | PublishRejected
type Slot = typeof Ok | typeof Pending | typeof InFlight | PublishRejected | BrokerUnavailable

/** What identifies a returned publish; the lengths keep any two different triples apart. */
const returnKey = (exchange: string, routingKey: string, messageId: string): string =>
  `${exchange.length}:${routingKey.length}:${exchange}${routingKey}${messageId}`

const isIllegalOperation = (error: unknown): boolean => error instanceof Error && error.name === "IllegalOperationError"

/**
 * One confirm channel. Plain callbacks, no Effect per message: the hot path of publishing.
 * Writes pause while amqplib's buffer asks for `drain`; `basic.return`s (which RabbitMQ sends
 * before the ack of the same publish) are matched to publishes by exchange, routing key and
 * message id.
 */
class Sink {
  closed: string | undefined = undefined
  private blocked = false
  private readonly waiting: Array<() => void> = []
  /** Returns not yet matched to a confirm, counted by `returnKey`. */
  private readonly returned = new Map<string, number>()

  constructor(
    readonly channel: Amqp.ConfirmChannel,
    readonly generation: number,
    private readonly manager: Manager
  ) {
    channel.on("drain", () => {
      this.blocked = false
      this.flush()
    })
    channel.on("return", (message: Amqp.Message) => {
      const id: unknown = message.properties.messageId
      if (typeof id !== "string") return
      const key = returnKey(message.fields.exchange, message.fields.routingKey, id)
      this.returned.set(key, (this.returned.get(key) ?? 0) + 1)
    })
    channel.on("error", (error: unknown) => {
      this.closed = manager.describeError(error)
      manager.log({ level: "warning", message: `publish channel error: ${this.closed}` })
    })
    channel.on("close", () => {
      if (this.closed === undefined) this.closed = "channel closed"
      this.blocked = false
      this.flush()
    })
  }

  private flush(): void {
    while (!this.blocked && this.waiting.length > 0) {
      const next = this.waiting.shift()
      if (next !== undefined) next()
    }
  }

  send(message: OutMessage, done: (result: SendResult) => void): void {
    if (this.closed !== undefined) return done(Unsent)
    if (this.blocked) {
      this.waiting.push(() => this.send(message, done))
      return
    }
    let writable: boolean
    try {
      writable = this.channel.publish(
        message.exchange,
        message.routingKey,
        message.content,
        message.options,
        (error) => {
          if (error === null || error === undefined) {
            // Returns are rare: no key is built while none waits.
            if (this.returned.size === 0) return done(Ok)
            const key = returnKey(message.exchange, message.routingKey, message.messageId)
            const returns = this.returned.get(key)
            if (returns === undefined) return done(Ok)
            if (returns <= 1) this.returned.delete(key)
            else this.returned.set(key, returns - 1)
            return done(
              reject(message, "unroutable", false, `no queue is bound for routing key "${message.routingKey}"`)
            )
          }
          const text = this.manager.describeError(error)
          if (text === "message nacked") return done(reject(message, "nacked", false, "the broker nacked the message"))
          return done(reject(message, "channel-closed", true, `${this.closed ?? text} before the confirm arrived`))
        }
      )
    } catch (error) {
      // amqplib throws synchronously once the channel is closing, and on fields it cannot encode.
      if (this.closed !== undefined || isIllegalOperation(error)) {
        if (this.closed === undefined) this.closed = this.manager.describeError(error)
        return done(Unsent)
      }
      return done(reject(message, "invalid", false, this.manager.describeError(error)))
    }
    if (!writable) this.blocked = true
  }
}

const reject = (message: OutMessage, reason: PublishRejected["reason"], ambiguous: boolean, detail: string) =>
  new PublishRejected({ topic: message.topic, messageId: message.messageId, reason, ambiguous, detail })

/** @internal */
export interface Publisher {
  /**
   * Publishes the feed's messages as they come, keeping up to `window` confirms in flight; one
   * outcome per message, in order, once the feed ended and every message is settled.
   */
  readonly publish: (feed: Feed, window: number) => Effect.Effect<Array<Outcome>>
  /** As `publish` of one message; on an open channel without the batch bookkeeping. */
  readonly publishOne: (message: OutMessage) => Effect.Effect<Outcome>
  /** Closes the publish channel (layer release), waiting at most `timeout`. */
  readonly close: (timeout: Duration.Duration) => Effect.Effect<void>
}

/** @internal */
export const make = (manager: Manager, publishTimeout: Duration.Duration): Effect.Effect<Publisher> =>
  Effect.sync(() => {
    const timeoutMs = Duration.toMillis(publishTimeout)
    let sink: Sink | undefined
    const lock = Effect.unsafeMakeSemaphore(1)

    const openSink = (connection: Connection) =>
      Effect.tryPromise({
        try: () => connection.model.createConfirmChannel(),
        catch: (error) =>
          new BrokerUnavailable({
            reason: "closed",
            detail: `cannot open a publish channel: ${manager.describeError(error)}`
          })
      }).pipe(Effect.map((channel) => new Sink(channel, connection.generation, manager)))

    const acquireSink = (timeout: Duration.Duration): Effect.Effect<Sink, BrokerUnavailable> => {
      const current = sink
      if (current !== undefined && current.closed === undefined) return Effect.succeed(current)
      return lock.withPermits(1)(
        Effect.suspend(() => {
          if (sink !== undefined && sink.closed === undefined) return Effect.succeed(sink)
          // After a dead channel, prefer a newer connection if the old one is gone.
          const attempt = (after: number): Effect.Effect<Sink, BrokerUnavailable> =>
            Effect.flatMap(manager.awaitOpen(timeout, after), (connection) =>
              openSink(connection).pipe(
                Effect.catchAll((error) =>
                  Effect.flatMap(
                    Deferred.isDone(connection.closed),
                    (gone) => (gone ? attempt(connection.generation) : Effect.fail(error))
                  )
                )
              ))
          return Effect.tap(attempt(0), (created) =>
            Effect.sync(() => {
              sink = created
            }))
        })
      )
    }

    /**
     * Sends `indices` of the feed (all of it, in order, as it grows, when undefined) keeping up to
     * `window` confirms in flight; true once all are settled, false when nothing was confirmed for
     * `timeoutMs` (the connection may be half-open). The watchdog is a timer, not a fiber racing
     * this one: a single publish is the common case, and a race of two fibers plus a sleep cost
     * several times amqplib's own work for it.
     */
    const round = (
      target: Sink,
      feed: Feed,
      indices: ReadonlyArray<number> | undefined,
      window: number,
      slots: Array<Slot>,
      progress: { at: number }
    ) =>
      Effect.async<boolean>((resume) => {
        const items = feed.items
        let next = 0
        let inFlight = 0
        let pumping = false
        let over = false
        let timer: ReturnType<typeof setTimeout> | undefined
        const finish = (allSettled: boolean) => {
          if (over) return
          over = true
          if (timer !== undefined) clearTimeout(timer)
          if (indices === undefined) feed.listener = undefined
          resume(Effect.succeed(allSettled))
        }
        const watch = () => {
          const idle = Date.now() - progress.at
          if (idle >= timeoutMs) finish(false)
          else timer = setTimeout(watch, timeoutMs - idle)
        }
        // How far this round goes: the feed as it stands, or the indices given.
        const extent = () => (indices === undefined ? items.length : indices.length)
        const pump = (): void => {
          if (pumping || over) return
          pumping = true
          const total = extent()
          while (!over && inFlight < window && next < total) {
            const index = indices === undefined ? next : indices[next]
            next++
            const message = index === undefined ? undefined : items[index]
            if (index === undefined || message === undefined) break
            inFlight++
            slots[index] = InFlight
            target.send(message, (result) => {
              if (over) return
              slots[index] = result === Unsent ? Pending : result
              inFlight--
              if (result !== Unsent) progress.at = Date.now()
              pump()
            })
          }
          pumping = false
          if (!over && inFlight === 0 && next >= extent() && (indices !== undefined || feed.ended)) finish(true)
        }
        if (indices === undefined) {
          // Producing counts as progress: the watchdog waits for confirms, not for the encoder.
          feed.listener = () => {
            progress.at = Date.now()
            pump()
          }
        }
        pump()
        if (!over) watch()
        return Effect.sync(() => {
          over = true
          if (timer !== undefined) clearTimeout(timer)
          if (indices === undefined) feed.listener = undefined
        })
      })

    /** Waits for the feed's producer to finish (it runs on when sending gave up early). */
    const ended = (feed: Feed): Effect.Effect<void> =>
      feed.ended ? Effect.void : Effect.async<void>((resume) => {
        feed.listener = () => {
          if (!feed.ended) return
          feed.listener = undefined
          resume(Effect.void)
        }
        return Effect.sync(() => {
          feed.listener = undefined
        })
      })

    const publish = (feed: Feed, window: number): Effect.Effect<Array<Outcome>> =>
      Effect.gen(function*() {
        const slots: Array<Slot> = []
        const progress = { at: Date.now() }
        const messages = feed.items
        // Slots not yet reached hold undefined: pending like `Pending`.
        const pendingIndices = () => {
          const indices: Array<number> = []
          for (let i = 0; i < messages.length; i++) if (slots[i] === Pending || slots[i] === undefined) indices.push(i)
          return indices
        }
        /** Decides every slot still open, once the feed has ended. */
        const giveUp = (decide: (index: number, inFlight: boolean) => Slot) =>
          Effect.map(ended(feed), () => {
            for (let i = 0; i < messages.length; i++) {
              const slot = slots[i]
              if (slot === InFlight || slot === Pending || slot === undefined) slots[i] = decide(i, slot === InFlight)
            }
          })
        // The first round streams the feed; later rounds resend what a closed channel left unsent.
        let streaming = true
        while (true) {
          if (streaming && feed.ended && messages.length === 0) break
          const indices = streaming ? undefined : pendingIndices()
          if (indices !== undefined && indices.length === 0) break
          const idleFor = Date.now() - progress.at
          if (idleFor >= timeoutMs) {
            yield* giveUp((i, inFlight) => timedOut(messages[i], inFlight))
            break
          }
          const target = yield* Effect.either(acquireSink(Duration.millis(timeoutMs - idleFor)))
          if (Either.isLeft(target)) {
            const unavailable = target.left
            yield* giveUp(() => unavailable)
            break
          }
          const finished = yield* round(target.right, feed, indices, Math.max(1, window), slots, progress)
          streaming = false
          if (!finished) {
            yield* giveUp((i, inFlight) => timedOut(messages[i], inFlight))
            break
          }
        }
        // Only a confirm makes a success; a slot left undecided is reported as a timeout.
        return messages.map((_, i): Outcome => {
          const slot = slots[i]
          return slot === Ok
            ? undefined
            : slot === Pending || slot === InFlight || slot === undefined
            ? timedOut(messages[i], slot === InFlight)
            : slot
        })
      })

    const timedOut = (message: OutMessage | undefined, ambiguous: boolean) =>
      new PublishRejected({
        topic: message?.topic ?? "",
        messageId: message?.messageId ?? "",
        reason: "timeout",
        ambiguous,
        detail: ambiguous
          ? `no confirm within ${timeoutMs} ms (the connection may be half-open)`
          : `not sent: no usable channel within ${timeoutMs} ms`
      })

    const close = (timeout: Duration.Duration) =>
      Effect.suspend(() => {
        const current = sink
        sink = undefined
        if (current === undefined || current.closed !== undefined) return Effect.void
        return closeChannel(current.channel, timeout, manager, "the publish channel")
      })

    /** One message as `publish` would send it, without its retry loop while the channel is open. */
    const publishOne = (message: OutMessage): Effect.Effect<Outcome> =>
      Effect.suspend(() => {
        const current = sink
        const general = () => Effect.map(publish(Feed.of([message]), 1), (outcomes) => outcomes[0])
        if (current === undefined || current.closed !== undefined) return general()
        const slots: Array<Slot> = [Pending]
        return Effect.flatMap(
          round(current, Feed.of([message]), [0], 1, slots, { at: Date.now() }),
          (finished): Effect.Effect<Outcome> => {
            const slot = slots[0]
            if (slot === Ok) return Effect.succeed(undefined)
            // Not taken by a channel that closed meanwhile: the general path opens another.
            if (slot === Pending) return general()
            if (!finished || slot === InFlight || slot === undefined) return Effect.succeed(timedOut(message, true))
            return Effect.succeed(slot)
          }
        )
      })

    return { publish, publishOne, close } satisfies Publisher
  })
