import type * as SqlClient from "@effect/sql/SqlClient"
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
import type * as Outbox from "../../Outbox.js"
import { nextRetryDelay } from "../retry.js"
import type * as Pg from "pg"
import { withSpanWhenTraced } from "../tracing.js"
import * as Listener from "./listener.js"
import * as Sql from "./sql.js"

/** @internal */
export interface Resolved {
  readonly tables: Sql.Tables
  readonly batchSize: number
  readonly concurrency: number
  readonly window: number
  readonly pack: number
  readonly pollInterval: Duration.Duration
  readonly ordering: Outbox.Ordering
  readonly retry: Schedule.Schedule<unknown, PublishError>
  readonly brokerBackoff: Schedule.Schedule<unknown, unknown>
  readonly retention: Option.Option<{ readonly maxAgeMs: number; readonly every: Duration.Duration; readonly batchSize: number }>
  readonly listen: Option.Option<Pg.ClientConfig>
  readonly metricsInterval: Duration.Duration
  readonly metrics: typeof Outbox.metrics
  readonly stats: Effect.Effect<Outbox.Stats, SqlError>
}

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

const toEntry = (row: Sql.ClaimedRow): Broker.EncodedEntry => ({
  topic: row.topic,
  body: row.body,
  messageId: row.message_id,
  headers: row.headers ?? undefined,
  // The context of the transaction that added the event, never the dispatcher's own span.
  traceparent: row.traceparent,
  publishedAt: Math.round(Number(row.created_ms))
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

/** Publishing order within a batch: each chain is one key's contiguous run (or one unkeyed row). */
const chainsOf = (heads: ReadonlyArray<Sql.ClaimedRow>, successors: ReadonlyArray<Sql.ClaimedRow>) => {
  const chains: Array<Array<Sql.ClaimedRow>> = []
  const byKey = new Map<string, { chain: Array<Sql.ClaimedRow>; blocked: boolean }>()
  for (const head of heads) {
    const chain = [head]
    chains.push(chain)
    if (head.key !== null) byKey.set(head.key, { chain, blocked: false })
  }
  for (const row of successors) {
    if (row.key === null) continue
    const entry = byKey.get(row.key)
    if (entry === undefined || entry.blocked) continue
    // Stop a key at its first row that is not ready (dead, or waiting for a retry).
    if (row.state === "pending" && row.due) entry.chain.push(row)
    else entry.blocked = true
  }
  return chains
}

/** @internal */
export const make = (
  sql: SqlClient.SqlClient,
  broker: Broker.Service,
  options: Resolved,
  wake: Queue.Queue<void>
) => {
  const t = options.tables
  // A retention of 0: an event is deleted by the transaction that records its dispatch.
  const deleteOnDispatch = Option.exists(options.retention, (r) => r.maxAgeMs === 0)

  /** Publishes `rows` (one wave) and records outcomes into the accumulators. */
  const publishWave = (
    rows: ReadonlyArray<Sql.ClaimedRow>,
    done: Array<string>,
    failures: Array<Sql.Failure>
  ) =>
    Effect.gen(function*() {
      const results = yield* broker.publishAllEncoded(rows.map(toEntry), { window: options.window, pack: options.pack })
      const outcomes: Array<Outcome> = []
      let unavailable: PublishError | undefined
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i]
        const result = results[i]
        if (row === undefined || result === undefined) continue
        const outcome = classify(result)
        outcomes.push(outcome)
        if (outcome._tag === "Dispatched") done.push(row.id)
        else if (outcome._tag === "Unavailable") unavailable = outcome.error
        else {
          const attempt = row.attempts + 1
          const delay = outcome.fatal ? Option.none() : yield* nextRetryDelay(options.retry, attempt, outcome.error)
          failures.push({
            id: row.id,
            error: describe(outcome.error),
            state: Option.isSome(delay) ? "pending" : "dead",
            delayMs: Option.match(delay, { onNone: () => 0, onSome: Duration.toMillis })
          })
        }
      }
      return { outcomes, unavailable }
    })

  const claimAndPublish: Effect.Effect<BatchResult, SqlError> = Effect.gen(function*() {
    const done: Array<string> = []
    const failures: Array<Sql.Failure> = []
    let claimed = 0
    let unavailable: PublishError | undefined
    yield* Sql.batchSettings(sql)
    if (options.ordering === "unordered") {
      const rows = yield* Sql.claim(sql, t, options.batchSize)
      claimed = rows.length
      if (claimed > 0) unavailable = (yield* publishWave(rows, done, failures)).unavailable
    } else {
      const heads = yield* Sql.claimHeads(sql, t, options.batchSize)
      const keyed = heads.filter((row) => row.key !== null)
      const successors = keyed.length === 0 ? [] : yield* Sql.claimSuccessors(
        sql,
        t,
        keyed.map((row) => row.key ?? ""),
        keyed.map((row) => row.id),
        options.batchSize
      )
      let chains = chainsOf(heads, successors)
      claimed = chains.reduce((n, chain) => n + chain.length, 0)
      // Waves: the i-th row of every live chain; a key whose row did not go out stops here, so
      // no event is published before its predecessor was confirmed.
      for (let i = 0; chains.length > 0; i++) {
        const wave = chains.map((chain) => chain[i]).filter((row): row is Sql.ClaimedRow => row !== undefined)
        if (wave.length === 0) break
        const result = yield* publishWave(wave, done, failures)
        if (result.unavailable !== undefined) unavailable = result.unavailable
        chains = chains.filter((chain, j) => chain.length > i + 1 && result.outcomes[j]?._tag === "Dispatched")
      }
    }
    if (done.length > 0) yield* (deleteOnDispatch ? Sql.deleteRows(sql, t, done) : Sql.markDispatched(sql, t, done))
    if (failures.length > 0) yield* Sql.markFailed(sql, t, failures)
    yield* Metric.incrementBy(options.metrics.dispatched, done.length)
    yield* Metric.incrementBy(options.metrics.failures, failures.length)
    return { claimed, unavailable }
  })

  const batch: Effect.Effect<BatchResult, SqlError> = sql.withTransaction(claimAndPublish).pipe(
    withSpanWhenTraced("outbox.dispatch", { kind: "producer", captureStackTrace: false, attributes: { "outbox.table": t.outbox } })
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

  const retention = Option.map(Option.filter(options.retention, () => !deleteOnDispatch), (r) =>
    Sql.pruneDispatched(sql, t, r.maxAgeMs, r.batchSize).pipe(
      Effect.tapErrorCause((cause) => Effect.logWarning("outbox retention failed", cause)),
      Effect.ignore,
      Effect.repeat(Schedule.spaced(r.every))
    ))

  const gauges = Effect.gen(function*() {
    const stats = yield* options.stats
    yield* Metric.set(options.metrics.pending, stats.pending)
    yield* Metric.set(options.metrics.lagMs, stats.oldestPendingAgeMs)
    yield* Metric.set(options.metrics.dead, stats.dead)
  }).pipe(
    Effect.tapErrorCause((cause) => Effect.logDebug("outbox stats failed", cause)),
    Effect.ignore,
    Effect.repeat(Schedule.spaced(options.metricsInterval))
  )

  const sqlRetry = Schedule.exponential("50 millis").pipe(Schedule.union(Schedule.spaced(options.pollInterval)))

  // Failures and defects alike restart the loop: a dead dispatcher fiber would be silent.
  const fork = <A, E>(name: string, effect: Effect.Effect<A, E>) =>
    effect.pipe(
      Effect.sandbox,
      Effect.tapError((cause) => Effect.logWarning(`outbox ${name} failed; retrying`, cause)),
      Effect.retry({ schedule: sqlRetry, while: (cause) => !Cause.isInterruptedOnly(cause) }),
      Effect.annotateLogs({ package: "effect-background", module: "Outbox", fiber: name, table: t.outbox }),
      Effect.forkScoped,
      Effect.interruptible
    )

  const start: Effect.Effect<void, never, Scope.Scope> = Effect.gen(function*() {
    for (let i = 0; i < options.concurrency; i++) yield* fork("dispatch", worker)
    if (Option.isSome(retention)) yield* fork("retention", retention.value)
    yield* fork("metrics", gauges)
    if (Option.isSome(options.listen)) {
      const signal = () => Queue.unsafeOffer(wake, undefined)
      yield* fork(
        "listen",
        Listener.run({
          config: options.listen.value,
          channel: t.channel,
          reconnect: Schedule.exponential("100 millis"),
          maxDelay: options.pollInterval,
          onNotify: signal,
          onListening: signal
        })
      )
    }
  })

  return { start, batch }
}
