import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Broker from "../Broker.js"
import { HandlerDefect } from "../BrokerError.js"
import type { InvalidOptions } from "../InvalidOptions.js"
import * as ResultStore from "../ResultStore.js"
import type * as Task from "../Task.js"
import { EnqueueError, ResultError, type ResultStoreError, TaskTimeout } from "../TaskError.js"
import type * as TaskQueue from "../TaskQueue.js"
import * as fiberLocal from "./fiberLocal.js"
import * as messageId from "./messageId.js"
import * as checks from "./options.js"
import type { Outcome, ResultCodec } from "./task.js"
import { builtInTracer, withSpanWhenTraced } from "./tracing.js"
import * as wire from "./wire.js"

/** @internal */
export const HandleTypeId: TaskQueue.HandleTypeId = Symbol.for(
  "effect-background/TaskQueue/TaskHandle"
) as TaskQueue.HandleTypeId

const module = "TaskQueue"

const maxDetail = 4000

const liveClock = Clock.make()

/** @internal */
export type HandleCodec<S, F> = ResultCodec<S, F>

/** @internal */
export const makeHandle = <Name extends string, P, S, F>(
  task: Task.Task<Name, P, S, F>,
  id: string,
  key: string | undefined,
  deduplicated: boolean
): TaskQueue.TaskHandle<S, F> => ({
  [HandleTypeId]: HandleTypeId,
  id,
  task: task.name,
  key,
  deduplicated,
  codec: task.resultCodec
})

// ---------------------------------------------------------------------------
// the dedup key on the wire: written by `withKey`, read by `keyOf`, nowhere else
// ---------------------------------------------------------------------------

/**
 * The dedup key travels as library metadata, apart from the caller's headers: the worker marks
 * the key's claim done with it, and no header the caller picks can collide with it.
 */
const keyName = wire.headers.taskKey

/** The publish options of a keyed enqueue. */
const withKey = (options: Broker.PublishOptions, key: string): Broker.PublishOptions => ({
  ...options,
  metadata: { ...options.metadata, [keyName]: key }
})

/** The dedup key a delivery carries. */
const keyOf = (envelope: Broker.Envelope): string | undefined => envelope.metadata[keyName]

// ---------------------------------------------------------------------------
// metrics
// ---------------------------------------------------------------------------

/** @internal */
export const metrics = {
  succeeded: Metric.counter("effect_background_tasks_succeeded_total", {
    description: "task runs that succeeded",
    incremental: true
  }),
  failed: Metric.counter("effect_background_tasks_failed_total", {
    description: "task attempts that failed",
    incremental: true
  }),
  retried: Metric.counter("effect_background_tasks_retried_total", {
    description: "failed attempts scheduled for retry",
    incremental: true
  }),
  deadLettered: Metric.counter("effect_background_tasks_dead_lettered_total", {
    description: "tasks dead-lettered (retries exhausted or non-retryable)",
    incremental: true
  }),
  inFlight: Metric.gauge("effect_background_tasks_in_flight", { description: "task runs in progress" })
} as const

// ---------------------------------------------------------------------------
// options
// ---------------------------------------------------------------------------

interface Settings {
  readonly keyWindow: number
  readonly keyPendingLimit: number
  readonly pollInterval: Duration.Duration
}

const checkOptions = (options: TaskQueue.Options | undefined): checks.Checked<Settings> =>
  Either.all({
    keyWindow: Either.map(
      checks.duration(module, "keyWindow", options?.keyWindow, { fallback: Duration.zero }),
      Duration.toMillis
    ),
    keyPendingLimit: Either.map(
      checks.duration(module, "keyPendingLimit", options?.keyPendingLimit, {
        fallback: Duration.days(1),
        positive: true
      }),
      Duration.toMillis
    ),
    pollInterval: checks.duration(module, "pollInterval", options?.pollInterval, {
      fallback: Duration.millis(50),
      positive: true
    })
  })

const defaultResultTimeout = Duration.seconds(30)

const checkResultTimeout = (timeout: Duration.DurationInput | undefined): checks.Checked<Duration.Duration> =>
  checks.duration(module, "timeout", timeout, { fallback: defaultResultTimeout, positive: true, finite: false })

