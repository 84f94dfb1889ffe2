/**
 * The TaskQueue suite, run on every Broker implementation (memory, RabbitMQ) on the live clock.
 * Tasks are unique per test and per run; each test builds its own TaskQueue, result store and
 * workers over the suite's shared broker.
 */
import { assert, layer } from "@effect/vitest"
import type { Layer as L } from "effect"
import {
  Cause,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  FiberRef,
  HashMap,
  Layer,
  Option,
  Ref,
  Schedule,
  Schema
} from "effect"
import * as Broker from "../../src/Broker.js"
import * as ResultStore from "../../src/ResultStore.js"
import * as Task from "../../src/Task.js"
import * as TaskQueue from "../../src/TaskQueue.js"
import { ContractProbe } from "../broker/contract.js"
import { uniqueName } from "../fixtures/env.js"

export class InvalidEmail extends Schema.TaggedError<InvalidEmail>()("InvalidEmail", { address: Schema.String }) {}
export class Flaky extends Schema.TaggedError<Flaky>()("Flaky", { attempt: Schema.Number }) {}

const Welcome = Schema.Struct({ userId: Schema.String, email: Schema.String })
const Sent = Schema.Struct({ messageId: Schema.String, at: Schema.Date })

export const welcomeTask = (name = uniqueName("welcome")) =>
  Task.make(name, { payload: Welcome, success: Sent, failure: Schema.Union(InvalidEmail, Flaky) })

class Boom extends Data.Error<{ readonly message: string }> {}

/** The services a test body sees. */
export type Env = TaskQueue.TaskQueue | ResultStore.ResultStore | Broker.Broker | ContractProbe

/** TaskQueue + a fresh memory result store + the given workers, over the suite's broker. */
export const withQueue = <A, E, R>(
  workers: L.Layer<never, Broker.SubscribeError, Broker.Broker | ResultStore.ResultStore>,
  body: Effect.Effect<A, E, R>,
  store: L.Layer<ResultStore.ResultStore> = ResultStore.layerMemory
) =>
  Effect.provide(
    body,
    Layer.mergeAll(TaskQueue.layer(), workers).pipe(Layer.provideMerge(store))
  )

