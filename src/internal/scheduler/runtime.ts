import type * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberHandle from "effect/FiberHandle"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import type * as Scheduler from "../../Scheduler.js"
import type { LeaseError } from "../../SchedulerError.js"
import type * as SchedulerLease from "../../SchedulerLease.js"
import { TimerHeap } from "./heap.js"
import type { Next } from "./trigger.js"

/**
 * The scheduler's engine, a fenced imperative kernel: one leadership loop renews the lease and,
 * while leading, one timer fiber (`driver`) sleeps until the earliest next-fire instant of all
 * schedules (a heap), claims the due slots in one lease call and enqueues them. It is written
 * with mutable entries and plain loops because it runs once per firing; a fiber per schedule
 * costs several times the CPU of one timer (bench/scheduler.ts measures both).
 *
 * Invariants:
 * - One timer for all schedules: the heap holds each entry once, keyed by its `nextAt`; no fiber
 *   is started per schedule or per firing unless an enqueue actually waits.
 * - A slot is enqueued only after the lease store granted its claim (fenced by the lease in the
 *   store, and at most once per slot), and only while local leadership is valid: until the send
 *   time of the last successful renewal plus the ttl, so a replica cut off from the store stops
 *   firing before the store lets another replica take over.
 * - Claimed slots fire in slot order, each at or after its instant, never early.
 * - `nextAt`, `claimed` and `fired` of an entry are written only by the one running driver (a
 *   FiberHandle holds at most one); `status` only reads them. A new driver reloads them from
 *   the store.
 * - The fired watermark is recorded only after the enqueue succeeded; slots claimed but never
 *   recorded as fired are enqueued again by the next driver with the same dedup key.
 * - Every store call is bounded by `renewEvery`: a blackholed connection never parks the timer.
 */

/** @internal */
export interface Entry<R = never> {
  readonly name: string
  readonly next: Next
  readonly missed: Scheduler.MissedPolicy
  /** Enqueues the slot's task with the dedup key; errors are the TaskQueue's or the payload's. */
  readonly fire: (slot: number) => Effect.Effect<unknown, unknown, R>
  nextAt: number | undefined
  claimed: number | undefined
  fired: number | undefined
}

/** @internal */
export interface Config {
  readonly owner: string
  readonly leaseTtl: number
  readonly renewEvery: number
  readonly grace: number
  readonly concurrency: number
  /** Upper bound of slots enumerated when catching up or re-enqueueing after a takeover. */
  readonly maxEnumerate: number
}

/** @internal */
export const metrics = {
  firings: Metric.counter("effect_background_scheduler_firings_total", {
    description: "Slots enqueued by this scheduler",
    incremental: true
  }),
  failures: Metric.counter("effect_background_scheduler_firing_failures_total", {
    description: "Slots claimed whose enqueue failed",
    incremental: true
  }),
  skipped: Metric.counter("effect_background_scheduler_skipped_total", {
    description: "Times the missed-slot policy skipped overdue slots",
    incremental: true
  }),
  lateness: Metric.histogram(
    "effect_background_scheduler_lateness_seconds",
    MetricBoundaries.exponential({ start: 0.001, factor: 2, count: 14 }),
    "Firing time minus slot time, in seconds"
  ),
  leader: Metric.gauge("effect_background_scheduler_leader", { description: "1 while this replica fires" })
}

/**
 * The slots of `entry` after `after` that are due at `now` under its missed-slot policy, in order;
 * sets `entry.nextAt` to the first slot still in the future. A slot is missed when it is more
 * than `grace` ms overdue: `skip` drops those, `catchUp({ max })` keeps the latest `max`.
 *
 * @internal
 */
export const plan = <R>(entry: Entry<R>, after: number, now: number, config: Config): Array<number> => {
  const due: Array<number> = []
  const horizon = now - config.grace
  let t: number | undefined
  if (entry.missed._tag === "Skip") {
    t = entry.next(after)
    if (t !== undefined && t < horizon) {
      metrics.skipped.unsafeUpdate(1, [])
      t = entry.next(Math.max(after, horizon - 1))
    }
  } else {
    const max = entry.missed.max
    t = entry.next(after)
    let n = 0
    while (t !== undefined && t < horizon && n < config.maxEnumerate) {
      due.push(t)
      if (due.length > max) due.shift()
      t = entry.next(t)
      n++
    }
    if (t !== undefined && t < horizon) t = entry.next(horizon - 1)
  }
  while (t !== undefined && t <= now) {
    due.push(t)
    t = entry.next(t)
  }
  entry.nextAt = t
  return due
}

/** Epoch ms until which this replica may fire: set by the leadership loop, read by the driver. @internal */
export type ValidUntil = Ref.Ref<number>

interface Firing<R> {
  readonly entry: Entry<R>
  readonly slot: number
}

