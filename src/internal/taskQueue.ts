import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as FiberId from "effect/FiberId"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Broker from "../Broker.js"
import { HandlerDefect } from "../BrokerError.js"
import * as Task from "../Task.js"
import type * as TaskQueue from "../TaskQueue.js"
import * as fiberLocal from "./fiberLocal.js"
import * as messageId from "./messageId.js"
import { nextRetryDelay } from "./retry.js"
import { builtInTracer, withSpanWhenTraced } from "./tracing.js"
import type { Outcome, ResultCodec } from "./task.js"
import { EnqueueError, ResultError, type ResultStoreError } from "./taskErrors.js"

/** @internal */
export const HandleTypeId: TaskQueue.HandleTypeId = Symbol.for("effect-background/TaskQueue/TaskHandle") as TaskQueue.HandleTypeId

/** Header carrying the dedup key to the worker, which marks the key's claim done. */
const keyHeader = "eb-task-key"

const maxDetail = 4000

const defaultResultTtl = Duration.days(1)
const defaultResultTimeout = Duration.seconds(30)
const defaultPollInterval = Duration.millis(50)

const liveClock = Clock.make()

/** @internal */
export type HandleCodec<S, F> = ResultCodec<S, F>

/** @internal */
export const makeHandle = <Name extends string, P, S, F>(
  task: Task.Task<Name, P, S, F>,
  id: string,
  key: string | undefined,
  deduplicated: boolean
): TaskQueue.TaskHandle<S, F> => ({ [HandleTypeId]: HandleTypeId, id, task: task.name, key, deduplicated, codec: task.resultCodec })

const durationOption = (input: Duration.DurationInput | undefined, fallback: Duration.Duration, name: string) => {
  if (input === undefined) return fallback
  const decoded = Duration.decodeUnknown(input)
  if (Option.isNone(decoded) || Duration.toMillis(decoded.value) < 0) {
    throw new RangeError(`${name} must be a non-negative duration, got ${String(input)}`)
  }
  return decoded.value
}

// ---------------------------------------------------------------------------
// metrics
// ---------------------------------------------------------------------------

/** @internal */
export const metrics = {
  succeeded: Metric.counter("effect_background_tasks_succeeded", { description: "task runs that succeeded", incremental: true }),
  failed: Metric.counter("effect_background_tasks_failed", { description: "task attempts that failed", incremental: true }),
  retried: Metric.counter("effect_background_tasks_retried", { description: "failed attempts scheduled for retry", incremental: true }),
  deadLettered: Metric.counter("effect_background_tasks_dead_lettered", {
    description: "tasks dead-lettered (retries exhausted or non-retryable)",
    incremental: true
  }),
  inFlight: Metric.gauge("effect_background_tasks_in_flight", { description: "task runs in progress" })
} as const

// ---------------------------------------------------------------------------
// producer side
// ---------------------------------------------------------------------------

const enqueueErrorOf = (task: string, error: Broker.PublishError | Broker.SubscribeError): EnqueueError => {
  switch (error._tag) {
    case "EncodeError":
    case "InvalidName":
    case "InvalidOptions":
    case "Unsupported":
    case "DeclareConflict":
      return new EnqueueError({ task, reason: "invalid", ambiguous: false, detail: error.message })
    case "BrokerUnavailable":
      return new EnqueueError({ task, reason: "unavailable", ambiguous: false, detail: error.message })
    case "PublishRejected":
      return error.reason === "unroutable"
        ? new EnqueueError({
          task,
          reason: "no-queue",
          ambiguous: false,
          detail: `no queue is bound to "${error.topic}": this broker cannot declare queues ahead of workers, start a worker first`
        })
        : new EnqueueError({ task, reason: error.reason === "invalid" || error.reason === "too-large" ? "invalid" : "rejected", ambiguous: error.ambiguous, detail: error.message })
  }
}

