/**
 * The in-memory transport kernel: a topic exchange with durable group queues in one process,
 * with RabbitMQ's semantics (bindings and queues outlive consumers, competing consumers,
 * requeue at the head on interruption, priorities with `maxPriority`, per-message TTL counted in
 * the queue). Plain mutable state and worker fibers started on demand (no fiber per message),
 * because it backs tests and single-process apps that move many messages. What it guarantees:
 *
 * - Consistent at every instant: every state change is synchronous JavaScript, so the counters
 *   and queues never show a half-made move, whatever fiber looks.
 * - One place per message and group: a message routed to a group is in exactly one of ready (its
 *   queue), in flight (handed to a worker, including one not yet started or parked and about to
 *   resume), delayed (a publish delay or a retry delay), acked, dead-lettered or expired; so
 *   `ready + inFlight + delayed + acked + deadLettered + expired` equals what was routed to the
 *   group. A Retry moves it from in flight back to ready or delayed; a redrive from dead to ready.
 * - Routing: exact and wildcard bindings (`*` one word, `#` zero or more); a message no group is
 *   bound to is refused `unroutable`, nothing stored. A group redeclared with another
 *   `maxPriority` is refused, as RabbitMQ refuses it.
 * - Order: FIFO per priority level, the highest level first (without `maxPriority` every message
 *   is on one level; priorities clamp to `0..maxPriority`). An interrupted delivery goes back to
 *   the head of its level, flagged redelivered, the most recently requeued first; a retry and a
 *   redriven dead letter go to the tail.
 * - Expiration: the TTL counts from the moment the message first enters the queue (its publish,
 *   or the end of its delay); its retries and requeues keep that deadline, so a retry never
 *   outlives the message. It is checked when the head is taken: an expired message is dropped and
 *   counted, never delivered; one behind a live head waits, counted as ready.
 * - Concurrency: a consumer runs at most `concurrency` workers, each with at most one message, so
 *   at most `concurrency` handlers; prefetch is not modelled (there is no round trip to hide).
 * - Consumers: a ready message is handed to the group's consumers in round-robin order among those
 *   with a parked worker or a free slot; a worker that finishes takes the next ready message itself
 *   (after yielding once when the group has other consumers), so under a backlog each consumer
 *   takes as fast as it handles.
 * - A taken message is settled: a worker is interruptible only inside `handle` and while parked.
 *   An interrupted `handle` requeues at the head; a message handed to a worker interrupted before
 *   it started or while parked goes back to the head too; a defect in `handle` (which must not
 *   fail) dead-letters it rather than spin.
 * - Settlement: `Ack` counts it; `Retry` re-enqueues it with `attempt + 1`, at once or on a timer
 *   owned by the broker (it outlives the consumer that scheduled it); `DeadLetter` records it.
 * - Shutdown: a closing consumer leaves the group at once (takes nothing more), waits for its
 *   in-flight messages up to `shutdownTimeout`, then its fibers are interrupted (requeued). Once
 *   the broker's scope closes, publishes fail `BrokerUnavailable`, nothing more is dispatched,
 *   and pending timers (delayed messages) end with it.
 * - Time: every delay, retry and expiry reads the `Clock` captured when the broker is made, so
 *   `TestClock` (or any `Clock`) drives them.
 * - `publishAll` publishes one by one: the window and packing change nothing in one process.
 *
 * Checked by `test/broker/memoryTransport.stress.test.ts` (the conservation above at every step
 * of seeded interleavings, per-message outcomes, queue order against a model, round-robin).
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberSet from "effect/FiberSet"
import type * as Scope from "effect/Scope"
import type * as Broker from "../../Broker.js"
import { BrokerUnavailable, DeclareConflict, PublishRejected } from "../../BrokerError.js"
import type * as BrokerTransport from "../../BrokerTransport.js"
import { mapBatch, oversize } from "../broker.js"
import * as names from "../names.js"
import * as queue from "./queue.js"

/** @internal */
export interface Options {
  readonly maxMessageBytes: number
  readonly shutdownTimeout: Duration.Duration
  readonly publishedLimit: number
}

