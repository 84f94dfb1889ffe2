import { assert, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Layer, Schema } from "effect"
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
      Effect.acquireRelease(Effect.void, (_, exit) => Deferred.succeed(released, exit)).pipe(
        Effect.zipRight(Deferred.succeed(started, undefined)),
        Effect.zipRight(Effect.never)
      ))
    yield* Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(worker.pipe(Layer.provideMerge(MemoryBroker.layer({ shutdownTimeout: "50 millis" }))))
      yield* TaskQueue.enqueueAll(task, ["x"]).pipe(Effect.provide(context))
      yield* Deferred.await(started)
    }))
    // The worker is gone: the run was interrupted past the shutdown timeout, and its scope closed.
    assert.isTrue(Exit.isInterrupted(yield* Deferred.await(released).pipe(Effect.timeout("5 seconds"))))
  }))