const storeUnavailable = (task: string, id: string, error: ResultStoreError) =>
  new ResultError({ task, id, reason: "store-unavailable", detail: error.message, cause: error })

/** Turns a stored outcome into the caller's typed result. */
const fromOutcome = <S, F>(handle: TaskQueue.TaskHandle<S, F>, stored: TaskQueue.StoredResult): Effect.Effect<S, F | ResultError> => {
  const decoded = handle.codec.decode(stored.outcome)
  if (Either.isLeft(decoded)) {
    return Effect.fail(new ResultError({ task: handle.task, id: handle.id, reason: "malformed", detail: decoded.left }))
  }
  const outcome: Outcome<S, F> = decoded.right
  if (outcome._tag === "Success") return Effect.succeed(outcome.value)
  const error = outcome.error
  if (error instanceof Task.TaskTimeout) {
    return Effect.fail(new ResultError({ task: handle.task, id: handle.id, reason: "task-timeout", detail: error.message }))
  }
  if (error instanceof HandlerDefect) {
    return Effect.fail(new ResultError({ task: handle.task, id: handle.id, reason: "task-defect", detail: error.detail }))
  }
  return Effect.fail(error)
}

const noStore = (task: string, id: string) =>
  new ResultError({ task, id, reason: "no-store", detail: "the TaskQueue layer was built without a result store" })

