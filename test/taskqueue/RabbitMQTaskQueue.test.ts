import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { describe, it } from "@effect/vitest"
import { Deferred, Effect, Either, FiberId, Layer, Redacted, Schema } from "effect"
import { assert } from "vitest"
import * as PgResultStore from "../../src/layers/PgResultStore.js"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import * as Task from "../../src/Task.js"
import * as TaskQueue from "../../src/TaskQueue.js"
import { databaseUrl, runId, uniqueName } from "../fixtures/env.js"
import { probeLayer, rawConnection, scopedVhost, urlFor, withChannel } from "../support/rabbitmq.js"
import { taskQueueContract, welcomeTask, withQueue } from "./contract.js"

const prefix = `t${runId}`
const maxMessageBytes = 256 * 1024

/** RabbitMQ in a vhost of its own, deleted (with every queue) afterwards. */
const liveIn = (vhost: string) =>
  Layer.unwrapScoped(
    Effect.map(scopedVhost(vhost), (name) => {
      const url = urlFor(name)
      return Layer.merge(
        RabbitMQBroker.layer({ url: Redacted.make(url), prefix, maxMessageBytes, shutdownTimeout: "2 seconds" }),
        probeLayer(url, prefix, maxMessageBytes)
      )
    })
  ).pipe(Layer.orDie)

taskQueueContract("RabbitMQ", liveIn(`eb-tasks-${runId}`), { real: true })

/** PostgreSQL result store with run-unique tables, dropped when the layer is released. */
const tablePrefix = uniqueName("tq")
const pgStore = PgResultStore.layer({ prefix: tablePrefix }).pipe(
  Layer.provideMerge(Layer.scopedDiscard(Effect.addFinalizer(() =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`drop table if exists ${sql(`${tablePrefix}_task_results`)}, ${sql(`${tablePrefix}_task_keys`)}`
    }).pipe(Effect.orDie)
  ))),
  Layer.provide(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 10 })),
  Layer.orDie
)

describe("TaskQueue on RabbitMQ with the PostgreSQL result store", () => {
  it.live(
    "a task enqueued before any worker, then 50 enqueues of one key, all with results in PostgreSQL",
    () =>
      Effect.gen(function*() {
        const task = welcomeTask()
        // The keyed task runs only once all 50 enqueues returned: a key is held while its task is
        // pending (no key window here), so a task that finished mid-way would free it for a second one.
        const enqueued = Deferred.unsafeMake<void>(FiberId.none)
        const worker = TaskQueue.worker(task, (payload, ctx) =>
          Effect.zipRight(
            payload.userId === "early" ? Effect.void : Deferred.await(enqueued),
            Effect.succeed({ messageId: `${payload.userId}:${ctx.id}`, at: new Date(0) })
          ))
        // Enqueued while no worker exists: the queue is declared by enqueue, so the task waits.
        const early = yield* withQueue(
          Layer.empty,
          TaskQueue.enqueue(task, { userId: "early", email: "a@b.c" }),
          pgStore
        )
        yield* withQueue(
          worker,
          Effect.gen(function*() {
            const first = yield* Effect.either(TaskQueue.result(early, { timeout: "20 seconds" }))
            assert.deepStrictEqual(first, Either.right({ messageId: `early:${early.id}`, at: new Date(0) }))
            const handles = yield* Effect.forEach(
              Array.from({ length: 50 }, (_, i) => i),
              (i) => TaskQueue.enqueue(task, { userId: `u${i}`, email: "a@b.c" }, { key: "same" }),
              { concurrency: "unbounded" }
            )
            yield* Deferred.succeed(enqueued, undefined)
            assert.strictEqual(new Set(handles.map((h) => h.id)).size, 1)
            const [one] = handles
            if (one === undefined) return assert.fail("no handle")
            const sent = yield* TaskQueue.result(one, { timeout: "20 seconds" })
            assert.match(sent.messageId, /^u\d+:/)
          }),
          pgStore
        )
      }).pipe(Effect.provide(liveIn(`eb-tasks-pg-${runId}`))),
    60_000
  )
})

