/**
 * A worker process for the T1 fault test, forked by `TaskQueue.faults.test.ts` and run with tsx.
 * Env: RABBITMQ_TEST_URL, RABBITMQ_TEST_PREFIX, TASK_NAME, HOLD_MS, WORKER_NAME. Reports over IPC:
 * `ready` once subscribed, `started` / `done` per task run (done is sent before the ack).
 */
import { Effect, Layer, Redacted, Schema } from "effect"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import * as Task from "../../src/Task.js"
import * as TaskQueue from "../../src/TaskQueue.js"

export const FaultPayload = Schema.Struct({ n: Schema.Number })
export const faultTask = (name: string) => Task.make(name, { payload: FaultPayload, success: Schema.Number })

export type WorkerMessage =
  | { readonly type: "ready"; readonly worker: string }
  | {
    readonly type: "started" | "done"
    readonly worker: string
    readonly id: string
    readonly n: number
    readonly redelivered: boolean
  }
  | { readonly type: "crash"; readonly worker: string; readonly detail: string }

const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined) throw new Error(`missing ${name}`)
  return value
}

const send = (message: WorkerMessage) =>
  Effect.async<void>((resume) => {
    if (process.send === undefined) return resume(Effect.void)
    process.send(message, undefined, {}, () => resume(Effect.void))
  })

if (process.env["TASK_NAME"] !== undefined && process.send !== undefined) {
  const worker = env("WORKER_NAME")
  const hold = Number(env("HOLD_MS"))
  process.on(
    "uncaughtException",
    (error) => void send({ type: "crash", worker, detail: String(error) }).pipe(Effect.runFork)
  )
  process.on(
    "unhandledRejection",
    (error) => void send({ type: "crash", worker, detail: String(error) }).pipe(Effect.runFork)
  )
  const task = faultTask(env("TASK_NAME"))
  const workerLayer = TaskQueue.worker(task, (payload, ctx) =>
    Effect.gen(function*() {
      yield* send({ type: "started", worker, id: ctx.id, n: payload.n, redelivered: ctx.redelivered })
      yield* Effect.sleep(hold)
      yield* send({ type: "done", worker, id: ctx.id, n: payload.n, redelivered: ctx.redelivered })
      return payload.n
    }), { concurrency: 10 })
  const program = Layer.launch(
    Layer.merge(workerLayer, Layer.effectDiscard(send({ type: "ready", worker }))).pipe(
      Layer.provide(
        RabbitMQBroker.layer({ url: Redacted.make(env("RABBITMQ_TEST_URL")), prefix: env("RABBITMQ_TEST_PREFIX") })
      )
    )
  )
  Effect.runFork(program.pipe(Effect.tapErrorCause((cause) => send({ type: "crash", worker, detail: String(cause) }))))
}
