/**
 * The vocabulary of the broker fault tests: a ledger per message id (publish outcome, completed
 * handler runs), counted as lost / duplicated / redelivered, and the waits the scenarios share.
 */
import { assert } from "@effect/vitest"
import { Duration, Effect, Either, Schema } from "effect"
import * as Broker from "../../src/Broker.js"
import { uniqueName } from "../fixtures/env.js"

export const Item = Schema.Struct({ id: Schema.String })
export const freshTopic = (base: string) => Broker.topic(`${uniqueName(base).replaceAll("_", "-")}.x`, Item)

/** Per-id publish outcomes and completed handler runs. */
export const makeLedger = () => {
  const confirmed = new Set<string>()
  const failed = new Map<string, string>()
  const deliveries = new Map<string, number>()
  let redelivered = 0
  /** A completed handler run, in this process or reported by a worker process. */
  const complete = (id: string, wasRedelivered: boolean) => {
    deliveries.set(id, (deliveries.get(id) ?? 0) + 1)
    if (wasRedelivered) redelivered++
  }
  return {
    confirmed,
    failed,
    deliveries,
    record: (outcomes: ReadonlyArray<Either.Either<void, Broker.PublishError>>, ids: ReadonlyArray<string>) =>
      outcomes.forEach((outcome, i) => {
        const id = ids[i]
        if (id === undefined) return
        if (Either.isRight(outcome)) confirmed.add(id)
        else {
          const error = outcome.left
          failed.set(id, error._tag === "PublishRejected" ? `${error.reason}${error.ambiguous ? "?" : ""}` : error._tag)
        }
      }),
    complete,
    deliver: (id: string, envelope: Broker.Envelope) => Effect.sync(() => complete(id, envelope.redelivered)),
    lost: () => [...confirmed].filter((id) => !deliveries.has(id)),
    duplicates: () => [...deliveries.values()].reduce((sum, n) => sum + n - 1, 0),
    redelivered: () => redelivered,
    summary: (label: string) => {
      const reasons = new Map<string, number>()
      for (const reason of failed.values()) reasons.set(reason, (reasons.get(reason) ?? 0) + 1)
      return `${label}: confirmed ${confirmed.size}, failed ${failed.size} ${
        JSON.stringify(Object.fromEntries(reasons))
      }, ` +
        `delivered ${deliveries.size} distinct, duplicates ${
          [...deliveries.values()].reduce((s, n) => s + n - 1, 0)
        }, ` +
        `redelivered ${redelivered}`
    }
  }
}
export type Ledger = ReturnType<typeof makeLedger>

/** Publishes `ids` in one batch into `ledger` and asserts the broker confirmed every one. */
export const publishConfirmed = (
  broker: Broker.Service,
  topic: Broker.Topic<typeof Item.Type, typeof Item.Encoded>,
  ledger: Ledger,
  ids: ReadonlyArray<string>
) =>
  Effect.map(broker.publishAll(ids.map((id) => Broker.entry(topic, { id }))), (outcomes) => {
    ledger.record(outcomes, ids)
    assert.strictEqual(ledger.confirmed.size, ids.length, "every publish confirmed")
  })

export const waitFor = (label: string, condition: () => boolean, seconds: number) =>
  Effect.gen(function*() {
    while (!condition()) yield* Effect.sleep("20 millis")
  }).pipe(
    Effect.timeoutFail({
      duration: Duration.seconds(seconds),
      onTimeout: () => new Error(`timed out after ${seconds} s: ${label}`)
    })
  )

/** Publishes batches of `size` until `faulted()` holds and two more batches went through. */
export const publishThroughFault = (
  broker: Broker.Service,
  topic: Broker.Topic<typeof Item.Type, typeof Item.Encoded>,
  ledger: Ledger,
  label: string,
  size: number,
  faulted: () => boolean
) =>
  Effect.gen(function*() {
    let batches = 0
    let afterFault = 0
    while (afterFault < 2) {
      if (faulted()) afterFault++
      const ids = Array.from({ length: size }, (_, i) => `${label}-${batches}-${i}`)
      batches++
      ledger.record(yield* broker.publishAll(ids.map((id) => Broker.entry(topic, { id })), { window: size }), ids)
    }
    return batches
  })

/** Polls `broker.health` until `done` holds; fails after `seconds`. */
export const healthUntil = (broker: Broker.Service, done: (health: Broker.Health) => boolean, seconds: number) =>
  Effect.gen(function*() {
    while (true) {
      const health = yield* broker.health
      if (done(health)) return health
      yield* Effect.sleep("20 millis")
    }
  }).pipe(
    Effect.timeoutFail({ duration: Duration.seconds(seconds), onTimeout: () => new Error("health never recovered") })
  )
