import type { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as Broker from "../../Broker.js"
import type { PublishError } from "../../BrokerError.js"
import type { InvalidOptions } from "../../InvalidOptions.js"
import type * as Outbox from "../../Outbox.js"
import type * as OutboxStore from "../../OutboxStore.js"
import * as checks from "../options.js"
import { nextRetryDelay } from "../retry.js"
import { spanOfTraceparent, withSpanWhenTraced } from "../tracing.js"
import * as outboxChecks from "./checks.js"
import type * as Wake from "./wake.js"

/**
 * The dispatcher, written against the `OutboxStore` port: `concurrency` loops that each claim a
 * batch in one store transaction, publish it through the Broker with confirms, and record the
 * outcome before the transaction commits; plus retention, gauges and cross-process wake-ups.
 */

/** @internal */
export const defaults = {
  batchSize: 1000,
  concurrency: 2,
  pollInterval: "1 second",
  retentionMaxAge: "7 days",
  retentionEvery: "1 minute",
  retentionBatchSize: 5000,
  metricsInterval: "5 seconds",
  deadLimit: 100
} as const

/** @internal */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("1 second").pipe(
  Schedule.union(Schedule.spaced("5 minutes")),
  Schedule.intersect(Schedule.recurs(10))
)

/** @internal */
export const defaultBrokerBackoff: Schedule.Schedule<unknown, unknown> = Schedule.exponential("100 millis").pipe(
  Schedule.union(Schedule.spaced("2 seconds"))
)

/** @internal */
export const metrics = {
  dispatched: Metric.counter("effect_background_outbox_dispatched_total", {
    description: "outbox events confirmed by the broker and marked dispatched",
    incremental: true
  }),
  failures: Metric.counter("effect_background_outbox_failures_total", {
    description: "outbox publish failures charged to a row (retried or dead)",
    incremental: true
  }),
  pending: Metric.gauge("effect_background_outbox_pending", { description: "pending outbox events" }),
  lagSeconds: Metric.gauge("effect_background_outbox_lag_seconds", {
    description: "age of the oldest pending outbox event, in seconds"
  }),
  dead: Metric.gauge("effect_background_outbox_dead", { description: "dead outbox events" })
} as const

/** @internal */
export interface Retention {
  readonly maxAge: Duration.Duration
  readonly every: Duration.Duration
  readonly batchSize: number
}

/** @internal */
export interface Resolved {
  readonly batchSize: number
  readonly concurrency: number
  readonly window: number
  readonly pack: number
  readonly pollInterval: Duration.Duration
  readonly ordering: Outbox.Ordering
  readonly retry: Schedule.Schedule<unknown, PublishError>
  readonly brokerBackoff: Schedule.Schedule<unknown, unknown>
  readonly retention: Option.Option<Retention>
  /** `undefined`: listen when the store can. */
  readonly listen: boolean | undefined
  readonly metricsInterval: Duration.Duration
}

const module = "Outbox"

/** @internal */
export const resolveRetention = (
  retention: Outbox.RetentionOptions | false | undefined
): checks.Checked<Option.Option<Retention>> => {
  if (retention === false) return Either.right(Option.none())
  if (retention !== undefined && (typeof retention !== "object" || retention === null)) {
    return Either.left(
      checks.invalid(module, "retention", retention, "must be false or { maxAge, every?, batchSize? }")
    )
  }
  return Either.map(
    Either.all({
      maxAge: checks.duration(module, "retention.maxAge", retention?.maxAge, {
        fallback: Duration.decode(defaults.retentionMaxAge)
      }),
      every: checks.duration(module, "retention.every", retention?.every, {
        fallback: Duration.decode(defaults.retentionEvery),
        positive: true
      }),
      batchSize: checks.integer(module, "retention.batchSize", retention?.batchSize, {
        min: 1,
        max: 1_000_000,
        fallback: defaults.retentionBatchSize
      })
    }),
    Option.some
  )
}

/**
 * Every dispatcher option checked, with its default filled in.
 *
 * @internal
 */
export const resolve = (options: Outbox.DispatcherOptions | undefined): checks.Checked<Resolved> =>
  Either.map(
    Either.all({
      batchSize: checks.integer(module, "batchSize", options?.batchSize, {
        min: 1,
        max: 100_000,
        fallback: defaults.batchSize
      }),
      concurrency: checks.integer(module, "concurrency", options?.concurrency, {
        min: 1,
        max: 64,
        fallback: defaults.concurrency
      }),
      window: checks.optionalInteger(module, "window", options?.window, { min: 1, max: 100_000 }),
      pack: checks.integer(module, "pack", options?.pack, { min: 1, max: 10_000, fallback: 1 }),
      pollInterval: checks.duration(module, "pollInterval", options?.pollInterval, {
        fallback: Duration.decode(defaults.pollInterval),
        positive: true
      }),
      ordering: checks.oneOf(module, "ordering", options?.ordering, ["unordered", "per-key"], "unordered"),
      retry: outboxChecks.schedule<Schedule.Schedule<unknown, PublishError>>(
        module,
        "retry",
        options?.retry,
        defaultRetry
      ),
      brokerBackoff: outboxChecks.schedule(module, "brokerBackoff", options?.brokerBackoff, defaultBrokerBackoff),
      retention: resolveRetention(options?.retention),
      listen: outboxChecks.boolean(module, "listen", options?.listen, undefined),
      metricsInterval: checks.duration(module, "metricsInterval", options?.metricsInterval, {
        fallback: Duration.decode(defaults.metricsInterval),
        positive: true
      })
    }),
    (resolved): Resolved => ({ ...resolved, window: resolved.window ?? resolved.batchSize })
  )

type Outcome =
  | { readonly _tag: "Dispatched" }
  | { readonly _tag: "Unavailable"; readonly error: PublishError }
  | { readonly _tag: "Failed"; readonly error: PublishError; readonly fatal: boolean }

const dispatched: Outcome = { _tag: "Dispatched" }

/**
 * Broker down or the channel closed under the publish: not the row's fault, so no attempt is
 * charged (a 5 s outage must not exhaust retries). Nacks and unroutable messages are charged;
 * messages the broker can never take (too large, invalid names, encoding) die at once.
 */
const classify = (result: Either.Either<void, PublishError>): Outcome => {
  if (Either.isRight(result)) return dispatched
  const error = result.left
  switch (error._tag) {
    case "BrokerUnavailable":
      return { _tag: "Unavailable", error }
    case "PublishRejected":
      if (error.reason === "channel-closed" || error.reason === "timeout") return { _tag: "Unavailable", error }
      return { _tag: "Failed", error, fatal: error.reason === "too-large" || error.reason === "invalid" }
    case "EncodeError":
    case "InvalidName":
    case "InvalidOptions":
    case "Unsupported":
      return { _tag: "Failed", error, fatal: true }
  }
}

const toEntry = (event: OutboxStore.ClaimedEvent): Broker.EncodedEntry => ({
  topic: event.topic,
  body: event.body,
  messageId: event.messageId,
  headers: event.headers,
  // The context of the transaction that added the event, never the dispatcher's own span.
  traceparent: event.traceparent ?? null,
  publishedAt: Math.round(event.createdAtMs)
})

const maxErrorLength = 2000

const describe = (error: PublishError): string => {
  const text = `${error._tag}: ${error.message}`
  return text.length > maxErrorLength ? `${text.slice(0, maxErrorLength)}…` : text
}

interface BatchResult {
  readonly claimed: number
  readonly unavailable: PublishError | undefined
}

/** Publishing order within a batch: each chain is one key's contiguous run (or one unkeyed event). */
const chainsOf = (claim: OutboxStore.KeyedClaim) => {
  const chains: Array<Array<OutboxStore.ClaimedEvent>> = []
  const byKey = new Map<string, { chain: Array<OutboxStore.ClaimedEvent>; blocked: boolean }>()
  for (const head of claim.heads) {
    const chain = [head]
    chains.push(chain)
    if (head.key !== undefined) byKey.set(head.key, { chain, blocked: false })
  }
  for (const event of claim.successors) {
    if (event.key === undefined) continue
    const entry = byKey.get(event.key)
    if (entry === undefined || entry.blocked) continue
    // Stop a key at its first event that is not ready (dead, or waiting for a retry).
    if (event.ready) entry.chain.push(event)
    else entry.blocked = true
  }
  return chains
}

/** @internal */
export const make = (
  store: OutboxStore.Service,
  broker: Broker.Service,
  options: Resolved,
  wake: Queue.Queue<void>
) => {
  // A retention of 0: an event is deleted by the transaction that records its dispatch.
  const deleteOnDispatch = Option.exists(options.retention, (r) => Duration.toMillis(r.maxAge) === 0)

  /** Publishes `events` (one wave) and records outcomes into the accumulators. */
  const publishWave = (
    events: ReadonlyArray<OutboxStore.ClaimedEvent>,
    done: Array<string>,
    failures: Array<OutboxStore.Failure>
  ) =>
    Effect.gen(function*() {
      const results = yield* broker.publishAllEncoded(events.map(toEntry), {
        window: options.window,
        pack: options.pack
      })
      const outcomes: Array<Outcome> = []
      let unavailable: PublishError | undefined
      for (let i = 0; i < events.length; i++) {
        const event = events[i]
        const result = results[i]
        if (event === undefined || result === undefined) continue
        const outcome = classify(result)
        outcomes.push(outcome)
        if (outcome._tag === "Dispatched") done.push(event.id)
        else if (outcome._tag === "Unavailable") unavailable = outcome.error
        else {
          const attempt = event.attempts + 1
          const delay = outcome.fatal ? Option.none() : yield* nextRetryDelay(options.retry, attempt, outcome.error)
          failures.push({
            id: event.id,
            error: describe(outcome.error),
            state: Option.isSome(delay) ? "pending" : "dead",
            delayMs: Option.match(delay, { onNone: () => 0, onSome: Duration.toMillis })
          })
        }
      }
      return { outcomes, unavailable }
    })

  /**
   * The dispatch span: opened only once rows were claimed (an idle dispatcher records nothing),
   * a root of its own, linked to the trace of every event it publishes (each message still
   * carries its event's own trace context, never this span's).
   */
  const traced = (events: ReadonlyArray<OutboxStore.ClaimedEvent>) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    effect.pipe(
      withSpanWhenTraced("outbox.dispatch", {
        kind: "producer",
        root: true,
        captureStackTrace: false,
        attributes: { "outbox.table": store.label, "outbox.events": events.length },
        links: events.flatMap((event) => {
          const span = spanOfTraceparent(event.traceparent)
          return span === undefined ? [] : [{ _tag: "SpanLink" as const, span, attributes: {} }]
        })
      }),
      Effect.withTracerEnabled(true)
    )

  /** Publishes claimed events (in waves per key when ordered), then records the outcomes. */
  const publishClaimed = (
    batch: OutboxStore.Batch,
    claimed: ReadonlyArray<ReadonlyArray<OutboxStore.ClaimedEvent>>
  ) =>
    Effect.gen(function*() {
      const done: Array<string> = []
      const failures: Array<OutboxStore.Failure> = []
      let unavailable: PublishError | undefined
      if (options.ordering === "unordered") {
        for (const events of claimed) {
          unavailable = (yield* publishWave(events, done, failures)).unavailable ?? unavailable
        }
      } else {
        let chains = claimed
        // Waves: the i-th event of every live chain; a key whose event did not go out stops here,
        // so no event is published before its predecessor was confirmed.
        for (let i = 0; chains.length > 0; i++) {
          const wave = chains.map((chain) => chain[i]).filter((event): event is OutboxStore.ClaimedEvent =>
            event !== undefined
          )
          if (wave.length === 0) break
          const result = yield* publishWave(wave, done, failures)
          if (result.unavailable !== undefined) unavailable = result.unavailable
          chains = chains.filter((chain, j) => chain.length > i + 1 && result.outcomes[j]?._tag === "Dispatched")
        }
      }
      if (done.length > 0) yield* (deleteOnDispatch ? batch.remove(done) : batch.markDispatched(done))
      if (failures.length > 0) yield* batch.markFailed(failures)
      yield* Metric.incrementBy(metrics.dispatched, done.length)
      yield* Metric.incrementBy(metrics.failures, failures.length)
      return unavailable
    })

  const claimAndPublish = (batch: OutboxStore.Batch): Effect.Effect<BatchResult, SqlError> =>
    Effect.gen(function*() {
      // Unordered: one wave of everything claimed; per key: one chain per key.
      const claimed = options.ordering === "unordered"
        ? [yield* batch.claim(options.batchSize)]
        : chainsOf(yield* batch.claimInKeyOrder(options.batchSize))
      const events = claimed.flat()
      if (events.length === 0) return { claimed: 0, unavailable: undefined }
      return { claimed: events.length, unavailable: yield* traced(events)(publishClaimed(batch, claimed)) }
    })

  // The claim (and its transaction's SQL spans) runs untraced: see `traced`.
  const batch: Effect.Effect<BatchResult, SqlError> = store.dispatch(claimAndPublish).pipe(
    Effect.withTracerEnabled(false)
  )

  // After a wake-up that found nothing (the writer's transaction had not committed yet), look
  // again shortly before falling back to the poll interval.
  const lingerMs = [1, 2, 4, 8, 16, 32, 64]

  const worker = Effect.gen(function*() {
    let unavailableStreak = 0
    let linger = lingerMs.length
    while (true) {
      const result = yield* batch
      if (result.unavailable !== undefined) {
        unavailableStreak++
        if (unavailableStreak === 1) {
          yield* Effect.logWarning("broker unavailable; outbox dispatch backing off").pipe(
            Effect.annotateLogs({ error: result.unavailable.message })
          )
        }
        const delay = yield* nextRetryDelay(options.brokerBackoff, unavailableStreak, result.unavailable)
        yield* Effect.sleep(Option.getOrElse(delay, () => options.pollInterval))
        continue
      }
      if (unavailableStreak > 0) {
        unavailableStreak = 0
        yield* Effect.logInfo("broker available again; outbox dispatch resumed")
      }
      if (result.claimed >= options.batchSize) {
        // Full batch: keep claiming, and pull an idle sibling in.
        Queue.unsafeOffer(wake, undefined)
        continue
      }
      if (result.claimed > 0) {
        linger = 0
        continue
      }
      const wait = linger < lingerMs.length ? Duration.millis(lingerMs[linger++] ?? 1) : options.pollInterval
      const woke = yield* Effect.timeoutOption(Queue.take(wake), wait)
      if (Option.isSome(woke)) linger = 0
    }
  })

  const retention = Option.map(
    Option.filter(options.retention, () => !deleteOnDispatch),
    (r) =>
      store.prune(r.maxAge, r.batchSize).pipe(
        Effect.tapErrorCause((cause) => Effect.logWarning("outbox retention failed", cause)),
        Effect.ignore,
        Effect.repeat(Schedule.spaced(r.every))
      )
  )

  const gauges = Effect.gen(function*() {
    const stats = yield* store.stats
    yield* Metric.set(metrics.pending, stats.pending)
    yield* Metric.set(metrics.lagSeconds, stats.oldestPendingAgeMs / 1000)
    yield* Metric.set(metrics.dead, stats.dead)
  }).pipe(
    Effect.tapErrorCause((cause) => Effect.logDebug("outbox stats failed", cause)),
    Effect.ignore,
    // Housekeeping, not work: its queries would be root traces every interval.
    Effect.withTracerEnabled(false),
    Effect.repeat(Schedule.spaced(options.metricsInterval))
  )

  const sqlRetry = Schedule.exponential("50 millis").pipe(Schedule.union(Schedule.spaced(options.pollInterval)))

  // Failures and defects alike restart the loop: a dead dispatcher fiber would be silent.
  const fork = <A, E>(name: string, effect: Effect.Effect<A, E>) =>
    effect.pipe(
      Effect.sandbox,
      Effect.tapError((cause) => Effect.logWarning(`outbox ${name} failed; retrying`, cause)),
      Effect.retry({ schedule: sqlRetry, while: (cause) => !Cause.isInterruptedOnly(cause) }),
      Effect.annotateLogs({ package: "effect-background", module: "Outbox", fiber: name, table: store.label }),
      Effect.forkScoped,
      Effect.interruptible
    )

  const start: Effect.Effect<void, never, Scope.Scope> = Effect.gen(function*() {
    for (let i = 0; i < options.concurrency; i++) yield* fork("dispatch", worker)
    if (Option.isSome(retention)) yield* fork("retention", retention.value)
    yield* fork("metrics", gauges)
    if (options.listen !== false && Option.isSome(store.listen)) {
      yield* fork("listen", store.listen.value(() => Queue.unsafeOffer(wake, undefined)))
    }
  })

  return { start, batch }
}

/**
 * Starts a dispatcher on `store` for as long as the enclosing Scope lives. `local`: the Outbox
 * service of this process, whose `add` then wakes the dispatcher without a round trip.
 *
 * @internal
 */
export const run = (
  store: OutboxStore.Service,
  broker: Broker.Service,
  options: Resolved,
  local: Option.Option<Wake.LocalWake>
): Effect.Effect<void, InvalidOptions, Scope.Scope> =>
  Effect.gen(function*() {
    if (Option.isNone(store.listen)) {
      if (options.listen === true) {
        return yield* Effect.fail(
          checks.invalid(module, "listen", true, `the outbox store ${store.label} has no cross-process wake-ups`)
        )
      }
      if (options.listen === undefined) {
        yield* Effect.logInfo("outbox dispatcher: no cross-process wake-ups; woken in-process and by the poll interval")
          .pipe(
            Effect.annotateLogs({ package: "effect-background", module: "Outbox", table: store.label })
          )
      }
    }
    const wake = yield* Queue.sliding<void>(1)
    if (Option.isSome(local)) yield* local.value.register(wake)
    yield* make(store, broker, options, wake).start
  })
