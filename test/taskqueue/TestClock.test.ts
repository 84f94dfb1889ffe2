/**
 * Test mode: memory broker + memory results in-process, delays and retries driven by TestClock.
 * (Kept apart from the live-clock suite: a `layer(..., { excludeTestServices: true })` block in
 * the same file leaves these tests on the live clock.)
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Either, Layer, Option, Ref, Schedule, TestClock } from "effect"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import * as ResultStore from "../../src/ResultStore.js"
import * as Task from "../../src/Task.js"
import * as TaskQueue from "../../src/TaskQueue.js"
import { settled } from "../fixtures/memory.js"
import { Flaky, welcomeTask } from "./contract.js"

/** A TaskQueue with a memory result store, the given worker and the memory broker, on the test's clock. */
const buildMemoryTaskQueue = <E, R>(worker: Layer.Layer<never, E, R>) =>
  Layer.build(
    Layer.mergeAll(TaskQueue.layer(), worker).pipe(
      Layer.provideMerge(ResultStore.layerMemory),
      Layer.provideMerge(MemoryBroker.layer())
    )
  )

describe("TaskQueue on the memory broker and TestClock", () => {
  it.scoped("enqueue then await the result in-process; a delay elapses only when the clock moves", () =>
    Effect.gen(function*() {
      const task = welcomeTask()
      const ran = yield* Ref.make(0)
      const worker = TaskQueue.worker(
        task,
        (_, ctx) => Ref.update(ran, (n) => n + 1).pipe(Effect.as({ messageId: ctx.id, at: new Date(0) }))
      )
      const env = yield* buildMemoryTaskQueue(worker)
      yield* Effect.gen(function*() {
        const memory = yield* MemoryBroker.MemoryBroker
        const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" }, { delay: "1 hour" })
        yield* settled(
          "the task is delayed",
          memory.queue(task.group),
          (q) => Option.isSome(q) && q.value.delayed === 1
        )
        yield* TestClock.adjust("59 minutes")
        yield* settled("still delayed", memory.queue(task.group), (q) => Option.isSome(q) && q.value.delayed === 1)
        assert.isTrue(Option.isNone(yield* TaskQueue.poll(handle)))
        assert.strictEqual(yield* Ref.get(ran), 0)
        yield* TestClock.adjust("1 minute")
        const sent = yield* TaskQueue.result(handle)
        assert.strictEqual(sent.messageId, handle.id)
        assert.strictEqual(yield* Ref.get(ran), 1)
      }).pipe(Effect.provide(env))
    }))

  it.scoped("retries follow the task's Schedule on TestClock", () =>
    Effect.gen(function*() {
      const task = welcomeTask().pipe(
        Task.withRetry(Schedule.spaced("10 minutes").pipe(Schedule.intersect(Schedule.recurs(2))))
      )
      const attempts = yield* Ref.make(0)
      const third = yield* Deferred.make<void>()
      const worker = TaskQueue.worker(task, (_, ctx) =>
        Ref.update(attempts, (n) => n + 1).pipe(
          Effect.zipRight(
            ctx.attempt < 3 ? Effect.fail(new Flaky({ attempt: ctx.attempt })) : Deferred.succeed(third, undefined)
          ),
          Effect.as({ messageId: ctx.id, at: new Date(0) })
        ))
      const env = yield* buildMemoryTaskQueue(worker)
      yield* Effect.gen(function*() {
        const memory = yield* MemoryBroker.MemoryBroker
        const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" })
        yield* settled("first retry scheduled", memory.queue(task.group), (q) =>
          Option.isSome(q) && q.value.retried === 1 && q.value.delayed === 1)
        assert.strictEqual(yield* Ref.get(attempts), 1)
        yield* TestClock.adjust("10 minutes")
        yield* settled("second retry scheduled", memory.queue(task.group), (q) =>
          Option.isSome(q) && q.value.retried === 2 && q.value.delayed === 1)
        assert.strictEqual(yield* Ref.get(attempts), 2)
        yield* TestClock.adjust("10 minutes")
        yield* Deferred.await(third)
        assert.isTrue(Either.isRight(yield* Effect.either(TaskQueue.result(handle))))
        assert.strictEqual(yield* Ref.get(attempts), 3)
      }).pipe(Effect.provide(env))
    }))

  it.scoped("a running worker does not make TestClock jumps expensive", () =>
    Effect.gen(function*() {
      const task = welcomeTask()
      const worker = TaskQueue.worker(task, (_, ctx) => Effect.succeed({ messageId: ctx.id, at: new Date(0) }))
      const env = yield* buildMemoryTaskQueue(worker)
      const started = Date.now()
      yield* TestClock.adjust("3650 days")
      assert.isBelow(Date.now() - started, 2000, "no per-second work replayed over ten years")
      const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" }).pipe(Effect.provide(env))
      assert.strictEqual((yield* TaskQueue.result(handle).pipe(Effect.provide(env))).messageId, handle.id)
    }))
})
