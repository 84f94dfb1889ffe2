/**
 * T1: a worker process killed with SIGKILL mid-task: its unacked tasks are redelivered to
 * another worker and completed; nothing lost, duplicates counted and bounded by the prefetch
 * (tasks enqueued one by one) or by what the dead worker finished of its unfinished packs
 * (`enqueueAll`, packed).
 */
import { assert, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Layer, Queue, Redacted } from "effect"
import { type ChildProcess, fork } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import * as ResultStore from "../../src/ResultStore.js"
import * as TaskQueue from "../../src/TaskQueue.js"
import { runId, uniqueName } from "../fixtures/env.js"
import { scopedVhost, urlFor } from "../support/rabbitmq.js"
import { faultTask, type WorkerMessage } from "./faultWorker.js"

const script = fileURLToPath(new URL("./faultWorker.ts", import.meta.url))

const within = <A, E, R>(label: string, effect: Effect.Effect<A, E, R>, seconds = 30) =>
  Effect.timeoutFail(effect, { duration: Duration.seconds(seconds), onTimeout: () => new Error(`timed out: ${label}`) })

/** A forked worker whose messages land in `inbox`; killed (if still alive) when the scope closes. */
const spawnWorker = (worker: string, env: Record<string, string>, inbox: Queue.Queue<WorkerMessage>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = fork(script, [], {
        execArgv: ["--import", "tsx"],
        env: { ...process.env, ...env, WORKER_NAME: worker },
        stdio: ["ignore", "inherit", "inherit", "ipc"]
      })
      child.on("message", (message) => Queue.unsafeOffer(inbox, message as WorkerMessage))
      return child
    }),
    (child: ChildProcess) =>
      Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
  )

const killMidTask = (mode: "single" | "packed") =>
  Effect.gen(function*() {
    const vhost = yield* scopedVhost(`eb-tasks-faults-${runId}`)
    const url = urlFor(vhost)
    const prefix = `t${runId}`
    const task = faultTask(uniqueName("fault"))
    const total = 60
    const env = { RABBITMQ_TEST_URL: url, RABBITMQ_TEST_PREFIX: prefix, TASK_NAME: task.name, HOLD_MS: "200" }

    const inbox = yield* Queue.unbounded<WorkerMessage>()
    const done = new Map<string, number>()
    const started = new Map<string, Array<string>>()
    const redeliveredRuns: Array<string> = []
    const doneByA = new Set<string>()
    const crashes: Array<string> = []
    const allDone = yield* Deferred.make<void>()
    const startedByA = yield* Deferred.make<void>()
    const readyA = yield* Deferred.make<void>()
    const readyB = yield* Deferred.make<void>()
    yield* Queue.take(inbox).pipe(
      Effect.tap((message) =>
        Effect.gen(function*() {
          switch (message.type) {
            case "ready":
              yield* Deferred.succeed(message.worker === "A" ? readyA : readyB, undefined)
              return
            case "crash":
              crashes.push(`${message.worker}: ${message.detail}`)
              return
            case "started":
              started.set(message.id, [...(started.get(message.id) ?? []), message.worker])
              if (message.redelivered) redeliveredRuns.push(message.id)
              if (message.worker === "A" && started.size >= 15) yield* Deferred.succeed(startedByA, undefined)
              return
            case "done":
              if (message.worker === "A") doneByA.add(message.id)
              done.set(message.id, (done.get(message.id) ?? 0) + 1)
              if (done.size === total) yield* Deferred.succeed(allDone, undefined)
          }
        })
      ),
      Effect.forever,
      Effect.forkScoped
    )

    const producer = TaskQueue.layer().pipe(
      Layer.provide(ResultStore.layerMemory),
      Layer.provideMerge(RabbitMQBroker.layer({ url: Redacted.make(url), prefix }))
    )
    const ids = yield* Effect.gen(function*() {
      // Enqueued before any worker runs: the queue is declared by enqueue.
      if (mode === "packed") {
        const outcomes = yield* TaskQueue.enqueueAll(task, Array.from({ length: total }, (_, n) => ({ n })), {
          pack: 20
        })
        return outcomes.flatMap((outcome) => (outcome._tag === "Right" ? [outcome.right.id] : []))
      }
      const handles = yield* Effect.forEach(
        Array.from({ length: total }, (_, n) => n),
        (n) => TaskQueue.enqueue(task, { n }),
        { concurrency: 20 }
      )
      return handles.map((h) => h.id)
    }).pipe(Effect.provide(producer))
    assert.strictEqual(new Set(ids).size, total)

    const a = yield* spawnWorker("A", env, inbox)
    yield* within("worker A to start tasks", Deferred.await(startedByA))
    a.kill("SIGKILL")
    const killedAt = Date.now()
    const inFlightAtKill = [...started.keys()].filter((id) => !done.has(id)).length
    yield* spawnWorker("B", env, inbox)
    yield* within("all tasks done", Deferred.await(allDone))
    const recoverMs = Date.now() - killedAt

    const runs = [...done.values()].reduce((sum, n) => sum + n, 0)
    const lost = ids.filter((id) => !done.has(id)).length
    const duplicated = runs - done.size
    const finishedByB = [...started.entries()].filter(([, workers]) =>
      workers.includes("A") && workers.includes("B")
    ).length
    console.log(
      `T1 (${mode}): accepted ${total}, completed ${done.size}, lost ${lost}, duplicated ${duplicated}, in flight at kill ${inFlightAtKill}, ` +
        `redelivered runs ${redeliveredRuns.length}, started by A and rerun by B ${finishedByB}, recovered in ${recoverMs} ms`
    )
    assert.deepStrictEqual(crashes, [])
    assert.strictEqual(lost, 0)
    assert.isAtLeast(finishedByB, 1, "some task A held was completed by B")
    if (mode === "single") {
      // At-least-once: only runs A finished but could not ack may repeat, at most A's prefetch.
      assert.isAtMost(duplicated, 10)
    } else {
      // A pack is acked once all its tasks are: what A finished of packs it held runs again.
      assert.isAtMost(duplicated, doneByA.size)
      assert.isAtMost(duplicated, 3 * 20)
    }
  })

for (const mode of ["single", "packed"] as const) {
  it.scopedLive(
    `a worker killed with SIGKILL mid-task (${mode}): its tasks are redelivered and completed by another`,
    () => killMidTask(mode),
    120_000
  )
}
