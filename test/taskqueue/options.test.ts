/**
 * Every option of Task.make, the TaskQueue layers, the worker, `result`, `enqueue` /
 * `enqueueAll` and PgResultStore with a bad value: each is refused with `InvalidOptions` naming
 * the module and the option — at Layer build for layers, as a typed failure per call, thrown (or
 * returned by the Either twin) by definitions. Nothing is enqueued and no SQL runs.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Config, Duration, Effect, Either, Layer, Redacted, Schedule, Schema } from "effect"
import { type InvalidOptions, isInvalidOptions } from "../../src/InvalidOptions.js"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import * as PgResultStore from "../../src/layers/PgResultStore.js"
import * as ResultStore from "../../src/ResultStore.js"
import * as Task from "../../src/Task.js"
import * as TaskQueue from "../../src/TaskQueue.js"
import { databaseUrl, uniqueName } from "../fixtures/env.js"

const payload = Schema.Struct({ n: Schema.Number })
const task = Task.make(uniqueName("options"), { payload })

/** The options of `Task.make` as a caller that bypasses the types could pass them. */
type LooseTaskOptions = Task.Options<{ readonly n: number }, { readonly n: number }, void, void, never, never>
const loose = (options: Record<string, unknown>): LooseTaskOptions => ({ payload, ...options }) as LooseTaskOptions

// ---------------------------------------------------------------------------
// definitions: thrown by make / withTimeout, returned by their Either twins
// ---------------------------------------------------------------------------

const definitionCases: ReadonlyArray<readonly [field: string, options: LooseTaskOptions]> = [
  ["payload", loose({ payload: { not: "a schema" } })],
  ["success", loose({ success: "a string" })],
  ["failure", loose({ failure: 42 })],
  ["retry", loose({ retry: { recurs: 3 } })],
  ["timeout", loose({ timeout: 0 })],
  ["timeout", loose({ timeout: "-1 second" })],
  ["timeout", loose({ timeout: Duration.infinity })],
  ["nonRetryable", loose({ nonRetryable: true })],
  ["maxPriority", loose({ maxPriority: 0 })],
  ["maxPriority", loose({ maxPriority: 256 })],
  ["maxPriority", loose({ maxPriority: 1.5 })],
  ["delivery", loose({ delivery: "fast" })]
]

const assertInvalid = (error: unknown, module: string, field: string): void => {
  assert.isTrue(isInvalidOptions(error), `expected InvalidOptions, got ${String(error)}`)
  const invalid = error as InvalidOptions
  assert.strictEqual(invalid.module, module)
  assert.strictEqual(invalid.field, field)
}

describe("Task.make options", () => {
  for (const [field, options] of definitionCases) {
    it(`Task.make refuses a bad ${field} (${JSON.stringify(options[field as keyof LooseTaskOptions]) ?? "?"})`, () => {
      const result = Task.makeEither("t", options)
      assert.isTrue(Either.isLeft(result))
      if (Either.isLeft(result)) assertInvalid(result.left, "Task", field)
      try {
        Task.make("t", options)
        assert.fail("Task.make did not throw")
      } catch (error) {
        assertInvalid(error, "Task", field)
      }
    })
  }

  it("Task.withTimeout refuses a bad timeout", () => {
    const result = Task.withTimeoutEither(task, "-5 seconds")
    assert.isTrue(Either.isLeft(result))
    if (Either.isLeft(result)) assertInvalid(result.left, "Task", "timeout")
    assert.throws(() => Task.withTimeout(task, 0), "timeout")
  })

  it("good options are accepted", () => {
    const result = Task.makeEither("t", {
      payload,
      timeout: "1 second",
      maxPriority: 255,
      delivery: "transient",
      retry: Schedule.recurs(1)
    })
    assert.isTrue(Either.isRight(result))
  })
})

// ---------------------------------------------------------------------------
// layers: refused at build
// ---------------------------------------------------------------------------

const deps = Layer.merge(MemoryBroker.layer(), ResultStore.layerMemory)
const pg = PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1 })

const buildError = <A, E, R>(layer: Layer.Layer<A, E, R>, provided: Layer.Layer<R, unknown>) =>
  Effect.flip(Effect.scoped(Layer.build(layer.pipe(Layer.provide(provided)))))

const worker = (options: TaskQueue.WorkerOptions) => TaskQueue.worker(task, () => Effect.void, options)

const layerCases: ReadonlyArray<
  readonly [name: string, module: string, field: string, error: Effect.Effect<unknown, unknown>]
