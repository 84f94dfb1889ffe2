/**
 * A subscription: the group's durable pull consumer, read through the client's `consume()`
 * iterator (it re-issues pulls after a reconnect, so consumers resume on their own). A message is
 * taken from the iterator only when a handler slot is free, so at most `concurrency` run and the
 * client buffers about `prefetch` more. What it guarantees:
 *
 * - Settlement after the handler: `Ack` acks; `Retry` naks with the delay (JetStream redelivers
 *   it then, to any consumer of the group, and counts the delivery); `DeadLetter` stores the dead
 *   letter, then acks. A failed store naks, so the message comes back instead of being lost.
 * - `attempt` is JetStream's delivery count: a redelivery after a crash or an ack-wait expiry
 *   counts too, so a message that kills its consumer still exhausts its retries. `redelivered`
 *   is true for a delivery this consumer did not ask for with a Retry.
 * - More than `maxDeliver` deliveries: dead-lettered without running the handler.
 * - A handler running past a third of the ack wait gets `working()` sent for it, so a slow
 *   handler is not redelivered to another consumer while it runs.
 * - Expired messages (past `x-eb-expiration` from entering the stream) are acked unseen.
 * - Shutdown: no new message is taken; in-flight handlers get `shutdownTimeout`, then are
 *   interrupted and their messages nak'd (redelivered at once); buffered ones are nak'd.
 */
import type { ConsumerMessages, JetStreamClient, JsMsg } from "@nats-io/jetstream"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type { BrokerUnavailable, DeclareConflict } from "../../BrokerError.js"
import type * as BrokerTransport from "../../BrokerTransport.js"
import * as names from "../names.js"
import * as codec from "./codec.js"
import { unavailable } from "./connection.js"
import type * as deadLetters from "./deadLetters.js"
import * as subjects from "./subjects.js"
import type * as topology from "./topology.js"

/** @internal */
export interface ConsumerDeps {
  readonly js: JetStreamClient
  readonly topology: topology.Topology
  readonly deadLetters: deadLetters.DeadLetters
  readonly names: subjects.Names
  readonly ackWait: Duration.Duration
  readonly maxDeliver: number
  readonly shutdownTimeout: Duration.Duration
  /** Attached subscriptions, for health. */
  readonly active: Set<object>
}

/** Sequences this process retried, to tell their redelivery from a crash's; bounded. */
const maxRemembered = 100_000

