import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Queue, TestClock } from "effect"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import * as ResultStore from "../../src/ResultStore.js"
import * as Scheduler from "../../src/Scheduler.js"
import * as SchedulerLease from "../../src/SchedulerLease.js"
import * as TaskQueue from "../../src/TaskQueue.js"
import * as Trigger from "../../src/Trigger.js"
import { tick } from "./fixtures.js"

const ms = (iso: string) => new Date(iso).getTime()

/** What the worker ran: the task key of each run. */
class Runs extends Context.Tag("test/scheduler/Runs")<Runs, Queue.Queue<string>>() {}

/** The real TaskQueue on MemoryBroker with a memory result store (dedup keys held for an hour), and a worker. */
const env = Layer.unwrapEffect(Effect.gen(function*() {
  const runs = yield* Queue.unbounded<string>()
  const worker = TaskQueue.worker(tick, (_payload, context) => Queue.offer(runs, context.key ?? "(no key)"))
  return Layer.mergeAll(TaskQueue.layer({ keyWindow: "1 hour" }), worker, Layer.succeed(Runs, runs)).pipe(
    Layer.provideMerge(Layer.mergeAll(MemoryBroker.layer(), ResultStore.layerMemory, SchedulerLease.layerMemory))
  )
}))

/**
 * Sets the TestClock before the layer starts: the worker samples a gauge every second on the
 * Clock, so jumping the clock by years afterwards would replay that loop once per second of it.
 */
const at = <A, E, R>(iso: string, body: Effect.Effect<A, E, R>) => Effect.zipRight(TestClock.setTime(ms(iso)), body)

describe("Scheduler with the real TaskQueue (MemoryBroker, TestClock)", () => {
  it.scoped("each firing reaches the worker once, keyed by its slot", () =>
    at(
      "2026-01-01T00:00:00.500Z",
      Effect.gen(function*() {
        yield* Scheduler.make([
          Scheduler.schedule("beat", tick, { trigger: Trigger.interval("1 second"), payload: { n: 1 } })
        ])
        yield* TestClock.adjust("3 seconds")
        const runs = yield* Runs
        const keys = [yield* Queue.take(runs), yield* Queue.take(runs), yield* Queue.take(runs)]
        assert.deepStrictEqual(keys, [
          "beat@2026-01-01T00:00:01.000Z",
          "beat@2026-01-01T00:00:02.000Z",
          "beat@2026-01-01T00:00:03.000Z"
        ])
      }).pipe(Effect.provide(env))
    ))

  it.scoped("slots a dead leader claimed but did not record as fired are re-enqueued; the task key drops the copy it did enqueue", () =>
    at(
      "2026-01-01T00:00:03.500Z",
      Effect.gen(function*() {
        const lease = yield* SchedulerLease.SchedulerLease
        // The dead leader claimed slots 1-3 s, recorded 1 s as fired, enqueued 2 s, then died before recording it.
        assert.isTrue(yield* lease.acquire("dead", 10_000))
        assert.deepStrictEqual(
          yield* lease.claim("dead", [{
            schedule: "beat",
            first: ms("2026-01-01T00:00:01Z"),
            last: ms("2026-01-01T00:00:03Z")
          }]),
          ["beat"]
        )
        yield* lease.markFired("dead", [{ schedule: "beat", slot: ms("2026-01-01T00:00:01Z") }])
        yield* TaskQueue.enqueue(tick, { n: 2 }, { key: "beat@2026-01-01T00:00:02.000Z" })
        yield* lease.release("dead")
        const runs = yield* Runs
        assert.strictEqual(yield* Queue.take(runs), "beat@2026-01-01T00:00:02.000Z")

        yield* Scheduler.make([
          Scheduler.schedule("beat", tick, { trigger: Trigger.interval("1 second"), payload: { n: 1 } })
        ])
        yield* TestClock.adjust("1 second")
        const keys = [yield* Queue.take(runs), yield* Queue.take(runs)]
        assert.deepStrictEqual(keys, ["beat@2026-01-01T00:00:03.000Z", "beat@2026-01-01T00:00:04.000Z"])
        assert.strictEqual(yield* Queue.size(runs), 0, "slot 2 s ran once")
        const state = yield* lease.state(["beat"])
        assert.deepStrictEqual(state, [{
          schedule: "beat",
          claimed: ms("2026-01-01T00:00:04Z"),
          fired: ms("2026-01-01T00:00:04Z")
        }])
      }).pipe(Effect.provide(env))
    ))
})