/** A message waiting in (or travelling to) one group's queue. */
interface Entry {
  readonly message: BrokerTransport.TransportMessage
  readonly attempt: number
  readonly redelivered: boolean
  /** Epoch ms after which the message is dropped instead of delivered; set when it enters the queue. */
  expiresAt: number | undefined
}

/** A worker fiber parked until a message is handed to it. */
interface Waiter {
  readonly resume: (entry: Entry) => void
  /** Set when an entry was handed over, so an interrupted waiter can give it back. */
  handed: Entry | undefined
}

/**
 * One subscription. Its workers (fibers, started on demand up to `concurrency`) pull from the
 * group's queue; a parked worker receives new messages directly. A backlog therefore costs no
 * fiber per message and no scheduling hop between messages.
 */
interface Consumer {
  readonly concurrency: number
  readonly handle: (delivery: BrokerTransport.TransportDelivery) => Effect.Effect<BrokerTransport.Disposition>
  readonly run: (effect: Effect.Effect<void>, options: typeof scheduled) => Fiber.RuntimeFiber<void>
  readonly idle: Array<Waiter>
  workers: number
  inFlight: number
  closing: boolean
  drained: Deferred.Deferred<void> | undefined
}

/** Start forked fibers on the scheduler, never inside the caller's stack. */
const scheduled = { immediate: false } as const

/** @internal */
export interface DeadLetterRecord {
  readonly group: string
  readonly message: BrokerTransport.TransportMessage
  readonly reason: string
  readonly attempt: number
  readonly at: number
}

/** @internal */
export interface PublishedRecord {
  readonly message: BrokerTransport.TransportMessage
  readonly groups: ReadonlyArray<string>
}

interface Group {
  readonly name: string
  readonly maxPriority: number | undefined
  readonly patterns: Set<string>
  readonly ready: queue.ReadyQueue<Entry>
  readonly consumers: Array<Consumer>
  readonly deadLetters: Array<DeadLetterRecord>
  next: number
  inFlight: number
  delayed: number
  acked: number
  retried: number
  expired: number
}

/** @internal */
export interface GroupStats {
  readonly group: string
  /** Topics and patterns bound to the queue. */
  readonly patterns: ReadonlyArray<string>
  readonly maxPriority: number | undefined
  readonly consumers: number
  /** Waiting for a consumer. */
  readonly ready: number
  /** Delivered, not yet settled. */
  readonly inFlight: number
  /** Waiting for a publish delay or a retry delay to elapse. */
  readonly delayed: number
  readonly acked: number
  readonly retried: number
  readonly expired: number
  readonly deadLettered: number
}

/** @internal */
export interface MemoryTransport {
  readonly transport: BrokerTransport.Transport
  readonly published: () => ReadonlyArray<PublishedRecord>
  readonly deadLetters: (group: string) => ReadonlyArray<DeadLetterRecord>
  readonly stats: () => ReadonlyArray<GroupStats>
  readonly statsOf: (group: string) => GroupStats | undefined
  readonly awaitIdle: Effect.Effect<void>
}

const routeCacheLimit = 10_000