> = [
  ["TaskQueue.layer", "TaskQueue", "keyWindow", buildError(TaskQueue.layer({ keyWindow: -1 }), deps)],
  ["TaskQueue.layer", "TaskQueue", "keyWindow", buildError(TaskQueue.layer({ keyWindow: Duration.infinity }), deps)],
  ["TaskQueue.layer", "TaskQueue", "keyPendingLimit", buildError(TaskQueue.layer({ keyPendingLimit: 0 }), deps)],
  ["TaskQueue.layer", "TaskQueue", "pollInterval", buildError(TaskQueue.layer({ pollInterval: 0 }), deps)],
  [
    "TaskQueue.layerWithoutResults",
    "TaskQueue",
    "pollInterval",
    buildError(TaskQueue.layerWithoutResults({ pollInterval: "soon" as Duration.DurationInput }), deps)
  ],
  [
    "TaskQueue.layerConfig",
    "TaskQueue",
    "keyPendingLimit",
    buildError(TaskQueue.layerConfig({ keyPendingLimit: Config.succeed("-1 hours" as Duration.DurationInput) }), deps)
  ],
  [
    "TaskQueue.make",
    "TaskQueue",
    "keyWindow",
    Effect.flip(Effect.provide(TaskQueue.make({ keyWindow: Number.NaN }), deps))
  ],
  ["TaskQueue.worker", "TaskQueue", "concurrency", buildError(worker({ concurrency: 0 }), deps)],
  ["TaskQueue.worker", "TaskQueue", "concurrency", buildError(worker({ concurrency: 2.5 }), deps)],
  ["TaskQueue.worker", "TaskQueue", "prefetch", buildError(worker({ concurrency: 5, prefetch: 2 }), deps)],
  ["TaskQueue.worker", "TaskQueue", "resultTtl", buildError(worker({ resultTtl: 0 }), deps)],
  ["PgResultStore.layer", "PgResultStore", "prefix", buildError(PgResultStore.layer({ prefix: "1bad" }), pg)],
  [
    "PgResultStore.layer",
    "PgResultStore",
    "prefix",
    buildError(PgResultStore.layer({ prefix: "x; drop table y" }), pg)
  ],
  ["PgResultStore.layer", "PgResultStore", "prefix", buildError(PgResultStore.layer({ prefix: "a".repeat(40) }), pg)],
  ["PgResultStore.layer", "PgResultStore", "sweepInterval", buildError(PgResultStore.layer({ sweepInterval: 0 }), pg)],
  ["PgResultStore.layer", "PgResultStore", "sweepBatch", buildError(PgResultStore.layer({ sweepBatch: 0 }), pg)],
  [
    "PgResultStore.layerConfig",
    "PgResultStore",
    "sweepBatch",
    buildError(PgResultStore.layerConfig({ sweepBatch: Config.succeed(1.5) }), pg)
  ],
  [
    "PgResultStore.make",
    "PgResultStore",
    "sweepInterval",
    Effect.flip(Effect.scoped(Effect.provide(PgResultStore.make({ sweepInterval: Duration.infinity }), pg)))
  ]
]

describe("layer options", () => {
  for (const [name, module, field, error] of layerCases) {
    it.effect(`${name} refuses a bad ${field} when built`, () =>
      Effect.map(error, (e) => assertInvalid(e, module, field)))
  }
})

// ---------------------------------------------------------------------------
// per call: a typed failure
// ---------------------------------------------------------------------------

const queue = TaskQueue.layer().pipe(Layer.provideMerge(deps))

/** An enqueue refused as invalid carries the InvalidOptions as its cause. */
const assertInvalidEnqueue = (error: TaskQueue.EnqueueError, module: string, field: string): void => {
  assert.strictEqual(error.reason, "invalid")
  assertInvalid(error.cause, module, field)
}

describe("per-call options", () => {
  it.effect("result refuses a bad timeout", () =>
    Effect.gen(function*() {
      const handle = TaskQueue.handle(task, "some-id")
      assertInvalid(yield* Effect.flip(TaskQueue.result(handle, { timeout: -1 })), "TaskQueue", "timeout")
      assertInvalid(yield* Effect.flip(TaskQueue.result(handle, { timeout: 0 })), "TaskQueue", "timeout")
    }).pipe(Effect.provide(queue)))

  it.effect("enqueueAll refuses a bad window or pack as a whole", () =>
    Effect.gen(function*() {
      assertInvalidEnqueue(
        yield* Effect.flip(TaskQueue.enqueueAll(task, [{ n: 1 }], { window: 0 })),
        "TaskQueue",
        "window"
      )
      assertInvalidEnqueue(
        yield* Effect.flip(TaskQueue.enqueueAll(task, [{ n: 1 }], { pack: 10_001 })),
        "TaskQueue",
        "pack"
      )
    }).pipe(Effect.provide(queue)))

  it.effect("enqueue refuses a bad delay or priority (checked by the Broker)", () =>
    Effect.gen(function*() {
      assertInvalidEnqueue(
        yield* Effect.flip(TaskQueue.enqueue(task, { n: 1 }, { delay: "soon" as Duration.DurationInput })),
        "Broker",
        "delay"
      )
      assertInvalidEnqueue(
        yield* Effect.flip(TaskQueue.enqueue(task, { n: 1 }, { priority: 256 })),
        "Broker",
        "priority"
      )
      const [outcome] = yield* TaskQueue.enqueueAll(task, [{ n: 1 }], { priority: -1 })
      assert.isTrue(outcome !== undefined && Either.isLeft(outcome))
      if (outcome !== undefined && Either.isLeft(outcome)) assertInvalidEnqueue(outcome.left, "Broker", "priority")
    }).pipe(Effect.provide(queue)))
})
