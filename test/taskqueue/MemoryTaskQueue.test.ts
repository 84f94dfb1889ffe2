import { assert, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Layer, Metric, Schedule, Schema } from "effect"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import * as Task from "../../src/Task.js"
import * as TaskQueue from "../../src/TaskQueue.js"
import { uniqueName } from "../fixtures/env.js"
import { memoryBrokerWithProbe } from "../fixtures/memory.js"
import { taskQueueContract } from "./contract.js"

taskQueueContract("memory", memoryBrokerWithProbe, { real: false })

it.live("a run interrupted by shutdown still has its scoped resources released", () =>
  Effect.gen(function*() {
    const task = Task.make(uniqueName("stuck"), { payload: Schema.String })
    const started = yield* Deferred.make<void>()
    const released = yield* Deferred.make<Exit.Exit<unknown, unknown>>()
    const worker = TaskQueue.worker(task, () =>
      Effect.acquireRelease(Effect.void, (_, exit) =>
        Deferred.succeed(released, exit)).pipe(
          Effect.zipRight(Deferred.succeed(started, undefined)),
          Effect.zipRight(Effect.never)
        ))
    yield* Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(
        Layer.merge(worker, TaskQueue.layerWithoutResults()).pipe(
          Layer.provideMerge(MemoryBroker.layer({ shutdownTimeout: "50 millis" }))
        )
      )
      yield* TaskQueue.enqueueAll(task, ["x"]).pipe(Effect.provide(context))
      yield* Deferred.await(started)
    }))
    // The worker is gone: the run was interrupted past the shutdown timeout, and its scope closed.
    assert.isTrue(Exit.isInterrupted(yield* Deferred.await(released).pipe(Effect.timeout("5 seconds"))))
  }))

it.live("a worker counts its task's runs in the metrics, tagged with the task name", () =>
  Effect.gen(function*() {
    class Refused extends Schema.TaggedError<Refused>()("Refused", {}) {}
    const task = Task.make(uniqueName("counted"), {
      payload: Schema.String,
      failure: Refused,
      retry: Schedule.recurs(1),
      nonRetryable: (error) => error._tag === "Refused"
    })
    const value = (metric: Metric.Metric.Counter<number>) =>
      Effect.map(Metric.value(Metric.tagged(metric, "task", task.name)), (state) => state.count)
    const worker = TaskQueue.worker(task, (payload, ctx) =>
      payload === "refused"
        ? Effect.fail(new Refused())
        : payload === "flaky" && ctx.attempt === 1
        ? Effect.dieMessage("the first attempt fails")
        : Effect.void)
    yield* Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(
        Layer.merge(worker, TaskQueue.layerWithoutResults()).pipe(Layer.provideMerge(MemoryBroker.layer()))
      )
      yield* TaskQueue.enqueueAll(task, ["ok", "ok", "refused"]).pipe(Effect.provide(context))
      while ((yield* value(TaskQueue.metrics.succeeded)) < 2 || (yield* value(TaskQueue.metrics.deadLettered)) < 1) {
        yield* Effect.sleep("10 millis")
      }
      yield* TaskQueue.enqueueAll(task, ["flaky"]).pipe(Effect.provide(context))
      while ((yield* value(TaskQueue.metrics.succeeded)) < 3) yield* Effect.sleep("10 millis")
    })).pipe(Effect.timeout("10 seconds"))
    assert.deepStrictEqual(
      {
        succeeded: yield* value(TaskQueue.metrics.succeeded),
        failed: yield* value(TaskQueue.metrics.failed),
        retried: yield* value(TaskQueue.metrics.retried),
        deadLettered: yield* value(TaskQueue.metrics.deadLettered)
      },
      { succeeded: 3, failed: 2, retried: 1, deadLettered: 1 }
    )
  }))