/** @internal */
export const consume = (
  deps: ConsumerDeps,
  subscription: BrokerTransport.TransportSubscription,
  handle: (delivery: BrokerTransport.TransportDelivery) => Effect.Effect<BrokerTransport.Disposition>
): Effect.Effect<void, BrokerUnavailable | DeclareConflict, Scope.Scope> =>
  Effect.gen(function*() {
    const { group } = subscription
    const planned = yield* deps.topology.declareGroup(group, subscription.pattern)
    const durable = subjects.durableOf(group)
    const messages = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const consumer = await deps.js.consumers.get(deps.names.stream, durable)
          return consumer.consume({ max_messages: subscription.prefetch })
        },
        catch: (cause) => unavailable("connect", `cannot consume group ${group}`, cause)
      }),
      (messages: ConsumerMessages) => Effect.promise(() => messages.close().then(() => undefined, () => undefined))
    )
    const iterator = messages[Symbol.asyncIterator]()
    const retried = new Map<number, number>()
    const inFlight = new Map<JsMsg, number>()
    let closing = false
    const token = {}
    deps.active.add(token)
    yield* Effect.addFinalizer(() => Effect.sync(() => deps.active.delete(token)))

    const deadLetter = (msg: JsMsg, raw: Record<string, string>, reason: string) =>
      deps.deadLetters.store(
        group,
        msg.subject,
        { stream: msg.info.stream, seq: msg.seq },
        raw,
        msg.data,
        reason,
        msg.info.deliveryCount
      ).then(() => msg.ack(), (cause: unknown) => {
        // Not stored: let JetStream deliver it again rather than lose it.
        msg.nak(1000)
        throw cause
      })

    const settle = (msg: JsMsg, disposition: BrokerTransport.Disposition): Effect.Effect<void> => {
      switch (disposition._tag) {
        case "Ack":
          return Effect.sync(() => msg.ack())
        case "Retry":
          return Effect.sync(() => {
            if (retried.size >= maxRemembered) {
              const oldest = retried.keys().next()
              if (oldest.done !== true) retried.delete(oldest.value)
            }
            retried.set(msg.seq, msg.info.deliveryCount + 1)
            msg.nak(Math.max(0, Math.round(disposition.delay)))
          })
        case "DeadLetter":
          return Effect.tryPromise(() => deadLetter(msg, codec.table(msg.headers), disposition.reason)).pipe(
            Effect.catchAll((error) =>
              Effect.logWarning("could not store a dead letter; the message will be delivered again", error)
            )
          )
      }
    }

    const run = (msg: JsMsg): Effect.Effect<void> => {
      const decoded = codec.decode(msg)
      if (
        (decoded.redriveGroup !== undefined && decoded.redriveGroup !== group) ||
        (!planned.exact && !names.matchesPattern(subscription.pattern, msg.subject))
      ) return Effect.sync(() => msg.ack())
      if (decoded.expiresAt !== undefined && Date.now() > decoded.expiresAt) return Effect.sync(() => msg.ack())
      const count = msg.info.deliveryCount
      if (count > deps.maxDeliver) {
        return settle(msg, {
          _tag: "DeadLetter",
          reason: `delivered ${count} times without being settled (maxDeliver ${deps.maxDeliver})`
        })
      }
      const asked = retried.get(msg.seq)
      if (asked !== undefined) retried.delete(msg.seq)
      const delivery: BrokerTransport.TransportDelivery = {
        message: decoded.message,
        attempt: count,
        redelivered: count > 1 && asked !== count
      }
      return Effect.sync(() => inFlight.set(msg, Date.now())).pipe(
        Effect.zipRight(handle(delivery)),
        Effect.flatMap((disposition) => settle(msg, disposition)),
        Effect.onExit((exit) =>
          Effect.sync(() => {
            inFlight.delete(msg)
            // Interrupted (shutdown): back to the group at once.
            if (Exit.isInterrupted(exit)) msg.nak()
          })
        )
      )
    }

    const handlers = yield* FiberSet.make<void, never>()
    const slots = yield* Effect.makeSemaphore(subscription.concurrency)

    const loop = Effect.gen(function*() {
      while (true) {
        yield* slots.take(1)
        const next = yield* Effect.promise(() => iterator.next())
        if (next.done === true) return
        const msg = next.value
        if (closing) {
          msg.nak()
          yield* slots.release(1)
          continue
        }
        yield* FiberSet.run(handlers, Effect.ensuring(run(msg), slots.release(1)))
      }
    })
    const loopFiber = yield* Effect.forkDaemon(loop)

    // Keeps slow handlers' messages from being redelivered past the ack wait.
    const tick = Duration.toMillis(deps.ackWait) / 3
    const heartbeat = yield* Effect.forkDaemon(
      Effect.repeat(
        Effect.sync(() => {
          const now = Date.now()
          for (const [msg, since] of inFlight) if (now - since >= tick) msg.working()
        }),
        Schedule.spaced(Duration.millis(tick))
      )
    )

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        closing = true
        // Stop pulling; the iterator ends after what it holds (nak'd by the loop).
        yield* Effect.promise(() => messages.close().then(() => undefined, () => undefined)).pipe(
          Effect.timeout(deps.shutdownTimeout),
          Effect.ignore
        )
        yield* FiberSet.awaitEmpty(handlers).pipe(Effect.timeout(deps.shutdownTimeout), Effect.ignore)
        yield* Fiber.interrupt(loopFiber)
        yield* FiberSet.clear(handlers)
        yield* Fiber.interrupt(heartbeat)
      })
    )
  })