export const taskQueueContract = <E>(
  name: string,
  brokerLayer: L.Layer<Broker.Broker | ContractProbe, E>,
  options: {
    readonly real: boolean
    readonly declaresAhead?: boolean
    /** False when the transport declares priorities absent (Redis): that case is skipped. */
    readonly priority?: boolean
  }
): void => {
  const deadline = Duration.seconds(options.real ? 20 : 10)
  const within = <A, X, R>(label: string, effect: Effect.Effect<A, X, R>) =>
    Effect.timeoutFail(effect, { duration: deadline, onTimeout: () => new Error(`timed out waiting for ${label}`) })

  const deadLetters = (group: string, count: number) =>
    Effect.flatMap(ContractProbe, (probe) =>
      within(
        `${count} dead letter(s) in ${group}`,
        Effect.gen(function*() {
          while (true) {
            const letters = yield* probe.deadLetters(group)
            if (letters.length >= count) return letters
            yield* Effect.sleep("20 millis")
          }
        })
      ))

  const resultOf = <S, F>(handle: TaskQueue.TaskHandle<S, F>) =>
    Effect.either(TaskQueue.result(handle, { timeout: deadline }))

  layer(brokerLayer, { excludeTestServices: true, timeout: "90 seconds" })(`TaskQueue (${name})`, (it) => {
    const withPriority = options.priority === false ? it.scoped.skip : it.scoped
    it.scoped("a task's typed success value is returned to the producer", () => {
      const task = welcomeTask()
      const worker = TaskQueue.worker(
        task,
        (payload, ctx) =>
          Effect.succeed({ messageId: `${payload.userId}:${ctx.id}`, at: new Date("2026-01-01T00:00:00Z") })
      )
      return withQueue(
        worker,
        Effect.gen(function*() {
          const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" })
          assert.strictEqual(handle.task, task.name)
          assert.isFalse(handle.deduplicated)
          const sent = yield* within("the result", TaskQueue.result(handle))
          assert.deepStrictEqual(sent, { messageId: `u1:${handle.id}`, at: new Date("2026-01-01T00:00:00Z") })
        })
      )
    })

    // Needs `Transport.declare` (both RabbitMQ and memory have it).
    if (options.declaresAhead !== false) {
      it.scoped("a task enqueued before any worker exists waits for one", () => {
        const task = welcomeTask()
        const worker = TaskQueue.worker(
          task,
          (payload, ctx) => Effect.succeed({ messageId: `${payload.userId}:${ctx.id}`, at: new Date(0) })
        )
        return Effect.gen(function*() {
          const store = yield* Layer.build(ResultStore.layerMemory)
          const storeLayer = Layer.succeedContext(store)
          const early = yield* withQueue(
            Layer.empty,
            TaskQueue.enqueue(task, { userId: "early", email: "a@b.c" }),
            storeLayer
          )
          const sent = yield* withQueue(worker, within("the result", TaskQueue.result(early)), storeLayer)
          assert.strictEqual(sent.messageId, `early:${early.id}`)
        })
      })
    }

    it.scoped("each run has its own Scope, released when it ends, and logs annotated with its own task id", () => {
      const task = welcomeTask()
      return Effect.gen(function*() {
        const released = yield* Ref.make<ReadonlyArray<string>>([])
        const seen = yield* Ref.make<
          ReadonlyArray<
            {
              readonly id: string
              readonly annotated: unknown
              readonly taskAnnotated: unknown
              readonly hasScope: boolean
            }
          >
        >([])
        // One at a time, so the memory broker's single worker fiber runs every task in turn.
        const worker = TaskQueue.worker(task, (payload, ctx) =>
          Effect.gen(function*() {
            yield* Effect.addFinalizer(() => Ref.update(released, (all) => [...all, ctx.id]))
            const annotations = yield* FiberRef.get(FiberRef.currentLogAnnotations)
            const before = yield* Ref.get(released)
            yield* Ref.update(seen, (all) => [...all, {
              id: ctx.id,
              annotated: HashMap.get(annotations, "taskId").pipe(Option.getOrUndefined),
              taskAnnotated: HashMap.get(annotations, "task").pipe(Option.getOrUndefined),
              hasScope: !before.includes(ctx.id)
            }])
            return { messageId: payload.userId, at: new Date(0) }
          }), { concurrency: 1 })
        yield* withQueue(
          worker,
          Effect.gen(function*() {
            const handles = yield* Effect.forEach(
              ["a", "b", "c"],
              (userId) => TaskQueue.enqueue(task, { userId, email: "a@b.c" })
            )
            for (const handle of handles) {
              yield* within("the result", TaskQueue.result(handle))
              // The run's Scope closed when the handler ended, before its result was stored.
              assert.include(yield* Ref.get(released), handle.id)
            }
            const runs = yield* Ref.get(seen)
            assert.sameMembers(runs.map((run) => run.id), handles.map((handle) => handle.id))
            for (const run of runs) {
              assert.strictEqual(run.annotated, run.id, "each run's logs carry its own task id")
              assert.strictEqual(run.taskAnnotated, task.name, "and the task's name")
              assert.isTrue(run.hasScope)
            }
          })
        )
      })
    })

    it.scoped("a run's scoped resources and scoped fibers end with the run, a timed-out one included", () => {
      const task = Task.make(uniqueName("scoped"), {
        payload: Welcome,
        success: Sent,
        timeout: "300 millis",
        retry: Schedule.recurs(0)
      })
      return Effect.gen(function*() {
        const released = yield* Ref.make<ReadonlyArray<readonly [string, "success" | "failure"]>>([])
        const background = yield* Ref.make<ReadonlyArray<string>>([])
        const worker = TaskQueue.worker(task, (payload, ctx) =>
          Effect.gen(function*() {
            yield* Effect.acquireRelease(Effect.void, (_, exit) =>
              Ref.update(
                released,
                (all) => [...all, [payload.userId, exit._tag === "Success" ? "success" : "failure"] as const]
              ))
            // A scoped fiber lives until its run ends, then is interrupted.
            yield* Effect.forkScoped(
              Effect.onInterrupt(Effect.never, () => Ref.update(background, (all) => [...all, payload.userId]))
            )
            if (payload.userId === "slow") {
              yield* Effect.never
            }
            return { messageId: ctx.id, at: new Date(0) }
          }))
        yield* withQueue(
          worker,
          Effect.gen(function*() {
            const fast = yield* TaskQueue.enqueue(task, { userId: "fast", email: "a@b.c" })
            const slow = yield* TaskQueue.enqueue(task, { userId: "slow", email: "a@b.c" })
            assert.isTrue(Either.isRight(yield* resultOf(fast)))
            const timedOut = yield* resultOf(slow)
            assert.isTrue(
              Either.isLeft(timedOut) && timedOut.left instanceof TaskQueue.ResultError &&
                timedOut.left.reason === "task-timeout"
            )
            assert.sameDeepMembers([...(yield* Ref.get(released))], [["fast", "success"], ["slow", "failure"]])
            assert.sameMembers([...(yield* Ref.get(background))], ["fast", "slow"])
          })
        )
      })
    })

    it.scoped("a task's typed failure is returned to the producer and dead-lettered", () => {
      const task = welcomeTask()
      const worker = TaskQueue.worker(task, (payload) => Effect.fail(new InvalidEmail({ address: payload.email })))
      return withQueue(
        worker,
        Effect.gen(function*() {
          const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "nope" })
          const result = yield* resultOf(handle)
          assert.isTrue(Either.isLeft(result))
          if (Either.isRight(result)) return
          assert.instanceOf(result.left, InvalidEmail)
          assert.deepStrictEqual(result.left, new InvalidEmail({ address: "nope" }))
          const letters = yield* deadLetters(task.group, 1)
          assert.strictEqual(letters[0]?.messageId, handle.id)
        })
      )
    })

    it.scoped("a dead-lettered task, redriven once its cause is fixed, runs again from attempt 1", () => {
      const task = welcomeTask()
      let down = true
      const attempts: Array<number> = []
      const worker = TaskQueue.worker(task, (payload, ctx) =>
        Effect.suspend(() => {
          attempts.push(ctx.attempt)
          return down
            ? Effect.fail(new InvalidEmail({ address: payload.email }))
            : Effect.succeed({ messageId: `sent:${ctx.id}`, at: new Date(0) })
        }))
      return withQueue(
        worker,
        Effect.gen(function*() {
          const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" })
          const failed = yield* resultOf(handle)
          assert.isTrue(Either.isLeft(failed), "dead-lettered while its cause lasts")
          down = false
          // Polled: the dead letter lands just after the failure was stored.
          const moved = yield* within(
            "a dead letter to redrive",
            Effect.gen(function*() {
              while (true) {
                const count = yield* TaskQueue.redrive(task)
                if (count > 0) return count
                yield* Effect.sleep("20 millis")
              }
            })
          )
          assert.strictEqual(moved, 1)
          yield* within(
            "the redriven run",
            Effect.gen(function*() {
              while (attempts.length < 2) yield* Effect.sleep("20 millis")
            })
          )
          assert.deepStrictEqual(attempts, [1, 1])
          // The stored result becomes the rerun's.
          const sent = yield* within(
            "the rerun's result",
            Effect.gen(function*() {
              while (true) {
                const result = yield* resultOf(handle)
                if (Either.isRight(result)) return result.right
                yield* Effect.sleep("20 millis")
              }
            })
          )
          assert.strictEqual(sent.messageId, `sent:${handle.id}`)
        })
      )
    })

    it.scoped("Schedule.recurs(3) means exactly 4 attempts, then the failure is final", () => {
      const task = welcomeTask().pipe(Task.withRetry(Schedule.recurs(3)))
      return Effect.gen(function*() {
        const attempts = yield* Ref.make<ReadonlyArray<number>>([])
        const worker = TaskQueue.worker(
          task,
          (_, ctx) =>
            Ref.update(attempts, (all) => [...all, ctx.attempt]).pipe(
              Effect.zipRight(Effect.fail(new Flaky({ attempt: ctx.attempt })))
            )
        )
        yield* withQueue(
          worker,
          Effect.gen(function*() {
            const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" })
            const result = yield* resultOf(handle)
            assert.deepStrictEqual(result, Either.left(new Flaky({ attempt: 4 })))
            yield* deadLetters(task.group, 1)
            assert.deepStrictEqual(yield* Ref.get(attempts), [1, 2, 3, 4])
          })
        )
      })
    })

    it.scoped("a non-retryable failure is dead-lettered on the first attempt", () => {
      const task = welcomeTask().pipe(
        Task.withRetry(Schedule.recurs(5)),
        Task.withNonRetryable((e) => e._tag === "InvalidEmail")
      )
      return Effect.gen(function*() {
        const attempts = yield* Ref.make(0)
        const worker = TaskQueue.worker(
          task,
          (payload) =>
            Ref.update(attempts, (n) => n + 1).pipe(
              Effect.zipRight(Effect.fail(new InvalidEmail({ address: payload.email })))
            )
        )
        yield* withQueue(
          worker,
          Effect.gen(function*() {
            const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "bad" })
            assert.deepStrictEqual(yield* resultOf(handle), Either.left(new InvalidEmail({ address: "bad" })))
            yield* deadLetters(task.group, 1)
            assert.strictEqual(yield* Ref.get(attempts), 1)
          })
        )
      })
    })

    it.scoped("a run over its timeout fails with TaskTimeout and is retried", () => {
      const task = welcomeTask().pipe(Task.withTimeout("200 millis"), Task.withRetry(Schedule.recurs(2)))
      return Effect.gen(function*() {
        const worker = TaskQueue.worker(task, (_, ctx) =>
          ctx.attempt === 1
            ? Effect.never
            : Effect.succeed({ messageId: `attempt-${ctx.attempt}`, at: new Date(0) }))
        yield* withQueue(
          worker,
          Effect.gen(function*() {
            const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" })
            const sent = yield* within("the result", TaskQueue.result(handle))
            assert.strictEqual(sent.messageId, "attempt-2")
          })
        )
      })
    })

    it.scoped("a timeout on the last attempt is reported as ResultError task-timeout", () => {
      const task = welcomeTask().pipe(Task.withTimeout("100 millis"))
      const worker = TaskQueue.worker(task, () => Effect.never)
      return withQueue(
        worker,
        Effect.gen(function*() {
          const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" })
          const result = yield* resultOf(handle)
          assert.isTrue(
            Either.isLeft(result) && result.left._tag === "ResultError" && result.left.reason === "task-timeout",
            String(result)
          )
          const letters = yield* deadLetters(task.group, 1)
          assert.include(letters[0]?.reason ?? "", "TaskTimeout")
        })
      )
    })

    it.scoped("a delayed task does not start before its delay", () => {
      const task = welcomeTask()
      const worker = TaskQueue.worker(task, (_, ctx) => Effect.succeed({ messageId: ctx.id, at: new Date() }))
      return withQueue(
        worker,
        Effect.gen(function*() {
          const before = Date.now()
          const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" }, { delay: "500 millis" })
          const sent = yield* within("the result", TaskQueue.result(handle))
          assert.isAtLeast(sent.at.getTime() - before, 450, "started after the delay")
        })
      )
    })

    it.scoped("50 concurrent enqueues of one key run one task", () => {
      const task = welcomeTask()
      return Effect.gen(function*() {
        const runs = yield* Ref.make(0)
        const gate = yield* Deferred.make<void>()
        const worker = TaskQueue.worker(task, (_, ctx) =>
          Ref.update(runs, (n) => n + 1).pipe(
            Effect.zipRight(Deferred.await(gate)),
            Effect.as({ messageId: ctx.id, at: new Date(0) })
          ), { concurrency: 10 })
        yield* withQueue(
          worker,
          Effect.gen(function*() {
            const handles = yield* Effect.forEach(
              Array.from({ length: 50 }, (_, i) => i),
              (i) => TaskQueue.enqueue(task, { userId: `u${i}`, email: "a@b.c" }, { key: "user-1-welcome" }),
              { concurrency: "unbounded" }
            )
            const ids = new Set(handles.map((h) => h.id))
            assert.strictEqual(ids.size, 1, `distinct ids: ${ids.size}`)
            assert.strictEqual(handles.filter((h) => !h.deduplicated).length, 1)
            yield* Deferred.succeed(gate, undefined)
            const first = handles[0]
            if (first === undefined) return assert.fail("no handle")
            yield* within("the result", TaskQueue.result(first))
            // Still inside the (zero) window after completion? No: the key is free again once done.
            const again = yield* TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" }, { key: "user-1-welcome" })
            assert.isFalse(again.deduplicated)
            yield* within("the second result", TaskQueue.result(again))
            assert.strictEqual(yield* Ref.get(runs), 2)
          })
        )
      })
    })

    withPriority("a higher priority task runs before lower ones queued earlier", () => {
      const task = Task.make(uniqueName("prio"), { payload: Schema.Struct({ label: Schema.String }), maxPriority: 10 })
      return Effect.gen(function*() {
        const order = yield* Ref.make<ReadonlyArray<string>>([])
        const started = yield* Deferred.make<void>()
        const gate = yield* Deferred.make<void>()
        const worker = TaskQueue.worker(task, ({ label }) =>
          Ref.update(order, (all) => [...all, label]).pipe(
            Effect.zipRight(
              label === "blocker"
                ? Deferred.succeed(started, undefined).pipe(Effect.zipRight(Deferred.await(gate)))
                : Effect.void
            )
          ), { concurrency: 1 })
        yield* withQueue(
          worker,
          Effect.gen(function*() {
            yield* TaskQueue.enqueue(task, { label: "blocker" })
            yield* within("the blocker to start", Deferred.await(started))
            yield* TaskQueue.enqueue(task, { label: "low-1" }, { priority: 1 })
            yield* TaskQueue.enqueue(task, { label: "low-2" }, { priority: 1 })
            const high = yield* TaskQueue.enqueue(task, { label: "high" }, { priority: 9 })
            const last = yield* TaskQueue.enqueue(task, { label: "low-3" }, { priority: 1 })
            yield* Deferred.succeed(gate, undefined)
            yield* within("the tasks", Effect.zipRight(TaskQueue.result(high), TaskQueue.result(last)))
            const ran = yield* Ref.get(order)
            assert.strictEqual(ran[1], "high", JSON.stringify(ran))
          })
        )
      })
    })

    it.scoped("an untyped throw fails that task only; the worker keeps going", () => {
      const task = welcomeTask().pipe(Task.withRetry(Schedule.recurs(1)))
      return Effect.gen(function*() {
        const attempts = yield* Ref.make(0)
        const worker = TaskQueue.worker(task, (payload, ctx) =>
          payload.userId === "throws"
            ? Ref.update(attempts, (n) => n + 1).pipe(Effect.zipRight(Effect.sync(() => {
              throw new Boom({ message: "kaboom" })
            })))
            : Effect.succeed({ messageId: ctx.id, at: new Date(0) }))
        yield* withQueue(
          worker,
          Effect.gen(function*() {
            const bad = yield* TaskQueue.enqueue(task, { userId: "throws", email: "a@b.c" })
            const result = yield* resultOf(bad)
            assert.isTrue(
              Either.isLeft(result) && result.left._tag === "ResultError" && result.left.reason === "task-defect",
              String(result)
            )
            if (Either.isLeft(result) && result.left._tag === "ResultError") {
              assert.include(result.left.detail, "kaboom")
            }
            assert.strictEqual(yield* Ref.get(attempts), 2)
            const good = yield* TaskQueue.enqueue(task, { userId: "fine", email: "a@b.c" })
            assert.strictEqual((yield* within("the next result", TaskQueue.result(good))).messageId, good.id)
          })
        )
      })
    })

    it.scoped("a poison payload is dead-lettered and the next task is processed", () => {
      const task = welcomeTask()
      return Effect.gen(function*() {
        const runs = yield* Ref.make(0)
        const worker = TaskQueue.worker(
          task,
          (_, ctx) => Ref.update(runs, (n) => n + 1).pipe(Effect.as({ messageId: ctx.id, at: new Date(0) }))
        )
        yield* withQueue(
          worker,
          Effect.gen(function*() {
            const broker = yield* Broker.Broker
            const sent = yield* broker.publishAllEncoded([
              { topic: task.topic.name, body: "not json", messageId: "poison-1" },
              { topic: task.topic.name, body: JSON.stringify({ userId: 1 }), messageId: "poison-2" }
            ])
            assert.isTrue(sent.every(Either.isRight), String(sent))
            const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" })
            yield* within("the next result", TaskQueue.result(handle))
            const letters = yield* deadLetters(task.group, 2)
            assert.deepStrictEqual(letters.map((l) => l.messageId).sort(), ["poison-1", "poison-2"])
            assert.strictEqual(yield* Ref.get(runs), 1)
          })
        )
      })
    })

    it.scoped("with the result store down, enqueue and processing go on and result fails typed", () => {
      const task = welcomeTask()
      const down = new ResultStore.ResultStoreError({ operation: "any", detail: "connection refused" })
      const brokenStore = Layer.succeed(ResultStore.ResultStore, {
        put: () => Effect.fail(down),
        get: () => Effect.fail(down),
        claim: () => Effect.fail(down),
        release: () => Effect.fail(down),
        complete: () => Effect.fail(down)
      })
      return Effect.gen(function*() {
        const ran = yield* Deferred.make<string>()
        const worker = TaskQueue.worker(
          task,
          (_, ctx) => Deferred.succeed(ran, ctx.id).pipe(Effect.as({ messageId: ctx.id, at: new Date(0) }))
        )
        yield* withQueue(
          worker,
          Effect.gen(function*() {
            const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" })
            assert.strictEqual(yield* within("the task to run", Deferred.await(ran)), handle.id)
            const result = yield* resultOf(handle)
            assert.isTrue(
              Either.isLeft(result) && result.left._tag === "ResultError" && result.left.reason === "store-unavailable"
            )
            const keyed = yield* Effect.either(TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" }, { key: "k" }))
            assert.isTrue(Either.isLeft(keyed) && keyed.left.reason === "key-store", String(keyed))
          }),
          brokenStore
        )
      })
    })

    it.scoped("closing a worker lets its in-flight task finish", () => {
      const task = welcomeTask()
      return Effect.gen(function*() {
        const started = yield* Deferred.make<void>()
        const gate = yield* Deferred.make<void>()
        const worker = TaskQueue.worker(task, (_, ctx) =>
          Deferred.succeed(started, undefined).pipe(
            Effect.zipRight(Deferred.await(gate)),
            Effect.as({ messageId: ctx.id, at: new Date(0) })
          ))
        const store = yield* Layer.build(ResultStore.layerMemory)
        const handle = yield* Effect.scoped(
          Effect.gen(function*() {
            const context = yield* Layer.build(
              Layer.mergeAll(TaskQueue.layer(), worker).pipe(Layer.provide(Layer.succeedContext(store)))
            )
            const handle = yield* TaskQueue.enqueue(task, { userId: "u1", email: "a@b.c" }).pipe(
              Effect.provide(context)
            )
            yield* within("the task to start", Deferred.await(started))
            // Open the gate only once shutdown has begun.
            yield* Effect.forkDaemon(
              Effect.sleep("100 millis").pipe(Effect.zipRight(Deferred.succeed(gate, undefined)))
            )
            return handle
          })
        )
        const exit = yield* TaskQueue.result(handle, { timeout: "1 second" }).pipe(
          Effect.provide(TaskQueue.layer().pipe(Layer.provide(Layer.succeedContext(store)))),
          Effect.exit
        )
        assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
      })
    })
  })
}
