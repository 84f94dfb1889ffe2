/**
 * A subscription: the group's durable pull consumer, read with `fetch` pulls sized so that what
 * this subscription holds (running, waiting for a slot, and asked for) never exceeds `prefetch`;
 * at most `concurrency` handlers run. Every held message is in view, so all of them get
 * `working()` (the client's `consume()` iterator buffers messages out of reach, whose ack wait
 * then runs out behind slow handlers). A pull lasts at most 5 s, so after a reconnect the next
 * one resumes the subscription. What it guarantees:
 *
 * - Settlement after the handler: `Ack` acks; `Retry` naks with the delay (JetStream redelivers
 *   it then, to any consumer of the group, and counts the delivery); `DeadLetter` stores the dead
 *   letter, then acks. A failed store naks, so the message comes back instead of being lost.
 * - `attempt` is JetStream's delivery count: a redelivery after a crash or an ack-wait expiry
 *   counts too, so a message that kills its consumer still exhausts its retries. `redelivered`
 *   is true for a delivery this consumer did not ask for with a Retry.
 * - More than `maxDeliver` deliveries: dead-lettered without running the handler.
 * - A message held past a third of the ack wait (running or waiting for a slot) gets `working()`
 *   sent for it, so a slow handler is not redelivered to another consumer while it runs.
 * - Expired messages (past `x-eb-expiration` from entering the stream) are acked unseen; a
 *   retry is the same stream message redelivered, so it keeps that deadline.
 * - Shutdown: no new pull; messages waiting for a slot are nak'd (redelivered at once); in-flight
 *   handlers get `shutdownTimeout`, then are interrupted and their messages nak'd.
 */