describe("TaskQueue delivery modes on RabbitMQ", () => {
  const vhost = `eb-tasks-delivery-${runId}`
  it.live(
    "a transient task travels in memory (delivery mode 1) and runs; a persistent one is on disk (mode 2)",
    () =>
      Effect.gen(function*() {
        const transient = Task.make(uniqueName("preview"), {
          payload: Schema.Struct({ n: Schema.Number }),
          delivery: "transient"
        })
        const persistent = Task.make(uniqueName("invoice"), { payload: Schema.Struct({ n: Schema.Number }) })
        assert.strictEqual(transient.delivery, "transient")
        assert.strictEqual(persistent.delivery, "persistent")
        // Enqueued before any worker: the queues hold them for a raw look at their delivery mode.
        const [quick, durable] = yield* withQueue(
          Layer.empty,
          Effect.gen(function*() {
            const quick = yield* TaskQueue.enqueue(transient, { n: 1 })
            yield* TaskQueue.enqueueAll(transient, [{ n: 2 }])
            return [quick, yield* TaskQueue.enqueue(persistent, { n: 3 })] as const
          })
        )
        const model = yield* rawConnection(urlFor(vhost))
        const modes = (group: string) =>
          withChannel(model, async (channel) => {
            const seen: Array<number | undefined> = []
            for (
              let m = await channel.get(`${prefix}.group.${group}`);
              m !== false;
              m = await channel.get(`${prefix}.group.${group}`)
            ) {
              seen.push(m.properties.deliveryMode)
            }
            // Unacked gets go back to the queue when the channel closes.
            return seen
          })
        assert.deepStrictEqual(yield* modes(transient.group), [1, 1])
        assert.deepStrictEqual(yield* modes(persistent.group), [2])
        const ran: Array<number> = []
        const workers = Layer.mergeAll(
          TaskQueue.worker(transient, (p) => Effect.sync(() => ran.push(p.n))),
          TaskQueue.worker(persistent, (p) => Effect.sync(() => ran.push(p.n)))
        )
        yield* withQueue(
          workers,
          Effect.all([
            TaskQueue.result(quick, { timeout: "20 seconds" }),
            TaskQueue.result(durable, { timeout: "20 seconds" })
          ])
        )
        assert.includeMembers(ran, [1, 3])
      }).pipe(Effect.scoped, Effect.provide(liveIn(vhost))),
    60_000
  )
})

describe("TaskQueue queue declarations on RabbitMQ", () => {
  const vhost = `eb-tasks-declare-${runId}`
  it.live(
    "a task's queue is declared by its first enqueue only, and again after it was deleted",
    () =>
      Effect.gen(function*() {
        const task = Task.make(uniqueName("declared"), { payload: Schema.Struct({ n: Schema.Number }) })
        const model = yield* rawConnection(urlFor(vhost))
        const queue = `${prefix}.group.${task.group}`
        const depth = withChannel(model, async (channel) => (await channel.checkQueue(queue)).messageCount)
        const enqueueAll = (n: number) =>
          Effect.map(TaskQueue.enqueueAll(task, [{ n }]), (outcomes) => outcomes.every(Either.isRight))
        assert.isTrue(yield* enqueueAll(1))
        assert.strictEqual(yield* depth, 1)
        yield* withChannel(model, (channel) => channel.deleteQueue(queue))
        // Known as declared: the first enqueue after the deletion is unroutable, and the next declares it again.
        const [lost] = yield* TaskQueue.enqueueAll(task, [{ n: 2 }])
        assert.isTrue(lost !== undefined && Either.isLeft(lost) && lost.left.reason === "no-queue")
        assert.isTrue(yield* enqueueAll(3))
        assert.strictEqual(yield* depth, 1)
      }).pipe(Effect.scoped, Effect.provide(TaskQueue.layerWithoutResults().pipe(Layer.provideMerge(liveIn(vhost))))),
    60_000
  )
})
