/**
 * One subscription: a consumer (named `<host>-<pid>-<random>`) of the group on the topic stream
 * and on the group's private stream. What it guarantees:
 *
 * - Reading: its own blocking connection runs `XREADGROUP … BLOCK` on both streams, up to two
 *   reads at a time, each asking for at most half of `prefetch` and sent once a quarter of it is
 *   free; what it holds (read, not settled) plus what its reads asked for never exceeds
 *   `prefetch` per stream. Up to `concurrency` workers (started on demand) take from what it
 *   holds, in arrival order.
 * - Settling: `Ack` → `XACK` (coalesced per stream); `Retry` → the settle script acks and writes
 *   the copy (attempt + 1) to the group stream, or to the group's delayed set when it has a
 *   delay; `DeadLetter` → acked and copied to the dead-letter stream with the reason; an
 *   interrupted handler → acked and copied back to the group stream flagged redelivered. Each
 *   script writes its copy only if the entry was still pending, so a delivery another consumer
 *   settled meanwhile (after a claim) is never copied twice. A settlement that fails (connection
 *   lost) leaves the entry pending: it is claimed again later (at least once).
 * - Claiming: every `min(claimIdle / 2, 5 s)` it lists (`XPENDING IDLE`) the entries of both
 *   streams idle longer than `claimIdle` (a dead consumer's) and claims them (`XCLAIM`, which
 *   re-checks the idle time, so two consumers never both claim one), flagged redelivered and
 *   counted; one already handed out `maxDeliveries` times is dead-lettered instead (a message
 *   that kills its consumer must not kill every consumer in turn), counted as stalled.
 * - Heartbeat: what it holds for longer than `claimIdle / 4` has its idle time reset (owner
 *   checked), so a slow handler alive in this process is not claimed by another consumer; only a
 *   process stalled past `claimIdle` (event loop blocked, network cut) sees its deliveries claimed
 *   and run twice.
 * - Moving: the group's delayed entries that came due move to the group stream (atomically, by a
 *   script, so any number of consumers may run the mover); it sleeps until the next due entry, at
 *   most `pollInterval`.
 * - Trimming: every `trimInterval` both streams lose what every group has acknowledged.
 * - Expiration: an entry older (by its id time) than its `e` is acked and dropped, counted.
 * - Reconnect: a failed read is retried after a backoff; `NOGROUP` (the server lost the group:
 *   restarted without persistence, or the keys were deleted) re-declares the group from the
 *   stream's start, so messages published since are read.
 * - Shutdown: stop reading, close the reader connection, let in-flight handlers finish within
 *   `shutdownTimeout`, interrupt the rest (requeued), requeue what was read but not started,
 *   flush acks, requeue anything still pending to this consumer, and delete the consumer from
 *   the group once it owns nothing.
 */
import * as Cause from "effect/Cause"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import { hostname } from "node:os"
import type { BrokerUnavailable, DeclareConflict } from "../../BrokerError.js"
import type * as BrokerTransport from "../../BrokerTransport.js"
import * as codec from "./codec.js"
import * as connection from "./connection.js"
import type * as Keys from "./keys.js"
import * as scripts from "./scripts.js"

/** Counters shared by every subscription of a transport (health, tests). @internal */
export interface Stats {
  claimed: number
  /** Deliveries dead-lettered after `maxDeliveries` hand-outs without a settlement. */
  stalled: number
  expired: number
  requeued: number
  settleFailures: number
}

/** @internal */
export interface Context {
  readonly command: connection.Connection
  readonly endpoint: connection.Endpoint
  readonly keys: Keys.Keys
  readonly claimIdleMs: number
  readonly maxDeliveries: number
  readonly pollMs: number
  readonly trimMs: number
  readonly blockMs: number
  readonly shutdownTimeout: Duration.Duration
  readonly stats: Stats
  readonly active: Set<object>
  readonly declareGroup: (topic: string, group: string, from: "$" | "0") => Effect.Effect<void, BrokerUnavailable>
}

