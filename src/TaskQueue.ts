/**
 * Enqueue typed tasks, run them in workers, await their typed results. Tasks ride on the
 * Broker (any implementation): each task is a topic `tasks.<name>` consumed by the durable
 * group `tasks.<name>`, so retries, delays, dead-lettering and crash redelivery are the
 * Broker's. Results and deduplication keys live in a `ResultStore`.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type * as Broker from "./Broker.js"
import * as internal from "./internal/taskQueue.js"
import type { InvalidOptions } from "./InvalidOptions.js"
import type { ResultStore } from "./ResultStore.js"
import type * as Task from "./Task.js"
import type { EnqueueError, ResultError } from "./TaskError.js"

export {
  /**
   * @since 0.1.0
   * @category errors
   */
  EnqueueError,
  /**
   * @since 0.1.0
   * @category guards
   */
  isTaskError,
  /**
   * @since 0.1.0
   * @category errors
   */
  ResultError
} from "./TaskError.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const HandleTypeId: unique symbol = internal.HandleTypeId

/**
 * @since 0.1.0
 * @category type ids
 */
export type HandleTypeId = typeof HandleTypeId

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

/**
 * What `enqueue` returns: the task id and what is needed to await its typed result.
 *
 * @since 0.1.0
 * @category models
 */