/** Tasks per RabbitMQ message in `enqueueAll`: RabbitMQ's work is per wire message. */
const defaultPack = 100

/** The options that apply to a whole `enqueueAll` call; per-task ones are the Broker's, per entry. */
const checkBatch = (options: TaskQueue.EnqueueAllOptions | undefined) =>
  Either.all({
    window: checks.integer(module, "window", options?.window, { min: 1, fallback: 1000 }),
    pack: checks.integer(module, "pack", options?.pack, { min: 1, max: 10_000, fallback: defaultPack })
  })

// ---------------------------------------------------------------------------
// producer side
// ---------------------------------------------------------------------------

const invalidEnqueue = (task: string, error: InvalidOptions) =>
  new EnqueueError({ task, reason: "invalid", ambiguous: false, detail: error.message, cause: error })

const enqueueErrorOf = (task: string, error: Broker.PublishError | Broker.SubscribeError): EnqueueError => {
  switch (error._tag) {
    case "EncodeError":
    case "InvalidName":
    case "InvalidOptions":
    case "Unsupported":
    case "DeclareConflict":
      return new EnqueueError({ task, reason: "invalid", ambiguous: false, detail: error.message, cause: error })
    case "BrokerUnavailable":
      return new EnqueueError({ task, reason: "unavailable", ambiguous: false, detail: error.message })
    case "PublishRejected":
      return error.reason === "unroutable"
        ? new EnqueueError({
          task,
          reason: "no-queue",
          ambiguous: false,
          detail:
            `no queue is bound to "${error.topic}": this broker cannot declare queues ahead of workers, start a worker first`
        })
        : new EnqueueError({
          task,
          reason: error.reason === "invalid" || error.reason === "too-large" ? "invalid" : "rejected",
          ambiguous: error.ambiguous,
          detail: error.message
        })
  }
}

const isUnroutable = (error: Broker.PublishError): boolean =>
  error._tag === "PublishRejected" && error.reason === "unroutable"

const storeUnavailable = (task: string, id: string, error: ResultStoreError) =>
  new ResultError({ task, id, reason: "store-unavailable", detail: error.message, cause: error })

/** Turns a stored outcome into the caller's typed result. */
const fromOutcome = <S, F>(
  handle: TaskQueue.TaskHandle<S, F>,
  stored: ResultStore.StoredResult
): Effect.Effect<S, F | ResultError> => {
  const decoded = handle.codec.decode(stored.outcome)
  if (Either.isLeft(decoded)) {
    return Effect.fail(new ResultError({ task: handle.task, id: handle.id, reason: "malformed", detail: decoded.left }))
  }
  const outcome: Outcome<S, F> = decoded.right
  if (outcome._tag === "Success") return Effect.succeed(outcome.value)
  const error = outcome.error
  if (error instanceof TaskTimeout) {
    return Effect.fail(
      new ResultError({ task: handle.task, id: handle.id, reason: "task-timeout", detail: error.message })
    )
  }
  if (error instanceof HandlerDefect) {
    return Effect.fail(
      new ResultError({ task: handle.task, id: handle.id, reason: "task-defect", detail: error.detail })
    )
  }
  return Effect.fail(error)
}

const noStore = (task: string, id: string) =>
  new ResultError({ task, id, reason: "no-store", detail: "the TaskQueue layer was built without a result store" })

type DeclaredTask<A> = {
  readonly group: string
  readonly maxPriority: number | undefined
  readonly topic: Broker.Subscribable<A, unknown>
}