const makeService = (
  broker: Broker.Service,
  store: Option.Option<TaskQueue.ResultStoreService>,
  options: TaskQueue.Options | undefined
): TaskQueue.Service => {
  const keyWindow = Duration.toMillis(durationOption(options?.keyWindow, Duration.zero, "keyWindow"))
  const keyPendingLimit = Duration.toMillis(durationOption(options?.keyPendingLimit, Duration.days(1), "keyPendingLimit"))
  const pollInterval = durationOption(options?.pollInterval, defaultPollInterval, "pollInterval")

  const declare = <A>(task: DeclaredTask<A>) => declareOnce(broker, task)

  const enqueue = <Name extends string, P, S, F>(
    task: Task.Task<Name, P, S, F>,
    payload: P,
    enqueueOptions?: TaskQueue.EnqueueOptions
  ): Effect.Effect<TaskQueue.TaskHandle<S, F>, EnqueueError> =>
    Effect.gen(function*() {
      const id = messageId.make()
      const key = enqueueOptions?.key
      yield* Effect.mapError(declare(task), (e) => enqueueErrorOf(task.name, e))
      const publishOptions: Broker.PublishOptions = {
        messageId: id,
        delay: enqueueOptions?.delay,
        priority: enqueueOptions?.priority,
        headers: key === undefined ? enqueueOptions?.headers : { ...enqueueOptions?.headers, [keyHeader]: key },
        persistent: task.delivery === "persistent"
      }
      const publish = broker.publish(task.topic, payload, publishOptions).pipe(
        Effect.tapError((error) => Effect.sync(() => forgetIfUnroutable(broker, task.group, error))),
        Effect.mapError((error) => enqueueErrorOf(task.name, error))
      )
      if (key === undefined) {
        yield* publish
        return makeHandle(task, id, undefined, false)
      }
      if (Option.isNone(store)) {
        return yield* new EnqueueError({ task: task.name, reason: "key-store", ambiguous: false, detail: "keys need a result store; none was provided" })
      }
      const now = yield* Clock.currentTimeMillis
      const holder = yield* Effect.mapError(
        store.value.claim({ task: task.name, key, id, claimedAt: now, expiresAt: now + keyWindow, staleAt: now + keyPendingLimit }),
        (error) => new EnqueueError({ task: task.name, reason: "key-store", ambiguous: false, detail: error.message, cause: error })
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

  const poll = <S, F>(
    handle: TaskQueue.TaskHandle<S, F>
  ): Effect.Effect<Option.Option<Effect.Effect<S, F | ResultError>>, ResultError> =>
    Effect.gen(function*() {
      if (Option.isNone(store)) return yield* noStore(handle.task, handle.id)
      const now = yield* Clock.currentTimeMillis
      const stored = yield* Effect.mapError(store.value.get(handle.id, now), (e) => storeUnavailable(handle.task, handle.id, e))
      return Option.map(stored, (s) => fromOutcome(handle, s))
    })

  const result = <S, F>(handle: TaskQueue.TaskHandle<S, F>, resultOptions?: TaskQueue.ResultOptions): Effect.Effect<S, F | ResultError> =>
    Effect.gen(function*() {
      if (Option.isNone(store)) return yield* noStore(handle.task, handle.id)
      const s = store.value
      const timeout = durationOption(resultOptions?.timeout, defaultResultTimeout, "timeout")
      const polling: Effect.Effect<TaskQueue.StoredResult, ResultStoreError> = Clock.currentTimeMillis.pipe(
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
            new ResultError({ task: handle.task, id: handle.id, reason: "wait-timeout", detail: `not finished within ${Duration.format(timeout)}` })
        })
      )
      return yield* fromOutcome(handle, stored)
    })

  return { enqueue, result, poll }
}

type DeclaredTask<A> = {
  readonly group: string
  readonly maxPriority: number | undefined
  readonly topic: Broker.Subscribable<A, unknown>
}

/**
 * Task queues this process declared, per broker: an enqueue before any worker started is kept,
 * and only the first enqueue of a task pays for declaring its queue (a channel and several round
 * trips to RabbitMQ). A failed declaration is forgotten, so the next enqueue tries again.
 */
const declaredBy = new WeakMap<Broker.Service, Map<string, Effect.Effect<void, Broker.SubscribeError>>>()

const declareOnce = <A>(broker: Broker.Service, task: DeclaredTask<A>): Effect.Effect<void, Broker.SubscribeError> => {
  let declared = declaredBy.get(broker)
  if (declared === undefined) {
    declared = new Map()
    declaredBy.set(broker, declared)
  }
  const known = declared
  let once = known.get(task.group)
  if (once === undefined) {
    once = Effect.runSync(
      Effect.cached(
        Effect.tapError(
          broker.declare(task.topic, { group: task.group, maxPriority: task.maxPriority }),
          () => Effect.sync(() => known.delete(task.group))
        )
      )
    )
    known.set(task.group, once)
  }
  return once
}

/** An unroutable publish means the task's queue is gone (deleted since): declare it again next time. */
const forgetIfUnroutable = (broker: Broker.Service, group: string, error: Broker.PublishError): void => {
  if (error._tag === "PublishRejected" && error.reason === "unroutable") declaredBy.get(broker)?.delete(group)
}

/** Tasks per RabbitMQ message in `enqueueAll`: ~100× fewer messages for RabbitMQ to move. */
const defaultPack = 100

/** @internal */
export const enqueueAll = <Name extends string, P, S, F>(
  task: Task.Task<Name, P, S, F>,
  payloads: Iterable<P>,
  options?: TaskQueue.EnqueueAllOptions
): Effect.Effect<ReadonlyArray<Either.Either<TaskQueue.TaskHandle<S, F>, EnqueueError>>, EnqueueError, Broker.Broker> =>
  Effect.gen(function*() {
    const broker = yield* Broker.Broker
    yield* Effect.mapError(declareOnce(broker, task), (e) => enqueueErrorOf(task.name, e))
    const ids: Array<string> = []
    const entries: Array<Broker.PublishEntry> = []
    for (const payload of payloads) {
      const id = messageId.make()
      ids.push(id)
      entries.push(Broker.entry(task.topic, payload, {
        messageId: id,
        delay: options?.delay,
        priority: options?.priority,
        headers: options?.headers,
        persistent: task.delivery === "persistent"
      }))
    }
    const outcomes = yield* broker.publishAll(entries, { window: options?.window, pack: options?.pack ?? defaultPack })
    return outcomes.map((outcome, i) =>
      Either.match(outcome, {
        onLeft: (error) => {
          forgetIfUnroutable(broker, task.group, error)
          return Either.left(enqueueErrorOf(task.name, error))
        },
        onRight: () => Either.right(makeHandle(task, ids[i] ?? "", undefined, false))
      })
    )
  }).pipe(
    withSpanWhenTraced("task.enqueueAll", {
      kind: "producer",
      captureStackTrace: false,
      attributes: { "effect_background.task": task.name }
    })
  )

/** @internal */
export const make = (options: TaskQueue.Options | undefined) =>
  Effect.gen(function*() {
    const broker = yield* Broker.Broker
    const store = yield* Effect.serviceOption(ResultStore)
    return makeService(broker, store, options)
  })

/** @internal */
export const makeWithoutStore = (options: TaskQueue.Options | undefined) =>
  Effect.map(Broker.Broker, (broker) => makeService(broker, Option.none(), options))

/**
 * The same key as the `TaskQueue.ResultStore` class: tags resolve by key, and this keeps the
 * module graph acyclic.
 *
 * @internal
 */
export const ResultStore = Context.GenericTag<TaskQueue.ResultStore, TaskQueue.ResultStoreService>(
  "effect-background/TaskQueue/ResultStore"
)

// ---------------------------------------------------------------------------
// worker side
// ---------------------------------------------------------------------------

/** The task's retry Schedule, stopped at once for non-retryable failures. */
const effectiveRetry = <Name extends string, P, S, F>(task: Task.Task<Name, P, S, F>): Schedule.Schedule<unknown, Task.RunError<F>> => {
  const nonRetryable = task.nonRetryable
  if (nonRetryable === undefined) return task.retry
  return Schedule.whileInput(
    task.retry,
    (error: Task.RunError<F>) => error instanceof Task.TaskTimeout || error instanceof HandlerDefect || !nonRetryable(error)
  )
}

const withoutKey = (headers: Readonly<Record<string, string>>): Record<string, string> => {
  const { [keyHeader]: _key, ...rest } = headers
  return rest
}

const describe = (error: unknown): string => {
  const text = error instanceof Error ? error.message : typeof error === "string" ? error : JSON.stringify(error) ?? String(error)
  return text.length > maxDetail ? `${text.slice(0, maxDetail)}…` : text
}

/** @internal */
export const worker = <Name extends string, P, S, F, R>(
  task: Task.Task<Name, P, S, F>,
  handler: TaskQueue.Handler<P, S, F, R>,
  options: TaskQueue.WorkerOptions | undefined
): Effect.Effect<void, Broker.SubscribeError, Broker.Broker | Exclude<R, Scope.Scope> | Scope.Scope> =>
  Effect.gen(function*() {
    const broker = yield* Broker.Broker
    const store = yield* Effect.serviceOption(ResultStore)
    const resultTtl = Duration.toMillis(durationOption(options?.resultTtl, defaultResultTtl, "resultTtl"))
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
    const recordOutcome = Option.isNone(store) ? undefined : (id: string, key: string | undefined, outcome: Outcome<S, F>) =>
      Effect.gen(function*() {
        const encoded = task.resultCodec.encode(outcome)
        const now = yield* Clock.currentTimeMillis
        if (Either.isLeft(encoded)) {
          yield* Effect.logWarning("task result does not encode with its Schema; not stored").pipe(
            Effect.annotateLogs({ ...tags, id, issue: encoded.left })
          )
        } else {
          yield* store.value.put({ id, task: task.name, outcome: encoded.right, finishedAt: now, expiresAt: now + resultTtl }).pipe(
            Effect.catchAll((error) => Effect.logWarning("could not store a task result", error).pipe(Effect.annotateLogs({ ...tags, id })))
          )
        }
        if (key !== undefined) {
          yield* store.value.complete(task.name, key, id).pipe(
            Effect.catchAll((error) => Effect.logWarning("could not release a task key", error).pipe(Effect.annotateLogs({ ...tags, id })))
          )
        }
      })

    // Scopes of runs that have not ended; closed here if the worker stops first.
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
     * Records a finished attempt; a failure goes on to the broker, which retries or dead-letters
     * it. Called as the run's last step: a success without a store is counted right here, as
     * an Effect per count costs more than the no-op task it counts.
     */
    const settle = (
      envelope: Broker.Envelope,
      key: string | undefined,
      exit: Exit.Exit<S, F | Task.TaskTimeout>
    ): Effect.Effect<void, Task.RunError<F>> => {
      if (Exit.isSuccess(exit)) {
        if (recordOutcome === undefined) {
          succeeded.unsafeUpdate(1, labels)
          return Effect.void
        }
        return Effect.zipRight(recordOutcome(envelope.id, key, { _tag: "Success", value: exit.value }), Metric.increment(succeeded))
      }
      const failure = Cause.failureOption(exit.cause)
      const defect = Cause.dieOption(exit.cause)
      // Interrupted (shutdown): let the broker requeue it.
      if (Option.isNone(failure) && Option.isNone(defect)) return Effect.failCause(exit.cause)
      const error: Task.RunError<F> = Option.isSome(failure) ? failure.value : new HandlerDefect({ detail: describe(Option.getOrUndefined(defect)) })
      return nextRetryDelay(retry, envelope.attempt, error).pipe(
        Effect.flatMap((delay) =>
          Option.isSome(delay)
            ? Metric.increment(retried)
            : (recordOutcome === undefined ? Effect.void : recordOutcome(envelope.id, key, { _tag: "Failure", error })).pipe(
              Effect.zipRight(Metric.increment(deadLettered))
            )
        ),
        Effect.zipRight(Metric.increment(failed)),
        Effect.zipRight(Effect.fail(error))
      )
    }

    const run = (payload: P, envelope: Broker.Envelope): Effect.Effect<void, Task.RunError<F>, Exclude<R, Scope.Scope>> => {
      const key = envelope.headers[keyHeader]
      const headers = key === undefined ? envelope.headers : withoutKey(envelope.headers)
      const taskContext: TaskQueue.TaskContext = {
        id: envelope.id,
        task: task.name,
        attempt: envelope.attempt,
        key,
        redelivered: envelope.redelivered,
        enqueuedAt: envelope.publishedAt,
        headers
      }
      // A Scope per run, so a handler's scoped resources are released when its task ends.
      const attempt = Effect.flatMap(Scope.make(), (scope) => {
        openScopes.add(scope)
        running++
        const handled = fiberLocal.provideService(handler(payload, taskContext), Scope.Scope, scope)
        const timed = timeout === undefined ? handled : Effect.timeoutFail(handled, {
          duration: timeout,
          onTimeout: () =>
            new Task.TaskTimeout({ task: task.name, id: envelope.id, attempt: envelope.attempt, timeoutMillis: Duration.toMillis(timeout) })
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
      // The broker's `broker.process` span is this run's span: name the task on it (a real tracer only).
      const named = traced ? Effect.zipRight(Effect.annotateCurrentSpan("effect_background.task", task.name), attempt) : attempt
      return fiberLocal.annotateLogs(named, { taskId: envelope.id })
    }

    yield* broker.subscribe<P, unknown, Task.RunError<F>, Exclude<R, Scope.Scope>>(task.topic, run, {
      group: task.group,
      concurrency: options?.concurrency,
      prefetch: options?.prefetch,
      retry,
      maxPriority: task.maxPriority
    }).pipe(
      // Deliveries inherit the subscribing fiber's annotations: `task` is set once, not per run.
      Effect.annotateLogs(tags)
    )
  })