/** How long before a slot its claim is made. */
const claimAhead = 50

const retryPolicy = Schedule.intersect(Schedule.exponential("20 millis"), Schedule.recurs(3))
const claimRetry = Schedule.intersect(Schedule.spaced("50 millis"), Schedule.recurs(2))

/** Enqueues one slot; the retry Schedule is only set up once the first attempt failed (hot path). */
const fireOne = <R>(f: Firing<R>, now: number, fired: Map<string, number>): Effect.Effect<void, never, R> =>
  Effect.matchCauseEffect(f.entry.fire(f.slot), {
    onFailure: () =>
      Effect.retry(f.entry.fire(f.slot), retryPolicy).pipe(
        Effect.matchCauseEffect({
          onFailure: (cause) => {
            metrics.failures.unsafeUpdate(1, [])
            return Effect.logError(
              `scheduler: enqueue of "${f.entry.name}" slot ${new Date(f.slot).toISOString()} failed`,
              cause
            )
          },
          onSuccess: () => Effect.sync(() => recordFired(f, now, fired))
        })
      ),
    onSuccess: () => {
      recordFired(f, now, fired)
      return Effect.void
    }
  })

const recordFired = <R>(f: Firing<R>, now: number, fired: Map<string, number>): void => {
  metrics.firings.unsafeUpdate(1, [])
  metrics.lateness.unsafeUpdate((now - f.slot) / 1000, [])
  if (f.entry.fired === undefined || f.slot > f.entry.fired) f.entry.fired = f.slot
  const last = fired.get(f.entry.name)
  if (last === undefined || f.slot > last) fired.set(f.entry.name, f.slot)
}

/**
 * Claims the slots of `batch` in one lease call; returns the firings won, in slot order. Every
 * store call is bounded: a blackholed connection must not park the timer.
 */
const claimSlots = Effect.fnUntraced(function*<R>(
  lease: SchedulerLease.Service,
  config: Config,
  validUntil: ValidUntil,
  batch: ReadonlyArray<Firing<R>>
) {
  const now = yield* Clock.currentTimeMillis
  // The lease lapsed locally: another replica may already lead. The claim is fenced in the
  // store as well, so this only saves a round trip.
  if (now >= (yield* Ref.get(validUntil))) return []
  const ranges = new Map<string, { first: number; last: number }>()
  for (const { entry, slot } of batch) {
    const r = ranges.get(entry.name)
    if (r === undefined) ranges.set(entry.name, { first: slot, last: slot })
    else {
      r.first = Math.min(r.first, slot)
      r.last = Math.max(r.last, slot)
    }
  }
  const claims: Array<SchedulerLease.Claim> = []
  for (const [schedule, r] of ranges) claims.push({ schedule, first: r.first, last: r.last })
  const won = yield* lease.claim(config.owner, claims).pipe(
    Effect.timeout(Duration.millis(config.renewEvery)),
    Effect.retry(claimRetry),
    Effect.tapErrorCause((cause) => Effect.logWarning("scheduler: claiming slots failed", cause)),
    Effect.orElseSucceed((): ReadonlyArray<string> => [])
  )
  if (won.length === 0) return []
  const wonSet = new Set(won)
  const firings: Array<Firing<R>> = []
  for (const f of batch) {
    if (!wonSet.has(f.entry.name)) continue
    f.entry.claimed = Math.max(f.entry.claimed ?? f.slot, f.slot)
    firings.push(f)
  }
  return firings.sort((x, y) => x.slot - y.slot)
})

/**
 * Sleeps until `at` on the Clock and returns the time it woke; a timer may wake a millisecond
 * early, a slot must not fire early.
 */
const sleepUntil = (at: number): Effect.Effect<number> =>
  Effect.flatMap(
    Clock.currentTimeMillis,
    (now) => now >= at ? Effect.succeed(now) : Effect.zipRight(Effect.sleep(Duration.millis(at - now)), sleepUntil(at))
  )

