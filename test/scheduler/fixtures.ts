import type { Duration } from "effect"
import { Clock, Context, Effect, Layer, Option, Queue, Schema } from "effect"
import * as Task from "../../src/Task.js"
import * as TaskQueue from "../../src/TaskQueue.js"

/** The task every scheduler test kicks. */
export const tick = Task.make("scheduler_test_tick", { payload: Schema.Struct({ n: Schema.Number }) })

export interface Enqueued {
  readonly task: string
  readonly payload: unknown
  readonly key: string | undefined
  /** Clock time of the enqueue. */
  readonly at: number
  /** Which scheduler instance enqueued it (the fiber's `instance` annotation, if any). */
  readonly instance: string
}

/** What the stand-in TaskQueue saw, in order, across every scheduler instance that shares it. */
export class Recorder extends Context.Tag("test/scheduler/Recorder")<Recorder, {
  readonly enqueued: Queue.Queue<Enqueued>
  readonly all: () => ReadonlyArray<Enqueued>
  /** Tasks reported as still running by `poll` (for the overlap policy). */
  readonly running: Set<string>
  /** Enqueues of these keys take this long (Clock time), stalling the scheduler's timer. */
  readonly slow: Map<string, Duration.DurationInput>
}>() {}

export const InstanceRef = Context.GenericTag<"test/scheduler/Instance", string>("test/scheduler/Instance")

/**
 * A stand-in TaskQueue that records each enqueue with its key and Clock time. It does not
 * deduplicate keys: a slot enqueued twice shows up twice.
 */
export const recorderLayer: Layer.Layer<TaskQueue.TaskQueue | Recorder> = Layer.unwrapEffect(
  Effect.gen(function*() {
    const enqueued = yield* Queue.unbounded<Enqueued>()
    const log: Array<Enqueued> = []
    const running = new Set<string>()
    const slow = new Map<string, Duration.DurationInput>()
    let n = 0
    const service: TaskQueue.Service = {
      enqueue: (task, payload, options) =>
        Effect.gen(function*() {
          const at = yield* Clock.currentTimeMillis
          const instance = Option.getOrElse(yield* Effect.serviceOption(InstanceRef), () => "default")
          const entry: Enqueued = { task: task.name, payload, key: options?.key, at, instance }
          log.push(entry)
          yield* Queue.offer(enqueued, entry)
          const stall = slow.get(options?.key ?? "")
          if (stall !== undefined) yield* Effect.sleep(stall)
          return TaskQueue.handle(task, `id-${++n}`, options?.key)
        }),
      enqueueAll: () => Effect.dieMessage("not used by the scheduler"),
      result: () => Effect.dieMessage("not used by the scheduler"),
      redrive: () => Effect.dieMessage("not used by the scheduler"),
      poll: (handle) =>
        Effect.succeed(
          running.has(handle.key ?? "") ? Option.none() : Option.some(Effect.dieMessage("result not recorded"))
        )
    }
    return Layer.merge(
      Layer.succeed(TaskQueue.TaskQueue, service),
      Layer.succeed(Recorder, { enqueued, all: () => log, running, slow })
    )
  })
)

/** Takes `n` enqueues from the recorder. */
export const take = (n: number) =>
  Effect.flatMap(Recorder, (r) => Effect.forEach(Array.from({ length: n }), () => Queue.take(r.enqueued)))
