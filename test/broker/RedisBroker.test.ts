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

  it.effect("an unreachable server fails BrokerUnavailable within connectTimeout", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(Layer.build(RedisBroker.layer({
        url: Redacted.make("redis://127.0.0.1:1"),
        connectTimeout: "500 millis"
      }))))
      assert.strictEqual(error._tag, "BrokerUnavailable")
    }), { timeout: 10_000 })
})