import type { ConsumeCallback, ConsumerMessages, FetchMessages, JetStreamClient, JsMsg } from "@nats-io/jetstream"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Runtime from "effect/Runtime"
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
    const pullConsumer = yield* Effect.tryPromise({
      try: () => deps.js.consumers.get(deps.names.stream, durable),
      catch: (cause) => unavailable("connect", `cannot consume group ${group}`, cause)
    })
    const retried = new Map<number, number>()
    /** Every message held (running or waiting for a slot), with when it was received. */
    const held = new Map<JsMsg, number>()
    const waiting: Array<JsMsg> = []
    const batches = new Set<ConsumerMessages>()
    let requested = 0
    let running = 0
    let closing = false
    const token = {}
    deps.active.add(token)
    yield* Effect.addFinalizer(() => Effect.sync(() => deps.active.delete(token)))

    const runtime = yield* Effect.runtime<never>()
    // A fiber per delivery, settled from its observer and tracked in a plain Set (as the RabbitMQ
    // consumer does: cheaper than a FiberSet or Effect steps per message on the hot path).
    const runFork = Runtime.runFork(runtime)
    const warn = (message: string, cause: unknown): void => {
      runFork(Effect.logWarning(message, cause))
    }
    const inFlight = new Set<Fiber.RuntimeFiber<BrokerTransport.Disposition>>()
    /** Dead letters being stored: settled (acked) once stored. */
    let storing = 0
    let drained: Deferred.Deferred<void> | undefined
    const wake = yield* Effect.makeLatch(true)
    const threshold = Math.max(1, Math.ceil(subscription.prefetch / 2))

    // Acks go out together once per macrotask: the client writes to the socket once per microtask
    // in which something was sent, so acking each message on its own turn costs a write each.
    let acks: Array<JsMsg> = []
    const flushAcks = (): void => {
      const batch = acks
      acks = []
      for (const msg of batch) msg.ack()
    }
    const ack = (msg: JsMsg): void => {
      if (acks.push(msg) === 1) setImmediate(flushAcks)
    }

    /** The message is settled: free its slot, start a waiting one, let the puller ask for more. */
    const finish = (msg: JsMsg): void => {
      running--
      held.delete(msg)
      while (running < subscription.concurrency && !closing) {
        const next = waiting.shift()
        if (next === undefined) break
        start(next)
      }
      if (drained !== undefined && inFlight.size === 0 && storing === 0) Deferred.unsafeDone(drained, Effect.void)
      // Wake the puller only once a pull is worth making, not once per message.
      if (subscription.prefetch - held.size - requested >= threshold) wake.unsafeOpen()
    }

    /** Stores the dead letter, then acks; a failed store naks, so the message comes back. */
    const deadLetter = (msg: JsMsg, reason: string): void => {
      storing++
      deps.deadLetters.store(
        group,
        msg.subject,
        { stream: msg.info.stream, seq: msg.seq },
        codec.table(msg.headers),
        msg.data,
        reason,
        msg.info.deliveryCount
      ).then(() => msg.ack(), (cause: unknown) => {
        msg.nak(1000)
        warn("could not store a dead letter; the message will be delivered again", cause)
      }).finally(() => {
        storing--
        finish(msg)
      })
    }

    const settle = (msg: JsMsg, exit: Exit.Exit<BrokerTransport.Disposition>): void => {
      // Interrupted (shutdown): back to the group at once.
      if (Exit.isFailure(exit)) {
        msg.nak()
        return finish(msg)
      }
      const disposition = exit.value
      switch (disposition._tag) {
        case "Ack":
          ack(msg)
          return finish(msg)
        case "Retry":
          if (retried.size >= maxRemembered) {
            const oldest = retried.keys().next()
            if (oldest.done !== true) retried.delete(oldest.value)
          }
          retried.set(msg.seq, msg.info.deliveryCount + 1)
          msg.nak(Math.max(0, Math.round(disposition.delay)))
          return finish(msg)
        case "DeadLetter":
          return deadLetter(msg, disposition.reason)
      }
    }

    const start = (msg: JsMsg): void => {
      running++
      const decoded = codec.decode(msg)
      if (
        (decoded.redriveGroup !== undefined && decoded.redriveGroup !== group) ||
        (!planned.exact && !names.matchesPattern(subscription.pattern, msg.subject)) ||
        (decoded.expiresAt !== undefined && Date.now() > decoded.expiresAt)
      ) {
        // Not this group's (another group's redrive, outside its pattern) or expired: acked unseen.
        msg.ack()
        return finish(msg)
      }
      const count = msg.info.deliveryCount
      if (count > deps.maxDeliver) {
        return deadLetter(msg, `delivered ${count} times without being settled (maxDeliver ${deps.maxDeliver})`)
      }
      const asked = retried.get(msg.seq)
      if (asked !== undefined) retried.delete(msg.seq)
      const fiber = runFork(handle({
        message: decoded.message,
        attempt: count,
        redelivered: count > 1 && asked !== count
      }))
      inFlight.add(fiber)
      fiber.addObserver((exit) => {
        inFlight.delete(fiber)
        settle(msg, exit)
      })
    }

    const receive = (msg: JsMsg): void => {
      requested--
      if (closing) return msg.nak()
      held.set(msg, Date.now())
      if (running < subscription.concurrency) start(msg)
      else waiting.push(msg)
    }

    /**
     * One pull for `n`; its messages are dispatched as they arrive, the loop does not wait for it.
     * `fetch` honours `consume`'s `callback` (its option type omits it): each message is handed over
     * from the socket callback, without the async iterator's promise per message (a sixth less CPU
     * per message measured here). A closed fetch unsubscribes its inbox, and the server drops a
     * waiting pull whose inbox has no interest, so no pull outlives its subscription.
     */
    const pull = (n: number) =>
      Effect.suspend(() => {
        let received = 0
        const options: FetchMessages & ConsumeCallback = {
          max_messages: n,
          expires: 5_000,
          callback: (msg) => {
            received++
            receive(msg)
          }
        }
        requested += n
        return Effect.tryPromise({
          try: () => pullConsumer.fetch(options),
          catch: (cause) => {
            requested -= n
            return unavailable("connect", `cannot pull for group ${group}`, cause)
          }
        }).pipe(
          Effect.tap((batch) =>
            Effect.sync(() => {
              batches.add(batch)
              void batch.closed().then((error) => {
                batches.delete(batch)
                requested -= n - received
                wake.unsafeOpen()
                if (error instanceof Error) warn(`a pull for group ${group} ended with an error`, error)
              })
            })
          )
        )
      })

    const loop = Effect.gen(function*() {
      while (!closing) {
        const free = subscription.prefetch - held.size - requested
        if (free < threshold) {
          yield* wake.close
          if (subscription.prefetch - held.size - requested < threshold) yield* wake.await
          continue
        }
        yield* pull(free)
      }
    }).pipe(
      Effect.tapErrorCause((cause) => Effect.logWarning(`pulling for group ${group} failed; retrying`, cause)),
      Effect.retry(Schedule.spaced("1 second"))
    )
    const loopFiber = yield* Effect.forkDaemon(loop)

    // Keeps slow handlers' messages from being redelivered past the ack wait.
    const tick = Duration.toMillis(deps.ackWait) / 3
    const heartbeat = yield* Effect.forkDaemon(
      Effect.repeat(
        Effect.sync(() => {
          const now = Date.now()
          for (const [msg, since] of held) if (now - since >= tick) msg.working()
        }),
        Schedule.spaced(Duration.millis(tick))
      )
    )

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        closing = true
        yield* Fiber.interrupt(loopFiber)
        for (const batch of batches) batch.stop()
        for (const msg of waiting.splice(0)) {
          held.delete(msg)
          msg.nak()
        }
        if (inFlight.size > 0 || storing > 0) {
          const done = Deferred.unsafeMake<void>(FiberId.none)
          drained = done
          // Finalizers run uninterruptibly: the wait must be interruptible for its timeout to end it.
          yield* Effect.interruptible(Deferred.await(done)).pipe(Effect.timeout(deps.shutdownTimeout), Effect.ignore)
        }
        // Still running: interrupted, so their observers nak them.
        yield* Fiber.interruptAll(inFlight)
        yield* Fiber.interrupt(heartbeat)
      })
    )
  })
