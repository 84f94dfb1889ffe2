import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import * as RedisBroker from "../../src/layers/RedisBroker.js"
import { runId } from "../fixtures/env.js"
import { cleanupLayer, probeLayer, redisUrl } from "../support/redis.js"
import { brokerContract } from "./contract.js"

const prefix = `t${runId}`
const maxMessageBytes = 256 * 1024

/** The broker and its probe under this run's own key prefix, every key deleted afterwards. */
const live = Layer.merge(
  RedisBroker.layer({ url: Redacted.make(redisUrl), prefix, maxMessageBytes, pollInterval: "20 millis" }),
  probeLayer(prefix, maxMessageBytes)
).pipe(Layer.provideMerge(cleanupLayer(prefix)), Layer.orDie)

brokerContract("Redis", live, { real: true, unsupported: ["wildcards", "priority"] })

describe("RedisBroker options", () => {
  const build = (options: Partial<RedisBroker.Options>) =>
    Effect.flip(Effect.scoped(Layer.build(RedisBroker.layer({ url: Redacted.make(redisUrl), ...options }))))

  const rows: ReadonlyArray<readonly [string, Partial<RedisBroker.Options>]> = [
    ["prefix", { prefix: "has space" }],
    ["prefix", { prefix: "" }],
    ["claimIdle", { claimIdle: "-1 seconds" }],
    ["claimIdle", { claimIdle: 0 }],
    ["claimIdle", { claimIdle: "10 millis" }],
    ["pollInterval", { pollInterval: Number.NaN }],
    ["trimInterval", { trimInterval: Number.POSITIVE_INFINITY }],
    ["maxMessageBytes", { maxMessageBytes: 0 }],
    ["maxMessageBytes", { maxMessageBytes: 1.5 }],
    ["publishTimeout", { publishTimeout: 0 }],
    ["waitForReplicas.replicas", { waitForReplicas: { replicas: 0, timeout: "1 second" } }],
    ["waitForReplicas.timeout", { waitForReplicas: { replicas: 1, timeout: "-1 millis" } }],
    ["url", { url: Redacted.make("amqp://localhost") }],
    ["url", { url: Redacted.make("not a url") }]
  ]
  for (const [field, options] of rows) {
    it.effect(`${field} = ${JSON.stringify(options[field as keyof RedisBroker.Options] ?? options)} fails InvalidOptions`, () =>
      Effect.gen(function*() {
        const error = yield* build(options)
        assert.strictEqual(error._tag, "InvalidOptions")
        if (error._tag === "InvalidOptions") assert.strictEqual(error.field, field)
      }))
  }

  it.live(
    "a closed port fails BrokerUnavailable connect at once, a wrong password auth, never showing it",
    () =>
      Effect.gen(function*() {
        const started = Date.now()
        const closed = yield* Effect.flip(Effect.scoped(Layer.build(RedisBroker.layer({
          url: Redacted.make("redis://127.0.0.1:1"),
          connectTimeout: "5 seconds"
        }))))
        assert.strictEqual(closed._tag, "BrokerUnavailable")
        if (closed._tag === "BrokerUnavailable") assert.strictEqual(closed.reason, "connect")
        assert.isBelow(Date.now() - started, 3000, "no retry loop before the first connection")
        const secret = "s3cr3t-pa55"
        const wrong = yield* Effect.flip(Effect.scoped(Layer.build(RedisBroker.layer({
          url: Redacted.make(redisUrl),
          password: Redacted.make(secret)
        }))))
        assert.strictEqual(wrong._tag, "BrokerUnavailable")
        if (wrong._tag === "BrokerUnavailable") assert.strictEqual(wrong.reason, "auth", wrong.detail)
        assert.notInclude(String(wrong), secret)
      }),
    { timeout: 20_000 }
  )
})