const makeService = (
  broker: Broker.Service,
  store: Option.Option<ResultStore.Service>,
  settings: Settings
): TaskQueue.Service => {
  const { keyPendingLimit, keyWindow, pollInterval } = settings

  /**
   * Task queues this service declared, so an enqueue before any worker started is kept and only
   * the first enqueue of a task pays for declaring its queue (on RabbitMQ a channel and several
   * round trips). A pending declaration is shared by the enqueues that wait for it; a done one is
   * replaced by `Effect.void`; a failed one is forgotten, so the next enqueue tries again.
   */
  const declared = new Map<string, Effect.Effect<void, Broker.SubscribeError>>()

  const declare = <A>(task: DeclaredTask<A>): Effect.Effect<void, Broker.SubscribeError> =>
    Effect.suspend(() => {
      const known = declared.get(task.group)
      if (known !== undefined) return known
      const declaration = broker.declare(task.topic, { group: task.group, maxPriority: task.maxPriority }).pipe(
        Effect.tap(() => Effect.sync(() => declared.set(task.group, Effect.void))),
        Effect.tapError(() => Effect.sync(() => declared.delete(task.group)))
      )
      return Effect.flatMap(Effect.cached(declaration), (once) =>
        Effect.suspend(() => {
          // Another enqueue may have started the same declaration meanwhile: share it.
          const raced = declared.get(task.group)
          if (raced !== undefined) return raced
          declared.set(task.group, once)
          return once
        }))
    })

  /** An unroutable publish means the task's queue is gone (deleted since): declare it again next time. */
  const forget = (group: string) => Effect.sync(() => declared.delete(group))

  const enqueue = <Name extends string, P, S, F>(
    task: Task.Task<Name, P, S, F>,
    payload: P,
    enqueueOptions?: TaskQueue.EnqueueOptions
  ): Effect.Effect<TaskQueue.TaskHandle<S, F>, EnqueueError> =>
    Effect.gen(function*() {
      const id = messageId.make(yield* Clock.currentTimeMillis)
      const key = enqueueOptions?.key
      yield* Effect.mapError(declare(task), (e) => enqueueErrorOf(task.name, e))
      const publishOptions: Broker.PublishOptions = {
        messageId: id,
        delay: enqueueOptions?.delay,
        priority: enqueueOptions?.priority,
        headers: enqueueOptions?.headers,
        persistent: task.delivery === "persistent"
      }
      const publish = broker.publish(
        task.topic,
        payload,
        key === undefined ? publishOptions : withKey(publishOptions, key)
      ).pipe(
        Effect.tapError((error) => isUnroutable(error) ? forget(task.group) : Effect.void),
        Effect.mapError((error) => enqueueErrorOf(task.name, error))
      )
      if (key === undefined) {
        yield* publish
        return makeHandle(task, id, undefined, false)
      }
      if (Option.isNone(store)) {
        return yield* new EnqueueError({
          task: task.name,
          reason: "key-store",
          ambiguous: false,
          detail: "keys need a result store; none was provided"
        })
      }
      const now = yield* Clock.currentTimeMillis
      const holder = yield* Effect.mapError(
        store.value.claim({
          task: task.name,
          key,
          id,
          claimedAt: now,
          expiresAt: now + keyWindow,
          staleAt: now + keyPendingLimit
        }),
        (error) =>
          new EnqueueError({
            task: task.name,
            reason: "key-store",
            ambiguous: false,
            detail: error.message,
            cause: error
          })
      )
      if (holder !== id) return makeHandle(task, holder, key, true)
      return yield* publish.pipe(
        // The task was not accepted: free the key so a retry of this enqueue can claim it.
        Effect.tapError(() =>
          store.value.release(task.name, key, id).pipe(
            Effect.catchAll((error) => Effect.logWarning("could not release a task key after a failed enqueue", error))
          )
        ),
        Effect.as(makeHandle(task, id, key, false))
      )
    }).pipe(
      withSpanWhenTraced("task.enqueue", {
        kind: "producer",
        captureStackTrace: false,
        attributes: { "effect_background.task": task.name }
      })
    )

  const enqueueAll = <Name extends string, P, S, F>(
    task: Task.Task<Name, P, S, F>,
    payloads: Iterable<P>,
    options?: TaskQueue.EnqueueAllOptions
  ): Effect.Effect<ReadonlyArray<Either.Either<TaskQueue.TaskHandle<S, F>, EnqueueError>>, EnqueueError> =>
    Effect.gen(function*() {
      const batch = yield* Effect.mapError(checkBatch(options), (error) => invalidEnqueue(task.name, error))
      yield* Effect.mapError(declare(task), (e) => enqueueErrorOf(task.name, e))
      const ids: Array<string> = []
      const entries: Array<Broker.PublishEntry> = []
      const now = yield* Clock.currentTimeMillis
      for (const payload of payloads) {
        const id = messageId.make(now)
        ids.push(id)
        entries.push(Broker.entry(task.topic, payload, {
          messageId: id,
          delay: options?.delay,
          priority: options?.priority,
          headers: options?.headers,
          persistent: task.delivery === "persistent"
        }))
      }
      const outcomes = yield* broker.publishAll(entries, batch)
      let unroutable = false
      const handles = outcomes.map((outcome, i) =>
        Either.match(outcome, {
          onLeft: (error) => {
            if (isUnroutable(error)) unroutable = true
            return Either.left(enqueueErrorOf(task.name, error))
          },
          onRight: () => Either.right(makeHandle(task, ids[i] ?? "", undefined, false))
        })
      )
      if (unroutable) yield* forget(task.group)
      return handles
    }).pipe(
      withSpanWhenTraced("task.enqueueAll", {
        kind: "producer",
        captureStackTrace: false,
        attributes: { "effect_background.task": task.name }
      })
    )

  const poll = <S, F>(
    handle: TaskQueue.TaskHandle<S, F>
  ): Effect.Effect<Option.Option<Effect.Effect<S, F | ResultError>>, ResultError> =>
    Effect.gen(function*() {
      if (Option.isNone(store)) return yield* noStore(handle.task, handle.id)
      const now = yield* Clock.currentTimeMillis
      const stored = yield* Effect.mapError(store.value.get(handle.id, now), (e) =>
        storeUnavailable(handle.task, handle.id, e))
      return Option.map(stored, (s) =>
        fromOutcome(handle, s))
    })

  const result = <S, F>(
    handle: TaskQueue.TaskHandle<S, F>,
    resultOptions?: TaskQueue.ResultOptions
  ): Effect.Effect<S, F | ResultError | InvalidOptions> =>
    Effect.gen(function*() {
      const timeout = yield* checkResultTimeout(resultOptions?.timeout)
      if (Option.isNone(store)) return yield* noStore(handle.task, handle.id)
      const s = store.value
      const polling: Effect.Effect<ResultStore.StoredResult, ResultStoreError> = Clock.currentTimeMillis.pipe(
        Effect.flatMap((now) => s.get(handle.id, now)),
        Effect.flatMap((found) =>
          Option.isSome(found) ? Effect.succeed(found.value) : Effect.zipRight(Effect.sleep(pollInterval), polling)
        )
      )
      const wait = s.await !== undefined ? s.await(handle.id) : polling
      const stored = yield* wait.pipe(
        Effect.mapError((e) => storeUnavailable(handle.task, handle.id, e)),
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () =>
            new ResultError({
              task: handle.task,
              id: handle.id,
              reason: "wait-timeout",
              detail: `not finished within ${Duration.format(timeout)}`
            })
        })
      )
      return yield* fromOutcome(handle, stored)
    })

  const redrive: TaskQueue.Service["redrive"] = (task, options) => broker.redrive(task.group, options)

  return { enqueue, enqueueAll, result, poll, redrive }
}