interface Held {
  readonly stream: string
  /** `<stream> <entry id>`: the key of `held`, made once. */
  readonly key: string
  /** What `handle` gets (an Entry is a TransportDelivery: no copy per delivery). */
  readonly entry: codec.Entry
  /** Epoch ms of the last read, claim or heartbeat. */
  touchedAt: number
  started: boolean
}

const nonce = (): string => Math.random().toString(36).slice(2, 10).padEnd(8, "0") + Date.now().toString(36).slice(-8)

/** A 16-character nonce, as the scripts expect. */
const nonce16 = (): string => nonce().padEnd(16, "0").slice(0, 16)

const isNoGroup = (error: unknown): boolean => error instanceof Error && error.message.startsWith("NOGROUP")

/** @internal */
export const consume = (ctx: Context) =>
(
  subscription: BrokerTransport.TransportSubscription,
  handle: (delivery: BrokerTransport.TransportDelivery) => Effect.Effect<BrokerTransport.Disposition>
): Effect.Effect<void, BrokerUnavailable | DeclareConflict, Scope.Scope> =>
  Effect.gen(function*() {
    const topic = subscription.pattern
    const group = subscription.group
    const topicKey = ctx.keys.topic(topic)
    const queueKey = ctx.keys.queue(group)
    const delayedKey = ctx.keys.delayed(group)
    const deadKey = ctx.keys.dead(group)
    const name = `${hostname()}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`
    const prefetch = Math.max(subscription.prefetch, subscription.concurrency)
    // Two reads of up to half the window each may be in flight: Redis serves the next while this
    // process handles the last (one read at a time left each side idle half the time). A read
    // goes out once a quarter of the window is free, so one round trip never brings one entry.
    const readSize = Math.max(1, Math.ceil(prefetch / 2))
    const readThreshold = Math.max(1, Math.floor(prefetch / 4))
    const maxReads = 2

    yield* ctx.declareGroup(topic, group, "$")
    const reader = yield* connection.make(ctx.endpoint, `eb-reader-${group}`)
    const command = ctx.command
    const clock = yield* Effect.clock
    const now = () => clock.unsafeCurrentTimeMillis()

    const held = new Map<string, Held>()
    // Read, not started, in arrival order; workers (fibers, started on demand up to
    // `concurrency`) take from it and keep going while it is not empty, so a backlog costs no
    // fiber hand-off per message.
    let pending: Array<Held> = []
    let head = 0
    const workerFibers = new Set<Fiber.RuntimeFiber<void>>()
    // Workers start with the consumer's log annotations already in their runtime: a fiber per
    // burst of deliveries, so none pays for annotating itself.
    const runWorker = Runtime.runFork(yield* annotate(Effect.runtime<never>()))
    let closing = false
    let running = 0
    let wakeReader: (() => void) | undefined
    let wakeDrained: (() => void) | undefined

    // Entries asked for by the reads in flight, and how many reads those are.
    let requested = 0
    let reads = 0
    const free = () => prefetch - held.size - requested
    const canRead = () => reads < maxReads && free() >= readThreshold

    const wake = () => {
      const resume = wakeReader
      wakeReader = undefined
      resume?.()
    }

    const release = (item: Held) => {
      held.delete(item.key)
      if (wakeReader !== undefined && canRead()) wake()
    }

    // --- acks, coalesced per stream: one XACK with every id settled in the same tick ---------
    const acks = new Map<string, Array<string>>()
    const flushing = new Set<Promise<unknown>>()
    let flushScheduled = false
    const flushAcks = () => {
      flushScheduled = false
      for (const [stream, ids] of acks) {
        acks.delete(stream)
        const sent = command.send(["XACK", stream, group, ...ids]).then(
          () => undefined,
          (error: unknown) => {
            ctx.stats.settleFailures += ids.length
            return Effect.runPromise(
              Effect.logWarning(
                `acking ${ids.length} deliveries of ${group} failed; they will be claimed again: ${
                  connection.describeError(error)
                }`
              )
            )
          }
        )
        flushing.add(sent)
        void sent.finally(() => flushing.delete(sent))
      }
    }
    const ack = (item: Held) => {
      const ids = acks.get(item.stream)
      if (ids === undefined) acks.set(item.stream, [item.entry.id])
      else ids.push(item.entry.id)
      if (!flushScheduled) {
        flushScheduled = true
        setImmediate(flushAcks)
      }
    }

    const settleScript = (
      item: Held,
      mode: "retry" | "dead" | "requeue",
      attempt: number,
      text: string,
      due: number
    ): Effect.Effect<void> =>
      Effect.tryPromise(() =>
        scripts.run(command, scripts.settle, [item.stream, queueKey, delayedKey, deadKey], [
          group,
          item.entry.id,
          mode,
          String(attempt),
          text,
          String(due),
          nonce16(),
          item.entry.message.routingKey
        ])
      ).pipe(
        Effect.asVoid,
        Effect.catchAll((error) =>
          Effect.sync(() => {
            ctx.stats.settleFailures++
          }).pipe(Effect.zipRight(
            Effect.logWarning(
              `settling a delivery of ${group} (${mode}) failed; it stays pending and will be claimed again`,
              error.error
            )
          ))
        )
      )

    const settleStalled = (stream: string, id: string, deliveries: number): Effect.Effect<void> =>
      Effect.tryPromise(() =>
        scripts.run(command, scripts.settle, [stream, queueKey, delayedKey, deadKey], [
          group,
          id,
          "stalled",
          "1",
          `delivered ${deliveries} times without being settled (its consumer crashed or stalled each time)`,
          "0",
          nonce16(),
          stream === topicKey ? topic : ""
        ])
      ).pipe(
        Effect.zipRight(Effect.logWarning(`a delivery of ${group} stalled ${deliveries} times; dead-lettered`)),
        Effect.catchAll((error) => Effect.logWarning("dead-lettering a stalled delivery failed", error.error))
      )

    /** Carries out a Retry or a DeadLetter (an Ack the worker queues itself). */
    const settleDisposition = (
      item: Held,
      disposition: Exclude<BrokerTransport.Disposition, { readonly _tag: "Ack" }>
    ): Effect.Effect<void> =>
      disposition._tag === "Retry"
        ? settleScript(
          item,
          "retry",
          item.entry.attempt + 1,
          disposition.reason,
          disposition.delay > 0 ? now() + disposition.delay : 0
        )
        : settleScript(item, "dead", item.entry.attempt, disposition.reason, 0)

    /** A handler that gave no disposition: interrupted, it is requeued; a defect dead-letters rather than spin. */
    const settleCause = (item: Held, cause: Cause.Cause<never>): Effect.Effect<void> => {
      if (Cause.isInterruptedOnly(cause)) {
        ctx.stats.requeued++
        return settleScript(item, "requeue", item.entry.attempt, "", 0)
      }
      return settleScript(item, "dead", item.entry.attempt, `defect in delivery: ${Cause.pretty(cause)}`, 0)
    }

    const settled = (item: Held): void => {
      release(item)
      if (closing && running === 0) wakeDrained?.()
    }

    /** An entry past its expiration is acked and dropped, counted, without being handled. */
    const expired = (item: Held): boolean => {
      const expiresAt = item.entry.expiresAt
      if (expiresAt === undefined || expiresAt > now()) return false
      ctx.stats.expired++
      ack(item)
      release(item)
      return true
    }

    function annotate<A, E, R>(effect: Effect.Effect<A, E, R>) {
      return Effect.annotateLogs(effect, { topic, group, consumer: name })
    }

    const take = (stream: string, raw: unknown, redelivered: boolean): number => {
      const list = codec.entries(raw, topic)
      const at = now()
      for (const entry of list) {
        const key = `${stream} ${entry.id}`
        if (held.has(key)) continue
        const item: Held = {
          stream,
          key,
          entry: redelivered ? { ...entry, redelivered: true } : entry,
          touchedAt: at,
          started: false
        }
        held.set(key, item)
        pending.push(item)
      }
      dispatch()
      return list.length
    }

    const nextPending = (): Held | undefined => {
      if (closing || head >= pending.length) return undefined
      const item = pending[head++]
      if (head === pending.length) {
        pending = []
        head = 0
      } else if (head > 1024) {
        pending = pending.slice(head)
        head = 0
      }
      return item
    }

    // A worker runs deliveries one after another in one uninterruptible region, each handler
    // interruptible (`restore`), so a settlement is never cut short. The loop is a chain of
    // continuations, not a generator and a region per delivery: per delivery one match and the
    // handler's region, and the usual outcome (Ack) needs no further effect.
    const workerLoop = (first: Held): Effect.Effect<void> =>
      Effect.uninterruptibleMask((restore) => {
        // The delivery this worker is handling (one at a time).
        let current = first
        const next = (): Effect.Effect<void> => {
          for (let item = nextPending(); item !== undefined; item = nextPending()) {
            if (!expired(item)) return start(item)
          }
          return Effect.void
        }
        const settledThenNext = Effect.suspend(() => {
          settled(current)
          return next()
        })
        const outcome = {
          onSuccess: (disposition: BrokerTransport.Disposition): Effect.Effect<void> => {
            running--
            if (disposition._tag !== "Ack") {
              return Effect.zipRight(settleDisposition(current, disposition), settledThenNext)
            }
            ack(current)
            settled(current)
            return next()
          },
          onFailure: (cause: Cause.Cause<never>): Effect.Effect<void> => {
            running--
            return Effect.zipRight(settleCause(current, cause), settledThenNext)
          }
        }
        const start = (item: Held): Effect.Effect<void> => {
          current = item
          item.started = true
          running++
          return Effect.matchCauseEffect(restore(handle(item.entry)), outcome)
        }
        return expired(first) ? next() : start(first)
      })

    function dispatch(): void {
      while (workerFibers.size < subscription.concurrency) {
        const item = nextPending()
        if (item === undefined) return
        const fiber = runWorker(workerLoop(item))
        workerFibers.add(fiber)
        fiber.addObserver(() => {
          workerFibers.delete(fiber)
          dispatch()
        })
      }
    }

    // Woken by a settled delivery (room for a read) or a finished read (its answer taken).
    const waitWake: Effect.Effect<void> = Effect.async<void>((resume) => {
      wakeReader = () => resume(Effect.void)
      return Effect.sync(() => {
        wakeReader = undefined
      })
    })

    let readFailure: { readonly error: unknown } | undefined
    const warned = { read: false }
    const read = (count: number): void => {
      reads++
      requested += count
      reader.send<unknown>([
        "XREADGROUP",
        "GROUP",
        group,
        name,
        "COUNT",
        String(count),
        "BLOCK",
        String(ctx.blockMs),
        "STREAMS",
        topicKey,
        queueKey,
        ">",
        ">"
      ]).then((reply) => {
        warned.read = false
        // Read while closing: left pending to this consumer, which the shutdown requeues.
        if (!closing) { for (const stream of codec.streams(reply)) take(stream.key, stream.entries, false) }
      }).catch((error: unknown) => {
        // A failed read, or a reply that could not be taken (what it held stays pending and is
        // claimed later): never an unhandled rejection.
        readFailure ??= { error }
      }).finally(() => {
        reads--
        requested -= count
        wake()
      })
    }

    const readLoop = Effect.gen(function*() {
      while (!closing) {
        if (readFailure === undefined) {
          if (canRead()) {
            read(Math.min(free(), readSize))
            continue
          }
          yield* waitWake
          continue
        }
        const error = readFailure.error
        readFailure = undefined
        if (isNoGroup(error)) {
          // The server lost the group (restart without persistence, keys deleted): declare it
          // again from the start of the stream, so what was published since is read.
          yield* Effect.logWarning(`group ${group} of ${topic} is gone from the server; declaring it again`)
          yield* Effect.catchAll(
            ctx.declareGroup(topic, group, "0"),
            (declareError) => Effect.logWarning("declaring the group again failed", declareError)
          )
        } else if (!warned.read) {
          warned.read = true
          yield* Effect.logWarning(`reading ${topic} for ${group} failed; retrying`, connection.describeError(error))
        }
        yield* Effect.sleep(connection.reconnectDelay(2))
      }
    })

    const claimOnce = Effect.gen(function*() {
      for (const stream of [topicKey, queueKey]) {
        // Not counting what blocked reads asked for: idle, they ask for the whole window.
        const room = prefetch - held.size
        if (room <= 0 || closing) return
        // Deliveries idle past claimIdle (their consumer died or stalled), with their delivery counts.
        const rows = yield* Effect.tryPromise(() =>
          command.send<unknown>([
            "XPENDING",
            stream,
            group,
            "IDLE",
            String(ctx.claimIdleMs),
            "-",
            "+",
            String(room)
          ])
        )
        if (!Array.isArray(rows) || rows.length === 0) continue
        const claimable: Array<string> = []
        for (const row of rows) {
          if (!Array.isArray(row)) continue
          const id = codec.asText(row[0])
          const deliveries = Number(row[3])
          if (id === undefined) continue
          if (deliveries < ctx.maxDeliveries) {
            claimable.push(id)
            continue
          }
          // Handed out maxDeliveries times and never settled (it kills or stalls its consumer):
          // dead-lettered rather than claimed forever.
          ctx.stats.stalled++
          yield* settleStalled(stream, id, deliveries)
        }
        if (claimable.length === 0) continue
        const reply = yield* Effect.tryPromise(() =>
          command.send<unknown>(["XCLAIM", stream, group, name, String(ctx.claimIdleMs), ...claimable])
        )
        const claimed = take(stream, reply, true)
        ctx.stats.claimed += claimed
        if (claimed > 0) {
          yield* Effect.logInfo(`claimed ${claimed} deliveries of ${group} idle over ${ctx.claimIdleMs} ms`)
        }
      }
    })
    const claimEvery = Math.max(50, Math.min(ctx.claimIdleMs / 2, 5000))
    const claimLoop = claimOnce.pipe(
      Effect.catchAll((error) => Effect.logDebug("claiming failed; retrying", error.error)),
      Effect.zipRight(Effect.sleep(claimEvery)),
      Effect.forever
    )

    // Every claimIdle / 4, what was last touched over claimIdle / 4 ago: idle never reaches about claimIdle / 2.
    const heartbeatEvery = Math.max(20, ctx.claimIdleMs / 4)
    const heartbeatOnce = Effect.gen(function*() {
      const at = now()
      const byStream = new Map<string, Array<Held>>()
      for (const item of held.values()) {
        if (at - item.touchedAt < heartbeatEvery) continue
        const list = byStream.get(item.stream)
        if (list === undefined) byStream.set(item.stream, [item])
        else list.push(item)
      }
      for (const [stream, items] of byStream) {
        yield* Effect.tryPromise(() =>
          scripts.run(command, scripts.touch, [stream], [group, name, ...items.map((item) => item.entry.id)])
        )
        for (const item of items) item.touchedAt = at
      }
    })
    const heartbeatLoop = Effect.sleep(heartbeatEvery).pipe(
      Effect.zipRight(heartbeatOnce),
      Effect.catchAll((error) => Effect.logDebug("heartbeat failed; retrying", error.error)),
      Effect.forever
    )

    const moveOnce = Effect.gen(function*() {
      const reply = yield* Effect.tryPromise(() =>
        scripts.run<unknown>(command, scripts.move, [delayedKey, queueKey], [String(now()), "100"])
      )
      const moved = Array.isArray(reply) ? Number(reply[0]) : 0
      const next = Array.isArray(reply) && reply[1] !== null ? Number(codec.asText(reply[1])) : undefined
      if (moved >= 100) return 0
      return next === undefined || Number.isNaN(next) ? ctx.pollMs : Math.max(1, Math.min(ctx.pollMs, next - now()))
    })
    const moveLoop = moveOnce.pipe(
      Effect.catchAll((error) =>
        Effect.as(Effect.logDebug("moving delayed entries failed; retrying", error.error), 500)
      ),
      Effect.flatMap((wait) => wait > 0 ? Effect.sleep(wait) : Effect.void),
      Effect.forever
    )

    const trimLoop = Effect.sleep(ctx.trimMs).pipe(
      Effect.zipRight(Effect.tryPromise(() =>
        Promise.all([
          scripts.run(command, scripts.trim, [topicKey], []),
          scripts.run(command, scripts.trim, [queueKey], [])
        ])
      )),
      Effect.catchAll((error) => Effect.logDebug("trimming failed; retrying", error.error)),
      Effect.forever
    )

    const loops = [
      yield* Effect.forkDaemon(annotate(readLoop)),
      yield* Effect.forkDaemon(annotate(claimLoop)),
      yield* Effect.forkDaemon(annotate(heartbeatLoop)),
      yield* Effect.forkDaemon(annotate(moveLoop)),
      yield* Effect.forkDaemon(annotate(trimLoop))
    ]
    const token = {}
    ctx.active.add(token)

    const requeuePending = Effect.gen(function*() {
      let left = 0
      for (const stream of [topicKey, queueKey]) {
        const reply = yield* Effect.tryPromise(() =>
          command.send<unknown>(["XPENDING", stream, group, "-", "+", "1000", name])
        )
        if (!Array.isArray(reply)) continue
        for (const row of reply) {
          const id = Array.isArray(row) ? codec.asText(row[0]) : undefined
          if (id === undefined) continue
          const range = yield* Effect.tryPromise(() => command.send<unknown>(["XRANGE", stream, id, id]))
          const entry = Array.isArray(range) ? codec.fromReply(range[0], topic) : undefined
          if (entry === undefined) {
            yield* Effect.tryPromise(() => command.send(["XACK", stream, group, id]))
            continue
          }
          ctx.stats.requeued++
          yield* settleScript(
            { stream, key: `${stream} ${id}`, entry, touchedAt: 0, started: false },
            "requeue",
            entry.attempt,
            "",
            0
          )
          left++
        }
      }
      return left
    })

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        closing = true
        ctx.active.delete(token)
        yield* Fiber.interruptAll(loops)
        reader.destroy()
        // What was read but not started goes back at once; handlers in flight get shutdownTimeout.
        const notStarted = pending.slice(head)
        pending = []
        head = 0
        for (const item of notStarted) {
          ctx.stats.requeued++
          yield* settleScript(item, "requeue", item.entry.attempt, "", 0)
          release(item)
        }
        if (running > 0) {
          yield* Effect.async<void>((resume) => {
            wakeDrained = () => resume(Effect.void)
            return Effect.sync(() => {
              wakeDrained = undefined
            })
          }).pipe(Effect.timeout(ctx.shutdownTimeout), Effect.ignore)
        }
        yield* Fiber.interruptAll([...workerFibers])
        flushAcks()
        yield* Effect.promise(() => Promise.all([...flushing]))
        yield* requeuePending.pipe(
          Effect.zipRight(
            Effect.tryPromise(() =>
              Promise.all(
                [topicKey, queueKey].map((stream) =>
                  command.send<unknown>(["XPENDING", stream, group, "-", "+", "1", name])
                )
              )
            )
          ),
          Effect.flatMap((rest) =>
            rest.every((reply) => Array.isArray(reply) && reply.length === 0)
              ? Effect.tryPromise(() =>
                Promise.all(
                  [topicKey, queueKey].map((stream) => command.send(["XGROUP", "DELCONSUMER", stream, group, name]))
                )
              )
              : Effect.void
          ),
          Effect.catchAll((error) =>
            Effect.logWarning(
              `releasing consumer ${name} of ${group} failed; its pending deliveries will be claimed by others`,
              error.error
            )
          )
        )
      }).pipe(annotate)
    )
  })
