/**
 * A consumer process for the Redis fault tests, forked by `RedisBroker.faults.test.ts` and run
 * with tsx. Env: REDIS_TEST_URL, REDIS_TEST_PREFIX, TOPIC, GROUP, HOLD_MS, CLAIM_IDLE_MS.
 * Reports over IPC: `ready` once subscribed, `started` / `done` per delivery (done before the ack).
 */
import { Effect, Layer, Redacted, Schema } from "effect"
import * as Broker from "../../src/Broker.js"
import * as RedisBroker from "../../src/layers/RedisBroker.js"

export const Item = Schema.Struct({ n: Schema.Number })

export type ChildMessage =
  | { readonly type: "ready" }
  | { readonly type: "started" | "done"; readonly n: number; readonly redelivered: boolean }

const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined) throw new Error(`missing ${name}`)
  return value
}

const send = (message: ChildMessage) => Effect.sync(() => process.send?.(message))

const main = Effect.gen(function*() {
  const broker = yield* Broker.Broker
  const topic = Broker.topic(env("TOPIC"), Item)
  const hold = Number(env("HOLD_MS"))
  yield* broker.subscribe(
    topic,
    (item, envelope) =>
      send({ type: "started", n: item.n, redelivered: envelope.redelivered }).pipe(
        Effect.zipRight(Effect.sleep(hold)),
        Effect.zipRight(send({ type: "done", n: item.n, redelivered: envelope.redelivered }))
      ),
    { group: env("GROUP"), concurrency: 10, prefetch: 20 }
  )
  yield* send({ type: "ready" })
  return yield* Effect.never
})

if (process.send !== undefined) {
  Effect.runFork(
    Effect.scoped(main).pipe(
      Effect.provide(
        RedisBroker.layer({
          url: Redacted.make(env("REDIS_TEST_URL")),
          prefix: env("REDIS_TEST_PREFIX"),
          claimIdle: Number(env("CLAIM_IDLE_MS"))
        }).pipe(Layer.orDie)
      )
    )
  )
}