/** @internal */
export const make = (options: TaskQueue.Options | undefined) =>
  Effect.gen(function*() {
    const settings = yield* checkOptions(options)
    const broker = yield* Broker.Broker
    const store = yield* Effect.serviceOption(ResultStore.ResultStore)
    return makeService(broker, store, settings)
  })

/** @internal */
export const makeWithoutStore = (options: TaskQueue.Options | undefined) =>
  Effect.gen(function*() {
    const settings = yield* checkOptions(options)
    const broker = yield* Broker.Broker
    return makeService(broker, Option.none(), settings)
  })

// ---------------------------------------------------------------------------
// worker side
// ---------------------------------------------------------------------------

/** The task's retry Schedule, stopped at once for non-retryable failures. */
const effectiveRetry = <Name extends string, P, S, F>(
  task: Task.Task<Name, P, S, F>
): Schedule.Schedule<unknown, Task.RunError<F>> => {
  const nonRetryable = task.nonRetryable
  if (nonRetryable === undefined) return task.retry
  return Schedule.whileInput(
    task.retry,
    (error: Task.RunError<F>) => error instanceof TaskTimeout || error instanceof HandlerDefect || !nonRetryable(error)
  )
}

const describe = (error: unknown): string => {
  const text = error instanceof Error
    ? error.message
    : typeof error === "string"
    ? error
    : JSON.stringify(error) ?? String(error)
  return text.length > maxDetail ? `${text.slice(0, maxDetail)}…` : text
}