/** @internal */
export const make = (options: Options): Effect.Effect<MemoryTransport, never, Scope.Scope> =>
  Effect.gen(function*() {
    const clock: Clock.Clock = yield* Effect.clock
    const now = () => clock.unsafeCurrentTimeMillis()
    // Timers (publish delays, retry delays) belong to the broker, not to a consumer: a retry
    // scheduled by a consumer that stops still lands in its group's queue, as in RabbitMQ.
    const runTimer = yield* FiberSet.makeRuntime<never, void, never>()

    const groups = new Map<string, Group>()
    const exactBindings = new Map<string, Set<Group>>()
    const wildcardBindings: Array<{ readonly pattern: string; readonly group: Group }> = []
    const routeCache = new Map<string, ReadonlyArray<Group>>()
    const published = new queue.Deque<PublishedRecord>()
    let idleWaiters: Array<Deferred.Deferred<void>> = []
    let consumerCount = 0
    let closed = false

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
      })
    )

    // -----------------------------------------------------------------------------------------
    // topology
    // -----------------------------------------------------------------------------------------

    const declare = (
      name: string,
      maxPriority: number | undefined
    ): Effect.Effect<Group, BrokerUnavailable | DeclareConflict> => {
      const existing = groups.get(name)
      if (existing !== undefined) {
        if (existing.maxPriority === maxPriority) return Effect.succeed(existing)
        // As RabbitMQ (406 PRECONDITION_FAILED): a queue cannot be redeclared with other arguments.
        return Effect.fail(
          new DeclareConflict({
            group: name,
            detail:
              `PRECONDITION_FAILED - group "${name}" exists with maxPriority ${existing.maxPriority ?? "none"}, ` +
              `cannot subscribe with maxPriority ${maxPriority ?? "none"}`
          })
        )
      }
      const group: Group = {
        name,
        maxPriority,
        patterns: new Set(),
        ready: maxPriority === undefined ? queue.fifo() : queue.prioritized(maxPriority),
        consumers: [],
        deadLetters: [],
        next: 0,
        inFlight: 0,
        delayed: 0,
        acked: 0,
        retried: 0,
        expired: 0
      }
      groups.set(name, group)
      return Effect.succeed(group)
    }

    const bind = (group: Group, pattern: string) => {
      if (group.patterns.has(pattern)) return
      group.patterns.add(pattern)
      if (pattern.split(".").some((word) => word === "*" || word === "#")) {
        wildcardBindings.push({ pattern, group })
      } else {
        const bound = exactBindings.get(pattern)
        if (bound === undefined) exactBindings.set(pattern, new Set([group]))
        else bound.add(group)
      }
      routeCache.clear()
    }

    const route = (routingKey: string): ReadonlyArray<Group> => {
      const cached = routeCache.get(routingKey)
      if (cached !== undefined) return cached
      const matched = new Set<Group>(exactBindings.get(routingKey))
      for (const binding of wildcardBindings) {
        if (!matched.has(binding.group) && names.matchesPattern(binding.pattern, routingKey)) matched.add(binding.group)
      }
      const result = Array.from(matched)
      if (routeCache.size >= routeCacheLimit) routeCache.clear()
      routeCache.set(routingKey, result)
      return result
    }

    // -----------------------------------------------------------------------------------------
    // queues, delivery, settlement
    // -----------------------------------------------------------------------------------------

    const priorityOf = (entry: Entry) => entry.message.priority ?? 0

    const enqueue = (group: Group, entry: Entry) => {
      // A retry carries its message's deadline; anything else starts it here.
      if (entry.expiresAt === undefined && entry.message.expiration !== undefined) {
        entry.expiresAt = now() + entry.message.expiration
      }
      group.ready.push(entry, priorityOf(entry))
      dispatch(group)
    }

    const enqueueAt = (group: Group, entry: Entry, dueAt: number) => {
      group.delayed++
      runTimer(
        Effect.suspend(() => clock.sleep(Duration.millis(Math.max(0, dueAt - now())))).pipe(
          Effect.zipRight(Effect.sync(() => {
            group.delayed--
            enqueue(group, entry)
            checkIdle()
          }))
        ),
        scheduled
      )
    }

    /** Next consumer, round-robin, that has a parked worker or may start one. */
    const nextConsumer = (group: Group): Consumer | undefined => {
      const count = group.consumers.length
      for (let i = 0; i < count; i++) {
        const index = (group.next + i) % count
        const consumer = group.consumers[index]
        if (consumer !== undefined && (consumer.idle.length > 0 || consumer.workers < consumer.concurrency)) {
          group.next = (index + 1) % count
          return consumer
        }
      }
      return undefined
    }

    /** Takes the next live message off the ready queue, dropping expired ones (as RabbitMQ does at the head). */
    const takeReady = (group: Group): Entry | undefined => {
      while (group.ready.size > 0) {
        const entry = group.ready.shift()
        if (entry === undefined) return undefined
        if (entry.expiresAt !== undefined && entry.expiresAt <= now()) {
          group.expired++
          continue
        }
        return entry
      }
      return undefined
    }

    const dispatch = (group: Group): void => {
      if (closed) return
      while (group.ready.size > 0) {
        const consumer = nextConsumer(group)
        if (consumer === undefined) return
        const entry = takeReady(group)
        if (entry === undefined) return
        assign(group, consumer, entry)
      }
    }

    const assign = (group: Group, consumer: Consumer, entry: Entry) => {
      consumer.inFlight++
      group.inFlight++
      const waiter = consumer.idle.pop()
      if (waiter !== undefined) {
        waiter.handed = entry
        waiter.resume(entry)
      } else {
        spawn(group, consumer, entry)
      }
    }

    /**
     * Starts a worker with its first message. A worker interrupted before it started (its
     * subscription closed in between) never saw the message: the observer gives it back.
     */
    const spawn = (group: Group, consumer: Consumer, first: Entry) => {
      consumer.workers++
      let started = false
      const fiber = consumer.run(
        Effect.uninterruptible(Effect.suspend(() => {
          started = true
          return worker(group, consumer, first)
        })),
        scheduled
      )
      fiber.addObserver(() => {
        consumer.workers--
        if (!started) {
          release(group, consumer)
          requeue(group, first)
          checkIdle()
        }
      })
    }

    /** A delivery of `consumer` is settled or given back. */
    const release = (group: Group, consumer: Consumer) => {
      consumer.inFlight--
      group.inFlight--
      if (consumer.closing && consumer.inFlight === 0 && consumer.drained !== undefined) {
        Deferred.unsafeDone(consumer.drained, Exit.void)
      }
    }

    const process = (group: Group, consumer: Consumer, entry: Entry): Effect.Effect<void> =>
      Effect.interruptible(
        consumer.handle({ message: entry.message, attempt: entry.attempt, redelivered: entry.redelivered })
      ).pipe(Effect.onExit((exit) => settle(group, consumer, entry, exit)))

    /** Parks the worker until `assign` hands it a message; an interrupted park returns a handed message. */
    const park = (group: Group, consumer: Consumer): Effect.Effect<Entry> =>
      Effect.async<Entry>((resume) => {
        const waiter: Waiter = { resume: (entry) => resume(Effect.succeed(entry)), handed: undefined }
        consumer.idle.push(waiter)
        return Effect.sync(() => {
          const index = consumer.idle.indexOf(waiter)
          if (index >= 0) consumer.idle.splice(index, 1)
          if (waiter.handed !== undefined) {
            release(group, consumer)
            requeue(group, waiter.handed)
            checkIdle()
          }
        })
      })

    const worker = (group: Group, consumer: Consumer, first: Entry): Effect.Effect<void> =>
      Effect.gen(function*() {
        let entry: Entry | undefined = first
        while (entry !== undefined) {
          yield* process(group, consumer, entry)
          if (consumer.closing || closed) break
          // Competing consumers: give the others a turn before taking the next message (fairness,
          // as RabbitMQ's round-robin); a lone consumer keeps going without a scheduling hop.
          if (group.consumers.length > 1) yield* Effect.yieldNow()
          if (consumer.closing || closed) break
          entry = takeReady(group)
          if (entry !== undefined) {
            consumer.inFlight++
            group.inFlight++
          } else {
            entry = yield* Effect.interruptible(park(group, consumer))
          }
        }
      }).pipe(
        // Only the handler and the park are interruptible: a message taken is always settled.
        Effect.uninterruptible
      )

    const requeue = (group: Group, entry: Entry) => {
      group.ready.pushFront({ ...entry, redelivered: true }, priorityOf(entry))
      dispatch(group)
    }

    const deadLetter = (group: Group, entry: Entry, reason: string) => {
      group.deadLetters.push({ group: group.name, message: entry.message, reason, attempt: entry.attempt, at: now() })
    }

    const settle = (
      group: Group,
      consumer: Consumer,
      entry: Entry,
      exit: Exit.Exit<BrokerTransport.Disposition>
    ): Effect.Effect<void> => {
      release(group, consumer)
      let log: Effect.Effect<void> = Effect.void
      if (Exit.isSuccess(exit)) {
        const disposition = exit.value
        switch (disposition._tag) {
          case "Ack": {
            group.acked++
            break
          }
          case "Retry": {
            group.retried++
            const retry: Entry = {
              message: entry.message,
              attempt: entry.attempt + 1,
              redelivered: false,
              expiresAt: entry.expiresAt
            }
            if (disposition.delay > 0) enqueueAt(group, retry, now() + disposition.delay)
            else enqueue(group, retry)
            break
          }
          case "DeadLetter": {
            deadLetter(group, entry, disposition.reason)
            break
          }
        }
      } else if (Cause.isInterruptedOnly(exit.cause)) {
        // Interrupted (shutdown): back to the head of the queue, flagged as a redelivery.
        requeue(group, entry)
      } else {
        // `handle` never fails by contract; dead-letter rather than spin on a bug.
        const detail = Cause.pretty(exit.cause)
        deadLetter(group, entry, `the delivery handler died: ${detail.slice(0, 2000)}`)
        log = Effect.logError("in-memory broker: delivery handler died; message dead-lettered").pipe(
          Effect.annotateLogs({ group: group.name, messageId: entry.message.messageId }),
          Effect.zipRight(Effect.logError(exit.cause))
        )
      }
      checkIdle()
      return log
    }

    // -----------------------------------------------------------------------------------------
    // idleness (inspection)
    // -----------------------------------------------------------------------------------------

    /** Nothing in flight, nothing delayed, and no queue with a consumer holds a message. */
    const isIdle = (): boolean => {
      for (const group of groups.values()) {
        if (group.inFlight > 0 || group.delayed > 0) return false
        if (group.consumers.length > 0 && group.ready.size > 0) return false
      }
      return true
    }

    const checkIdle = () => {
      if (idleWaiters.length === 0 || !isIdle()) return
      const waiters = idleWaiters
      idleWaiters = []
      for (const waiter of waiters) Deferred.unsafeDone(waiter, Exit.void)
    }

    const awaitIdle: Effect.Effect<void> = Effect.suspend(() => {
      if (isIdle()) return Effect.void
      const waiter = Deferred.unsafeMake<void>(FiberId.none)
      idleWaiters.push(waiter)
      return Deferred.await(waiter)
    })

    // -----------------------------------------------------------------------------------------
    // the port
    // -----------------------------------------------------------------------------------------

    const publishNow = (
      message: BrokerTransport.TransportMessage
    ): Either.Either<void, BrokerUnavailable | PublishRejected> => {
      if (closed) {
        return Either.left(new BrokerUnavailable({ reason: "closed", detail: "the in-memory broker was shut down" }))
      }
      const rejected = oversize(message, options.maxMessageBytes)
      if (rejected !== undefined) return Either.left(rejected)
      const targets = route(message.routingKey)
      if (targets.length === 0) {
        return Either.left(
          new PublishRejected({
            topic: message.routingKey,
            messageId: message.messageId,
            reason: "unroutable",
            ambiguous: false,
            detail: "no group is bound to this topic (subscribe once to declare the group's queue)"
          })
        )
      }
      if (options.publishedLimit > 0) {
        published.push({ message, groups: targets.map((group) => group.name) })
        if (published.size > options.publishedLimit) published.shift()
      }
      const delay = message.delay ?? 0
      const dueAt = delay > 0 ? now() + delay : 0
      for (const group of targets) {
        const entry: Entry = { message, attempt: 1, redelivered: false, expiresAt: undefined }
        if (delay > 0) enqueueAt(group, entry, dueAt)
        else enqueue(group, entry)
      }
      return Either.void
    }

    const publish: BrokerTransport.Transport["publish"] = (message) => Effect.suspend(() => publishNow(message))

    const publishAll: BrokerTransport.Transport["publishAll"] = (batch) =>
      Effect.sync(() => mapBatch(batch, publishNow))

    const stopConsumer = (group: Group, consumer: Consumer) =>
      Effect.gen(function*() {
        const drained = Deferred.unsafeMake<void>(FiberId.none)
        const inFlight = yield* Effect.sync(() => {
          consumer.closing = true
          consumer.drained = drained
          const index = group.consumers.indexOf(consumer)
          if (index >= 0) group.consumers.splice(index, 1)
          if (group.next >= group.consumers.length) group.next = 0
          consumerCount--
          return consumer.inFlight
        })
        if (inFlight > 0) {
          const finished = yield* Deferred.await(drained).pipe(
            Effect.interruptible,
            Effect.timeoutOption(options.shutdownTimeout),
            Effect.withClock(clock)
          )
          if (finished._tag === "None") {
            yield* Effect.logWarning(
              `in-memory broker: ${consumer.inFlight} handler(s) still running after the shutdown timeout; interrupting them, their messages are requeued`
            ).pipe(Effect.annotateLogs({ group: group.name }))
          }
        }
        checkIdle()
      })

    const consume: BrokerTransport.Transport["consume"] = (subscription, handle) =>
      Effect.gen(function*() {
        if (closed) {
          return yield* new BrokerUnavailable({ reason: "closed", detail: "the in-memory broker was shut down" })
        }
        const group = yield* declare(subscription.group, subscription.maxPriority)
        bind(group, subscription.pattern)
        // Handlers run in this subscription's scope: closing it interrupts whatever outlived the
        // graceful wait (the finalizer below runs first, finalizers run in reverse order).
        const run = yield* FiberSet.makeRuntime<never, void, never>()
        const consumer: Consumer = {
          concurrency: subscription.concurrency,
          handle,
          run,
          idle: [],
          workers: 0,
          inFlight: 0,
          closing: false,
          drained: undefined
        }
        yield* Effect.addFinalizer(() => stopConsumer(group, consumer))
        group.consumers.push(consumer)
        consumerCount++
        dispatch(group)
      })

    const declareOnly: NonNullable<BrokerTransport.Transport["declare"]> = (subscription) =>
      Effect.suspend(() => {
        if (closed) return new BrokerUnavailable({ reason: "closed", detail: "the in-memory broker was shut down" })
        return Effect.map(declare(subscription.group, subscription.maxPriority), (group) => {
          bind(group, subscription.pattern)
        })
      })

    const health: Effect.Effect<Broker.Health> = Effect.sync(() => ({
      status: closed ? "down" : "up",
      connection: closed ? "closed" : "open",
      consumers: consumerCount,
      detail: closed ? "in-memory broker shut down" : `in-memory broker, ${groups.size} group(s)`
    }))

    const statsOf = (group: Group): GroupStats => ({
      group: group.name,
      patterns: Array.from(group.patterns),
      maxPriority: group.maxPriority,
      consumers: group.consumers.length,
      ready: group.ready.size,
      inFlight: group.inFlight,
      delayed: group.delayed,
      acked: group.acked,
      retried: group.retried,
      expired: group.expired,
      deadLettered: group.deadLetters.length
    })

    /** Oldest first, back into the group's queue from attempt 1, as RabbitMQ's redrive does. */
    const redrive = (name: string, max: number): Effect.Effect<number> =>
      Effect.sync(() => {
        const group = groups.get(name)
        if (group === undefined) return 0
        const moved = group.deadLetters.splice(0, Math.min(max, group.deadLetters.length))
        for (const dead of moved) {
          enqueue(group, { message: dead.message, attempt: 1, redelivered: false, expiresAt: undefined })
        }
        return moved.length
      })

    const transport: BrokerTransport.Transport = {
      publish,
      publishAll,
      consume,
      declare: declareOnly,
      redrive,
      health,
      capabilities: {
        name: "memory",
        delay: true,
        priority: true,
        expiration: true,
        wildcards: true,
        // Nothing to save in one process: packed batches are delivered one by one.
        packedContentType: undefined,
        transient: true,
        redrive: true,
        maxMessageBytes: options.maxMessageBytes
      }
    }

    return {
      transport,
      published: () => published.toArray(),
      deadLetters: (name) => groups.get(name)?.deadLetters.slice() ?? [],
      stats: () => Array.from(groups.values(), statsOf),
      statsOf: (name) => {
        const group = groups.get(name)
        return group === undefined ? undefined : statsOf(group)
      },
      awaitIdle
    }
  })