export interface TaskHandle<S, F> {
  readonly [HandleTypeId]: HandleTypeId
  /** The task id (the Broker message id). */
  readonly id: string
  /** The task name. */
  readonly task: string
  readonly key: string | undefined
  /** True when an earlier enqueue with the same key was found and nothing was enqueued. */
  readonly deduplicated: boolean
  /** @internal */
  readonly codec: internal.HandleCodec<S, F>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface EnqueueOptions {
  /** Run no earlier than this from now. */
  readonly delay?: Duration.DurationInput | undefined
  /**
   * Deduplication key, scoped to the task name: while a task with this key is pending (or
   * within the layer's `keyWindow` after it was enqueued) nothing is enqueued and the first
   * task's handle is returned. Needs a result store.
   */
  readonly key?: string | undefined
  /** 0-255; honoured when the task is defined with `maxPriority`. */
  readonly priority?: number | undefined
  /** Extra headers carried to the handler's context. */
  readonly headers?: Readonly<Record<string, string>> | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface EnqueueAllOptions {
  readonly delay?: Duration.DurationInput | undefined
  readonly priority?: number | undefined
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** Broker confirms in flight: a positive integer. Default 1,000. */
  readonly window?: number | undefined
  /**
   * Up to this many tasks per RabbitMQ message (see `Broker.PublishAllOptions.pack`); each task
   * still runs, retries, dead-letters and reports its result on its own. 1 to 10,000; default
   * 100; 1 sends each alone. A worker that dies mid-way runs the finished tasks of its unfinished packs again.
   */
  readonly pack?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ResultOptions {
  /** How long to wait for the task to finish: positive, may be infinite. Default 30 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Encodes the payload with the task's Schema and publishes it once the broker confirmed. A bad
   * option or payload fails with `reason: "invalid"` (the `InvalidOptions` or encoding error is
   * the `cause`).
   */
  readonly enqueue: <Name extends string, P, S, F>(
    task: Task.Task<Name, P, S, F>,
    payload: P,
    options?: EnqueueOptions
  ) => Effect.Effect<TaskHandle<S, F>, EnqueueError>
  /**
   * Enqueues many tasks with up to `window` broker confirms in flight (the batch path, like
   * BullMQ `addBulk`); one outcome per payload, in order. No keys: use `enqueue` to deduplicate.
   * Fails as a whole only when the task's queue cannot be declared or an option is invalid.
   */
  readonly enqueueAll: <Name extends string, P, S, F>(
    task: Task.Task<Name, P, S, F>,
    payloads: Iterable<P>,
    options?: EnqueueAllOptions
  ) => Effect.Effect<ReadonlyArray<Either.Either<TaskHandle<S, F>, EnqueueError>>, EnqueueError>
  /**
   * Waits for the task's outcome: its success value, its typed failure, or a `ResultError`;
   * `InvalidOptions` (module `"TaskQueue"`) for a bad `timeout`.
   */
  readonly result: <S, F>(
    handle: TaskHandle<S, F>,
    options?: ResultOptions
  ) => Effect.Effect<S, F | ResultError | InvalidOptions>
  /** The outcome if the task has finished, without waiting. */
  readonly poll: <S, F>(
    handle: TaskHandle<S, F>
  ) => Effect.Effect<Option.Option<Effect.Effect<S, F | ResultError>>, ResultError>
  /**
   * Puts a task's dead-lettered runs back in its queue, to run again from attempt 1 — BullMQ's
   * `retryJobs({ state: "failed" })`, for after the cause is fixed. Returns how many were moved
   * (see `Broker.Service.redrive`).
   */
  readonly redrive: (
    task: Task.Any,
    options?: Broker.RedriveOptions
  ) => Effect.Effect<number, Broker.BrokerUnavailable | Broker.InvalidName | InvalidOptions | Broker.Unsupported>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class TaskQueue extends Context.Tag("effect-background/TaskQueue")<TaskQueue, Service>() {}

/**
 * Options of the TaskQueue layers; a value out of range fails the Layer build with
 * `InvalidOptions` (module `"TaskQueue"`, `field` the option's name).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * How long a key blocks new enqueues after the first enqueue, even once that task finished: a
   * finite duration. Default 0: a key blocks only while its task is pending.
   */
  readonly keyWindow?: Duration.DurationInput | undefined
  /**
   * How long a key stays claimed by a task that never finishes (lost before it was published, or
   * dead-lettered as poison): finite and positive. Default 1 day.
   */
  readonly keyPendingLimit?: Duration.DurationInput | undefined
  /** How often `result` polls a store that cannot notify: finite and positive. Default 50 ms. */
  readonly pollInterval?: Duration.DurationInput | undefined
}

/**
 * What a handler receives beside the payload.
 *
 * @since 0.1.0
 * @category models
 */
export interface TaskContext {
  readonly id: string
  readonly task: string
  /** 1 on the first attempt; incremented by each retry. */
  readonly attempt: number
  readonly key: string | undefined
  /** True when the broker redelivers after a crash or lost connection (not a retry). */
  readonly redelivered: boolean
  /** `undefined` when the producer did not record it (see `Broker.Envelope.publishedAt`). */
  readonly enqueuedAt: Date | undefined
  readonly headers: Readonly<Record<string, string>>
  /** Non-string header values from a foreign producer (see `Broker.Envelope.typedHeaders`). */
  readonly typedHeaders: Readonly<Record<string, Broker.HeaderValue>>
}

/**
 * @since 0.1.0
 * @category models
 */
export type Handler<P, S, F, R> = (payload: P, context: TaskContext) => Effect.Effect<S, F, R>

/**
 * Options of `worker`; a value out of range fails the Layer build with `InvalidOptions` (module
 * `"TaskQueue"`).
 *
 * @since 0.1.0
 * @category models
 */
export interface WorkerOptions {
  /** Tasks run at once by this worker: 1 to 65,535. Default 10. */
  readonly concurrency?: number | undefined
  /**
   * Tasks the broker may hand this worker ahead of its free slots (see
   * `Broker.SubscribeOptions.prefetch`): `concurrency` to 65,535. Default: `concurrency`. Raise it for many short tasks;
   * keep it for long ones, so a busy worker does not hold tasks an idle one could run. RabbitMQ
   * counts a pack from `enqueueAll` as one.
   */
  readonly prefetch?: number | undefined
  /** How long a finished task's result is kept: finite and positive. Default 1 day. */
  readonly resultTtl?: Duration.DurationInput | undefined
}

// ---------------------------------------------------------------------------
// constructors, layers
// ---------------------------------------------------------------------------

/**
 * Builds the service over the Broker, with results and deduplication keys in the `ResultStore`
 * when one is provided. Fails with `InvalidOptions` (module `"TaskQueue"`) for a bad option.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options?: Options): Effect.Effect<Service, InvalidOptions, Broker.Broker | ResultStore> =>
  internal.make(options)

/**
 * The TaskQueue service with results and deduplication keys in the provided `ResultStore`.
 * Fails to build with `InvalidOptions` (module `"TaskQueue"`) for a bad option.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<TaskQueue, InvalidOptions, Broker.Broker | ResultStore> =>
  Layer.effect(TaskQueue, make(options))

/**
 * As {@link layer}, reading the options from `Config`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<TaskQueue, ConfigError.ConfigError | InvalidOptions, Broker.Broker | ResultStore> =>
  Layer.effect(TaskQueue, Effect.flatMap(Config.unwrap(config), make))

/**
 * The TaskQueue service without a result store: `result` fails with `no-store`, and keyed
 * enqueues fail with `key-store`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWithoutResults = (options?: Options): Layer.Layer<TaskQueue, InvalidOptions, Broker.Broker> =>
  Layer.effect(TaskQueue, internal.makeWithoutStore(options))

/**
 * A worker for one task: consumes `tasks.<name>` through the Broker with a concurrency limit,
 * runs the handler with the task's timeout, retries typed failures, timeouts and defects on the
 * task's retry Schedule, dead-letters when it is exhausted (or the failure is non-retryable),
 * records outcomes in the `ResultStore` when one is provided, and drains in-flight tasks when
 * the Layer is released. Fails to build with `InvalidOptions` (module `"TaskQueue"`) for a bad
 * option.
 *
 * @since 0.1.0
 * @category layers
 */
export const worker = <Name extends string, P, S, F, R>(
  task: Task.Task<Name, P, S, F>,
  handler: Handler<P, S, F, R>,
  options?: WorkerOptions
): Layer.Layer<never, Broker.SubscribeError | InvalidOptions, Broker.Broker | Exclude<R, Scope.Scope>> =>
  Layer.scopedDiscard(internal.worker(task, handler, options))

/**
 * A handle for a task id known from elsewhere (another process, a database row), to await its
 * result.
 *
 * @since 0.1.0
 * @category constructors
 */
export const handle = <Name extends string, P, S, F>(
  task: Task.Task<Name, P, S, F>,
  id: string,
  key?: string
): TaskHandle<S, F> => internal.makeHandle(task, id, key, false)

// ---------------------------------------------------------------------------
// accessors
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category accessors
 */
export const enqueue = <Name extends string, P, S, F>(
  task: Task.Task<Name, P, S, F>,
  payload: P,
  options?: EnqueueOptions
): Effect.Effect<TaskHandle<S, F>, EnqueueError, TaskQueue> =>
  Effect.flatMap(TaskQueue, (queue) => queue.enqueue(task, payload, options))

/**
 * Enqueues many tasks (see `Service.enqueueAll`).
 *
 * @since 0.1.0
 * @category accessors
 */
export const enqueueAll = <Name extends string, P, S, F>(
  task: Task.Task<Name, P, S, F>,
  payloads: Iterable<P>,
  options?: EnqueueAllOptions
): Effect.Effect<ReadonlyArray<Either.Either<TaskHandle<S, F>, EnqueueError>>, EnqueueError, TaskQueue> =>
  Effect.flatMap(TaskQueue, (queue) => queue.enqueueAll(task, payloads, options))

/**
 * Puts a task's dead-lettered runs back in its queue (see `Service.redrive`).
 *
 * @since 0.1.0
 * @category accessors
 */
export const redrive = (
  task: Task.Any,
  options?: Broker.RedriveOptions
): Effect.Effect<
  number,
  Broker.BrokerUnavailable | Broker.InvalidName | InvalidOptions | Broker.Unsupported,
  TaskQueue
> => Effect.flatMap(TaskQueue, (queue) => queue.redrive(task, options))

/**
 * @since 0.1.0
 * @category accessors
 */
export const result = <S, F>(
  handle: TaskHandle<S, F>,
  options?: ResultOptions
): Effect.Effect<S, F | ResultError | InvalidOptions, TaskQueue> =>
  Effect.flatMap(TaskQueue, (queue) => queue.result(handle, options))

/**
 * @since 0.1.0
 * @category accessors
 */
export const poll = <S, F>(
  handle: TaskHandle<S, F>
): Effect.Effect<Option.Option<Effect.Effect<S, F | ResultError>>, ResultError, TaskQueue> =>
  Effect.flatMap(TaskQueue, (queue) => queue.poll(handle))

// ---------------------------------------------------------------------------
// metrics
// ---------------------------------------------------------------------------

/**
 * Effect metrics of task runs, tagged `task=<name>`: counters `succeeded`, `failed` (every
 * failed attempt), `retried`, `deadLettered`, and the `inFlight` gauge.
 *
 * @since 0.1.0
 * @category models
 */
export const metrics = internal.metrics