/** Enqueues claimed firings (all due by `now`) and records the fired slots. */
const fireClaimed = Effect.fnUntraced(function*<R>(
  lease: SchedulerLease.Service,
  config: Config,
  firings: ReadonlyArray<Firing<R>>,
  now: number
) {
  const fired = new Map<string, number>()
  // A pool of `concurrency` fibers pulling from the batch, instead of a fiber per firing:
  // forking dominated the CPU cost of a firing.
  let index = 0
  const worker = Effect.whileLoop({
    while: () => index < firings.length,
    body: () => {
      const f = firings[index++]
      return f === undefined ? Effect.void : fireOne(f, now, fired)
    },
    step: () => {}
  })
  // This fiber works through the batch at once; the helpers only start (and take items) once it
  // waits on an enqueue (a broker confirm), so enqueues that complete at once cost no fibers.
  const helpers = Math.min(config.concurrency, firings.length) - 1
  let helpersStarted = false
  const helping = helpers <= 0 ? undefined : yield* Effect.fork(Effect.suspend(() => {
    helpersStarted = true
    return Effect.all(Array.from({ length: helpers }, () => worker), { concurrency: "unbounded", discard: true })
  }))
  yield* Effect.withMaxOpsBeforeYield(worker, Number.MAX_SAFE_INTEGER)
  if (helping !== undefined) yield* helpersStarted ? Fiber.join(helping) : Fiber.interrupt(helping)
  if (fired.size === 0) return
  const marks: Array<SchedulerLease.FiredSlot> = []
  for (const [schedule, slot] of fired) marks.push({ schedule, slot })
  yield* lease.markFired(config.owner, marks).pipe(
    Effect.timeout(Duration.millis(config.renewEvery)),
    Effect.tapErrorCause((cause) => Effect.logWarning("scheduler: recording fired slots failed", cause)),
    Effect.ignore
  )
})

/**
 * Claims a batch ahead of its slots, then fires each slot instant when it comes, so the store
 * round trip is not part of any firing's lateness. A lease that lapses in between stops the
 * firing; the next leader re-enqueues what was claimed and not fired (`unfiredSlots`).
 */
const runFirings = Effect.fnUntraced(function*<R>(
  lease: SchedulerLease.Service,
  config: Config,
  validUntil: ValidUntil,
  batch: ReadonlyArray<Firing<R>>
) {
  const firings = yield* claimSlots(lease, config, validUntil, batch)
  let from = 0
  while (from < firings.length) {
    const slot = firings[from]?.slot ?? 0
    let to = from
    while (to < firings.length && firings[to]?.slot === slot) to++
    const now = yield* sleepUntil(slot)
    if (now >= (yield* Ref.get(validUntil))) return
    yield* fireClaimed(lease, config, firings.slice(from, to), now)
    from = to
  }
})

/**
 * Slots claimed by a previous leader but never recorded as enqueued: enqueued again with the same
 * dedup key (the TaskQueue drops the copy if the first enqueue did happen).
 */
const unfiredSlots = <R>(entry: Entry<R>, config: Config): Array<number> => {
  const out: Array<number> = []
  if (entry.claimed === undefined) return out
  const from = entry.fired ?? entry.claimed - 1
  let t = entry.next(from)
  while (t !== undefined && t <= entry.claimed && out.length < config.maxEnumerate) {
    out.push(t)
    t = entry.next(t)
  }
  return out
}

/**
 * The timer: loads the persisted slots, applies the missed-slot policy, then fires forever.
 *
 * @internal
 */
export const driver = Effect.fnUntraced(function*<R>(
  entries: ReadonlyArray<Entry<R>>,
  lease: SchedulerLease.Service,
  config: Config,
  validUntil: ValidUntil
) {
  const state = yield* lease.state(entries.map((e) => e.name)).pipe(
    Effect.timeout(Duration.millis(config.renewEvery))
  )
  const byName = new Map(state.map((s) => [s.schedule, s]))
  const heap = new TimerHeap<Entry<R>>()
  const now0 = yield* Clock.currentTimeMillis
  let batch: Array<Firing<R>> = []
  const redo: Array<Firing<R>> = []
  for (const entry of entries) {
    const s = byName.get(entry.name)
    entry.claimed = s?.claimed
    entry.fired = s?.fired
    for (const slot of unfiredSlots(entry, config)) redo.push({ entry, slot })
    // No history: start from now; a new schedule never "catches up" on its past.
    const after = entry.claimed ?? now0 - 1
    for (const slot of plan(entry, after, now0, config)) batch.push({ entry, slot })
    if (entry.nextAt !== undefined) heap.push(entry.nextAt, entry)
  }
  if (redo.length > 0) {
    yield* Effect.logInfo(`scheduler: re-enqueueing ${redo.length} slot(s) claimed but not recorded as fired`)
    yield* Effect.forEach(
      redo,
      (f) =>
        f.entry.fire(f.slot).pipe(
          Effect.tapErrorCause((cause) => Effect.logError(`scheduler: re-enqueue of "${f.entry.name}" failed`, cause)),
          Effect.ignore
        ),
      { concurrency: config.concurrency, discard: true }
    )
  }
  // Entries taken off the heap for the batch being fired: their next slot is computed after the
  // firing, since 1,000 cron `next` computations first would make every firing of the second late.
  let taken: Array<Entry<R>> = []
  for (;;) {
    if (batch.length > 0) {
      yield* runFirings(lease, config, validUntil, batch)
      batch = []
    }
    for (const entry of taken) {
      if (entry.nextAt === undefined) continue
      entry.nextAt = entry.next(entry.nextAt)
      if (entry.nextAt !== undefined) heap.push(entry.nextAt, entry)
    }
    taken = []
    const now = yield* Clock.currentTimeMillis
    const top = heap.peek()
    if (top === Number.POSITIVE_INFINITY) return yield* Effect.never
    // Wake `claimAhead` early: the claim's round trip happens before the slot, not after it.
    if (top > now + claimAhead) {
      yield* Effect.sleep(Duration.millis(top - claimAhead - now))
      continue
    }
    // One slot instant per batch (plus anything overdue), so a short interval's next slot is
    // never held back behind a later one.
    const instant = Math.max(now, top)
    while (heap.peek() <= instant) {
      const entry = heap.top()
      if (entry === undefined || entry.nextAt === undefined) {
        heap.pop()
        continue
      }
      const slot = entry.nextAt
      if (now - slot <= config.grace) {
        batch.push({ entry, slot })
        taken.push(entry)
        heap.pop()
        continue
      }
      for (const s of plan(entry, slot - 1, now, config)) batch.push({ entry, slot: s })
      if (entry.nextAt === undefined) heap.pop()
      else heap.replaceTop(entry.nextAt)
    }
  }
})

