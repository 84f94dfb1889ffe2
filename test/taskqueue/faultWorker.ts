/**
 * A worker process for the T1 fault test, forked by `TaskQueue.faults.test.ts` and run with tsx.
 * Env: RABBITMQ_TEST_URL, RABBITMQ_TEST_PREFIX, TASK_NAME, HOLD_MS, WORKER_NAME; with
 * INBOX_PREFIX (and DATABASE_URL) the handler runs through a PgInbox and inserts one row per run
 * into `<INBOX_PREFIX>_effects`. Reports over IPC: `ready` once subscribed, `started` per delivery
 * (before the inbox), `done` per run (before the ack; with the inbox, before its commit).
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted, Schema } from "effect"
import * as Inbox from "../../src/Inbox.js"
import * as PgInbox from "../../src/layers/PgInbox.js"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import * as Task from "../../src/Task.js"
import * as TaskQueue from "../../src/TaskQueue.js"
import { report, reportCrashes, requiredEnv } from "../support/childWorker.js"

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

const send = (message: WorkerMessage) => report(message)

if (process.env["TASK_NAME"] !== undefined && process.send !== undefined) {
  const worker = requiredEnv("WORKER_NAME")
  const hold = Number(requiredEnv("HOLD_MS"))
  reportCrashes((detail): WorkerMessage => ({ type: "crash", worker, detail }))
  const task = faultTask(requiredEnv("TASK_NAME"))
  const inboxPrefix = process.env["INBOX_PREFIX"]
  const started = (payload: typeof FaultPayload.Type, ctx: TaskQueue.TaskContext) =>
    send({ type: "started", worker, id: ctx.id, n: payload.n, redelivered: ctx.redelivered })
  const done = (payload: typeof FaultPayload.Type, ctx: TaskQueue.TaskContext) =>
    send({ type: "done", worker, id: ctx.id, n: payload.n, redelivered: ctx.redelivered })
  const workerLayer = inboxPrefix === undefined
    ? TaskQueue.worker(task, (payload, ctx) =>
      Effect.gen(function*() {
        yield* started(payload, ctx)
        yield* Effect.sleep(hold)
        yield* done(payload, ctx)
        return payload.n
      }), { concurrency: 10 })
    : TaskQueue.worker(
      task,
      (payload, ctx) =>
        Effect.zipRight(
          started(payload, ctx),
          Inbox.worker(task, (payload, ctx) =>
            Effect.gen(function*() {
              yield* Effect.sleep(hold)
              const sql = yield* SqlClient.SqlClient
              yield* Effect.orDie(sql`insert into ${sql(`${inboxPrefix}_effects`)} values (${ctx.id})`)
              yield* done(payload, ctx)
              return payload.n
            }))(payload, ctx)
        ),
      { concurrency: 10 }
    ).pipe(
      Layer.provide(PgInbox.layer({ prefix: inboxPrefix })),
      Layer.provide(PgClient.layer({ url: Redacted.make(requiredEnv("DATABASE_URL")) })),
      Layer.orDie
    )
  const program = Layer.launch(
    Layer.merge(workerLayer, Layer.effectDiscard(send({ type: "ready", worker }))).pipe(
      Layer.provide(
        RabbitMQBroker.layer({
          url: Redacted.make(requiredEnv("RABBITMQ_TEST_URL")),
          prefix: requiredEnv("RABBITMQ_TEST_PREFIX")
        })
      )
    )
  )
  Effect.runFork(program.pipe(Effect.tapErrorCause((cause) => send({ type: "crash", worker, detail: String(cause) }))))
}