const checkWorkerOptions = (options: TaskQueue.WorkerOptions | undefined) =>
  Effect.gen(function*() {
    const concurrency = yield* checks.integer(module, "concurrency", options?.concurrency, {
      min: 1,
      max: 65535,
      fallback: 10
    })
    const prefetch = yield* checks.integer(module, "prefetch", options?.prefetch, {
      min: concurrency,
      max: 65535,
      fallback: concurrency
    })
    const resultTtl = yield* checks.duration(module, "resultTtl", options?.resultTtl, {
      fallback: Duration.days(1),
      positive: true
    })
    return { concurrency, prefetch, resultTtl: Duration.toMillis(resultTtl) }
  })

/** @internal */
export const worker = <Name extends string, P, S, F, R>(
  task: Task.Task<Name, P, S, F>,
  handler: TaskQueue.Handler<P, S, F, R>,
  options: TaskQueue.WorkerOptions | undefined
): Effect.Effect<void, Broker.SubscribeError | InvalidOptions, Broker.Broker | Exclude<R, Scope.Scope> | Scope.Scope> =>
  Effect.gen(function*() {
    const { concurrency, prefetch, resultTtl } = yield* checkWorkerOptions(options)
    const broker = yield* Broker.Broker
    const store = yield* Effect.serviceOption(ResultStore.ResultStore)
    const retry = effectiveRetry(task)
    const timeout = task.timeout
    const tags = { task: task.name }
    // Metric labels of the fiber that starts the worker: its deliveries inherit them.
    const labels = yield* FiberRef.get(FiberRef.currentMetricLabels)
    const succeeded = Metric.tagged(metrics.succeeded, "task", task.name)
    const failed = Metric.tagged(metrics.failed, "task", task.name)
    const retried = Metric.tagged(metrics.retried, "task", task.name)
    const deadLettered = Metric.tagged(metrics.deadLettered, "task", task.name)
    const inFlight = Metric.tagged(metrics.inFlight, "task", task.name)
    // Deliveries run under the tracer of the fiber that starts the worker.
    const traced = (yield* Effect.tracer) !== builtInTracer

    /** Result and key bookkeeping never fails the task: a store outage must not stop processing (T4). */
    const recordOutcome = Option.isNone(store) ? undefined : Effect.fnUntraced(
      function*(id: string, key: string | undefined, outcome: Outcome<S, F>) {
        const encoded = task.resultCodec.encode(outcome)
        const now = yield* Clock.currentTimeMillis
        if (Either.isLeft(encoded)) {
          yield* Effect.logWarning("task result does not encode with its Schema; not stored").pipe(
            Effect.annotateLogs({ ...tags, id, issue: encoded.left })
          )
        } else {
          yield* store.value.put({
            id,
            task: task.name,
            outcome: encoded.right,
            finishedAt: now,
            expiresAt: now + resultTtl
          }).pipe(
            Effect.catchAll((error) =>
              Effect.logWarning("could not store a task result", error).pipe(Effect.annotateLogs({ ...tags, id }))
            )
          )
        }
        if (key !== undefined) {
          yield* store.value.complete(task.name, key, id).pipe(
            Effect.catchAll((error) =>
              Effect.logWarning("could not release a task key", error).pipe(Effect.annotateLogs({ ...tags, id }))
            )
          )
        }
      }
    )

    /**
     * Called by the Broker once per failed attempt with its decision, before it carries it out:
     * a final failure (dead-lettered) is recorded like a success, and frees the key.
     */
    const onFailure = (failure: Broker.Failure<Task.RunError<F>>): Effect.Effect<void> => {
      const counted = Effect.zipRight(
        Metric.increment(failed),
        Option.isSome(failure.retryIn) ? Metric.increment(retried) : Metric.increment(deadLettered)
      )
      if (Option.isSome(failure.retryIn) || recordOutcome === undefined) return counted
      const id = failure.envelope.id
      return Effect.zipRight(
        recordOutcome(id, keyOf(failure.envelope), { _tag: "Failure", error: failure.error }),
        counted
      )
    }

    // Scopes of runs that have not ended; closed here if the worker stops first. Registered before
    // the subscription, so this runs after the subscription drained its in-flight runs.
    const openScopes = new Set<Scope.CloseableScope>()
    yield* Effect.addFinalizer(() =>
      Effect.forEach([...openScopes], (scope) => Scope.close(scope, Exit.interrupt(FiberId.none)), { discard: true })
    )

    // In-flight count, sampled into the gauge: a metric update per message costs more than the
    // no-op handler it would measure.
    let running = 0
    yield* Effect.suspend(() => Metric.set(inFlight, running)).pipe(
      Effect.repeat(Schedule.spaced("1 second")),
      // On the live clock: under TestClock, jumping the clock must not replay one sample per second.
      Effect.withClock(liveClock),
      Effect.interruptible,
      Effect.forkScoped
    )

    /**
     * Turns a finished attempt into the run's outcome: a failure goes on to the Broker, which
     * decides (see `onFailure`). Called as the run's last step: a success without a store is
     * counted right here, as an Effect per count costs more than the no-op task it counts.
     */
    const settle = (
      envelope: Broker.Envelope,
      key: string | undefined,
      exit: Exit.Exit<S, F | TaskTimeout>
    ): Effect.Effect<void, Task.RunError<F>> => {
      if (Exit.isSuccess(exit)) {
        if (recordOutcome === undefined) {
          succeeded.unsafeUpdate(1, labels)
          return Effect.void
        }
        return Effect.zipRight(
          recordOutcome(envelope.id, key, { _tag: "Success", value: exit.value }),
          Metric.increment(succeeded)
        )
      }
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure)) return Effect.fail(failure.value)
      const defect = Cause.dieOption(exit.cause)
      // Interrupted (shutdown): let the broker requeue it.
      if (Option.isNone(defect)) return Effect.failCause(exit.cause)
      return Effect.fail(new HandlerDefect({ detail: describe(defect.value) }))
    }

    const run = (
      payload: P,
      envelope: Broker.Envelope
    ): Effect.Effect<void, Task.RunError<F>, Exclude<R, Scope.Scope>> => {
      const key = keyOf(envelope)
      const taskContext: TaskQueue.TaskContext = {
        id: envelope.id,
        task: task.name,
        attempt: envelope.attempt,
        key,
        redelivered: envelope.redelivered,
        enqueuedAt: envelope.publishedAt,
        headers: envelope.headers,
        typedHeaders: envelope.typedHeaders
      }
      // A Scope per run, so a handler's scoped resources are released when its task ends.
      const attempt = Effect.flatMap(Scope.make(), (scope) => {
        openScopes.add(scope)
        running++
        const handled = fiberLocal.provideService(handler(payload, taskContext), Scope.Scope, scope)
        const timed = timeout === undefined ? handled : Effect.timeoutFail(handled, {
          duration: timeout,
          onTimeout: () =>
            new TaskTimeout({
              task: task.name,
              id: envelope.id,
              attempt: envelope.attempt,
              timeoutMillis: Duration.toMillis(timeout)
            })
        })
        // Not one uninterruptible region around the run (that costs more than a no-op handler):
        // interrupted (shutdown), this continuation does not run, the worker's finalizer closes
        // the scopes such runs left open, and the count no longer matters.
        return Effect.flatMap(Effect.exit(timed), (exit) => {
          running--
          openScopes.delete(scope)
          return Effect.zipRight(Scope.close(scope, exit), settle(envelope, key, exit))
        })
      })
      // The broker's `process <destination>` span is this run's span: name the task on it (a real tracer only).
      const named = traced
        ? Effect.zipRight(Effect.annotateCurrentSpan("effect_background.task", task.name), attempt)
        : attempt
      return fiberLocal.annotateLogs(named, { taskId: envelope.id })
    }

    yield* broker.subscribe<P, unknown, Task.RunError<F>, Exclude<R, Scope.Scope>>(task.topic, run, {
      group: task.group,
      concurrency,
      prefetch,
      retry,
      maxPriority: task.maxPriority,
      onFailure
    }).pipe(
      // Deliveries inherit the subscribing fiber's annotations: `task` is set once, not per run.
      Effect.annotateLogs(tags)
    )
  })