/** @internal */
export type Role = "leader" | "standby"

/**
 * Campaigns for the lease every `renewEvery`; while held, runs the driver. Leadership is valid
 * until the time the last successful renewal was *sent* plus the ttl, so a replica that cannot
 * reach the store stops firing before the store lets another replica take over. A renewal that
 * hangs (blackholed connection) times out at `renewEvery`.
 *
 * @internal
 */
export const leadership = Effect.fnUntraced(function*<R>(
  entries: ReadonlyArray<Entry<R>>,
  lease: SchedulerLease.Service,
  config: Config,
  onRole: (role: Role) => Effect.Effect<void>
) {
  const handle = yield* FiberHandle.make<never, LeaseError | Cause.TimeoutException>()
  const validUntil: ValidUntil = yield* Ref.make(0)
  const leading = yield* Ref.make(false)
  const stepDown = Effect.flatMap(Ref.getAndSet(leading, false), (wasLeading) =>
    wasLeading
      ? onRole("standby").pipe(
        Effect.zipRight(Metric.set(metrics.leader, 0)),
        Effect.zipRight(FiberHandle.clear(handle)),
        Effect.zipRight(Effect.logWarning("scheduler: lease lost, standing by"))
      )
      : Effect.void)
  const release = lease.release(config.owner).pipe(
    Effect.timeout(Duration.millis(config.renewEvery)),
    Effect.tapErrorCause((cause) => Effect.logWarning("scheduler: releasing the lease failed", cause)),
    Effect.ignore
  )
  // Registered before the loop is forked, so it runs after the loop and driver are interrupted.
  yield* Effect.addFinalizer(() => Effect.flatMap(Ref.get(leading), (held) => (held ? release : Effect.void)))

  const becomeLeader = Effect.flatMap(
    Ref.getAndSet(leading, true),
    (wasLeading) =>
      wasLeading ? Effect.void : onRole("leader").pipe(
        Effect.zipRight(Metric.set(metrics.leader, 1)),
        Effect.zipRight(Effect.logInfo("scheduler: lease acquired, firing")),
        Effect.zipRight(FiberHandle.run(
          handle,
          driver(entries, lease, config, validUntil).pipe(
            Effect.tapErrorCause((cause) => Effect.logWarning("scheduler: driver failed, restarting", cause)),
            Effect.retry(Schedule.spaced(Duration.millis(config.renewEvery)))
          )
        ))
      )
  )

  const round = Effect.gen(function*() {
    const sentAt = yield* Clock.currentTimeMillis
    const held = yield* lease.acquire(config.owner, config.leaseTtl).pipe(
      Effect.timeoutFail({
        duration: Duration.millis(config.renewEvery),
        onTimeout: () => "timeout" as const
      }),
      Effect.either
    )
    const now = yield* Clock.currentTimeMillis
    if (held._tag === "Right" && held.right) {
      yield* Ref.set(validUntil, sentAt + config.leaseTtl)
      return yield* becomeLeader
    }
    if (held._tag === "Left") {
      yield* Effect.logWarning("scheduler: lease renewal failed", held.left)
      if (now >= (yield* Ref.get(validUntil))) yield* stepDown
    } else {
      // Another replica holds the lease.
      yield* stepDown
    }
  })
  yield* round.pipe(
    Effect.repeat(Schedule.spaced(Duration.millis(config.renewEvery))),
    Effect.annotateLogs({ package: "effect-background", module: "Scheduler", owner: config.owner }),
    Effect.interruptible,
    Effect.forkScoped
  )
})
