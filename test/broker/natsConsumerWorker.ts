/**
 * A consumer process for the NATS fault N4, forked by `NatsBroker.faults.test.ts` and run with
 * tsx. Env: NATS_TEST_URL, NATS_TEST_STREAM, TOPIC, GROUP, HOLD_MS, WORKER_NAME. Subscribes the
 * group (concurrency 10) and reports over IPC: `ready` once subscribed, `started` per delivery,
 * `done` once a handler finished (before its ack).
 */
import { Effect, Redacted, Schema } from "effect"
import * as Broker from "../../src/Broker.js"
import * as NatsBroker from "../../src/layers/NatsBroker.js"
import { report, reportCrashes, requiredEnv } from "../support/childWorker.js"

export type ConsumerMessage =
  | { readonly type: "ready" }
  | { readonly type: "started" | "done"; readonly id: string; readonly redelivered: boolean }
  | { readonly type: "crash"; readonly detail: string }

export const consumerConcurrency = 10

const send = (message: ConsumerMessage) => report(message)

if (process.env["NATS_TEST_STREAM"] !== undefined && process.send !== undefined) {
  reportCrashes((detail): ConsumerMessage => ({ type: "crash", detail }))
  const hold = Number(requiredEnv("HOLD_MS"))
  // The ledger's `Item` (not imported: faultLedger loads vitest, which a child cannot).
  const topic = Broker.topic(requiredEnv("TOPIC"), Schema.Struct({ id: Schema.String }))
  const program = Effect.gen(function*() {
    const broker = yield* Broker.Broker
    yield* broker.subscribe(topic, (item, envelope) =>
      Effect.gen(function*() {
        yield* send({ type: "started", id: item.id, redelivered: envelope.redelivered })
        yield* Effect.sleep(hold)
        yield* send({ type: "done", id: item.id, redelivered: envelope.redelivered })
      }), { group: requiredEnv("GROUP"), concurrency: consumerConcurrency })
    yield* send({ type: "ready" })
    return yield* Effect.never
  }).pipe(
    Effect.scoped,
    Effect.provide(NatsBroker.layer({
      url: Redacted.make(requiredEnv("NATS_TEST_URL")),
      stream: requiredEnv("NATS_TEST_STREAM"),
      ackWait: "2 seconds"
    }))
  )
  Effect.runFork(program.pipe(Effect.tapErrorCause((cause) => send({ type: "crash", detail: String(cause) }))))
}
