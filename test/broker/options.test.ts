/**
 * Every option of the Broker layers and of its calls with a bad value: refused with
 * `InvalidOptions` naming the module and the option — at Layer build for layers (before any
 * connection), as a typed failure per call — and nothing is sent. Options a transport cannot
 * honour are refused with `Unsupported` instead of being ignored.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Either, Layer, Redacted, Schema } from "effect"
import * as Broker from "../../src/Broker.js"
import type * as BrokerTransport from "../../src/BrokerTransport.js"
import { isInvalidOptions } from "../../src/InvalidOptions.js"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import { rabbitmqUrl } from "../fixtures/env.js"
import { plainCapabilities } from "../fixtures/transport.js"

const assertInvalid = (error: unknown, module: string, field: string): void => {
  assert.isTrue(isInvalidOptions(error), `expected InvalidOptions, got ${String(error)}`)
  if (!isInvalidOptions(error)) return
  assert.strictEqual(error.module, module)
  assert.strictEqual(error.field, field)
}

/** Options as a caller that bypasses the types (JavaScript, casts, config) could pass them. */
const loose = <A>(options: Record<string, unknown>): A => options as A

const buildFailure = <E>(layer: Layer.Layer<Broker.Broker, E>) => Effect.flip(Effect.scoped(Layer.build(layer)))

const memoryCases: ReadonlyArray<readonly [field: string, options: MemoryBroker.Options]> = [
  ["maxMessageBytes", { maxMessageBytes: 0 }],
  ["maxMessageBytes", { maxMessageBytes: 1.5 }],
  ["publishedLimit", { publishedLimit: -1 }],
  ["publishedLimit", { publishedLimit: Number.NaN }],
  ["shutdownTimeout", { shutdownTimeout: "-1 second" }],
  ["shutdownTimeout", { shutdownTimeout: Duration.infinity }],
  ["shutdownTimeout", loose({ shutdownTimeout: "soon" })]
]

const url = Redacted.make(rabbitmqUrl)
const rabbitCases: ReadonlyArray<readonly [field: string, options: RabbitMQBroker.Options]> = [
  ["url", { url: Redacted.make("not a url") }],
  ["url", { url: Redacted.make("http://guest:guest@127.0.0.1/") }],
  ["url", loose({ url: rabbitmqUrl })],
  ["prefix", { url, prefix: "" }],
  ["prefix", { url, prefix: "amq.mine" }],
  ["prefix", { url, prefix: "has space" }],
  ["queueType", loose({ url, queueType: "stream" })],
  ["heartbeat", { url, heartbeat: -1 }],
  ["heartbeat", { url, heartbeat: 601 }],
  ["connectTimeout", { url, connectTimeout: 0 }],
  ["connectTimeout", { url, connectTimeout: Duration.infinity }],
  ["reconnect", loose({ url, reconnect: "forever" })],
  ["shutdownTimeout", { url, shutdownTimeout: "-5 seconds" }],
  ["maxMessageBytes", { url, maxMessageBytes: 0 }],
  ["maxMessageBytes", { url, maxMessageBytes: 1024 * 1024 * 1024 }],
  ["publishTimeout", { url, publishTimeout: 0 }]
]

describe("Broker layer options", () => {
  for (const [field, options] of memoryCases) {
    it.effect(`MemoryBroker.layer refuses a bad ${field}`, () =>
      Effect.map(buildFailure(MemoryBroker.layer(options)), (error) => assertInvalid(error, "MemoryBroker", field)))
  }
  for (const [field, options] of rabbitCases) {
    it.live(`RabbitMQBroker.layer refuses a bad ${field} before connecting`, () =>
      Effect.map(buildFailure(RabbitMQBroker.layer(options)), (error) => {
        assertInvalid(error, "RabbitMQBroker", field)
        if (field === "url" && isInvalidOptions(error)) assert.notInclude(error.message, "guest:guest")
      }))
  }
})

const Payload = Schema.Struct({ id: Schema.String })
const topic = Broker.topic("options.checked", Payload)

describe("Broker call options", () => {
  it.scoped("subscribe, publish, publishAll and redrive refuse each bad option naming it", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const subscribeWith = (options: Partial<Broker.SubscribeOptions<never>>) =>
        Effect.flip(Effect.scoped(broker.subscribe(topic, () => Effect.void, { group: "options", ...options })))
      assertInvalid(yield* subscribeWith({ concurrency: 0 }), "Broker", "concurrency")
      assertInvalid(yield* subscribeWith({ concurrency: 70_000 }), "Broker", "concurrency")
      assertInvalid(yield* subscribeWith({ concurrency: 4, prefetch: 2 }), "Broker", "prefetch")
      assertInvalid(yield* subscribeWith({ maxPriority: 0 }), "Broker", "maxPriority")
      assertInvalid(
        yield* Effect.flip(broker.declare(topic, { group: "options", maxPriority: 256 })),
        "Broker",
        "maxPriority"
      )

      const publishWith = (options: Broker.PublishOptions) => Effect.flip(broker.publish(topic, { id: "x" }, options))
      assertInvalid(yield* publishWith({ priority: -1 }), "Broker", "priority")
      assertInvalid(yield* publishWith({ messageId: "" }), "Broker", "messageId")
      assertInvalid(yield* publishWith({ delay: "-1 second" }), "Broker", "delay")
      assertInvalid(yield* publishWith({ delay: -5 }), "Broker", "delay")
      assertInvalid(yield* publishWith({ expiration: 0 }), "Broker", "expiration")
      assertInvalid(yield* publishWith({ expiration: Duration.infinity }), "Broker", "expiration")
      const metadata = yield* publishWith({ metadata: { "task-key": "k" } })
      assert.strictEqual(metadata._tag, "InvalidName", "library metadata names start with x-eb-")

      for (
        const [field, options] of [["pack", { pack: 0 }], ["window", { window: 0 }], ["window", {
          window: 2.5
        }]] as const
      ) {
        const outcomes = yield* broker.publishAll([Broker.entry(topic, { id: "x" })], options)
        assert.strictEqual(outcomes.length, 1)
        const outcome = outcomes[0]
        assert.isTrue(outcome !== undefined && Either.isLeft(outcome))
        if (outcome !== undefined && Either.isLeft(outcome)) assertInvalid(outcome.left, "Broker", field)
      }
      assertInvalid(yield* Effect.flip(broker.redrive("options", { max: 0 })), "Broker", "max")

      const memory = yield* MemoryBroker.MemoryBroker
      assert.deepStrictEqual(yield* memory.published, [], "nothing was published")
    }).pipe(Effect.provide(MemoryBroker.layer())))
})

/** A transport that can do nothing optional, and records what reached it. */
const plainTransport = () => {
  const reached: Array<string> = []
  const transport: BrokerTransport.Transport = {
    capabilities: plainCapabilities("plain", 1024),
    publish: (message) => Effect.sync(() => void reached.push(message.messageId)),
    publishAll: (batch) =>
      Effect.sync(() =>
        Array.from({ length: batch.size }, (_, i) => {
          const message = batch.prepare(i)
          if (message !== undefined) reached.push(message.messageId)
          return Either.void
        })
      ),
    consume: () => Effect.sync(() => void reached.push("consume")),
    health: Effect.succeed({ status: "up", connection: "open", consumers: 0, detail: "plain" })
  }
  return { transport, reached }
}

describe("transport capabilities", () => {
  it.scoped("an option the transport cannot honour fails Unsupported naming the feature, and nothing reaches it", () =>
    Effect.gen(function*() {
      const { reached, transport } = plainTransport()
      const broker = Broker.make(transport)
      const unsupported = <A, E extends { readonly _tag: string }>(effect: Effect.Effect<A, E>) =>
        Effect.map(
          Effect.flip(effect),
          (error) =>
            error._tag === "Unsupported" && "feature" in error ? `Unsupported ${String(error.feature)}` : error._tag
        )

      assert.strictEqual(
        yield* unsupported(broker.publish(topic, { id: "d" }, { delay: "1 second" })),
        "Unsupported delay"
      )
      assert.strictEqual(
        yield* unsupported(broker.publish(topic, { id: "p" }, { priority: 3 })),
        "Unsupported priority"
      )
      assert.strictEqual(
        yield* unsupported(broker.publish(topic, { id: "e" }, { expiration: "1 minute" })),
        "Unsupported expiration"
      )
      const batch = yield* broker.publishAll([
        Broker.entry(topic, { id: "ok" }, { messageId: "ok" }),
        Broker.entry(topic, { id: "late" }, { delay: "1 second" })
      ])
      assert.deepStrictEqual(batch.map(Either.match({ onLeft: (e) => e._tag, onRight: () => "ok" })), [
        "ok",
        "Unsupported"
      ])
      const wildcard = Broker.pattern("options.*", Payload)
      assert.strictEqual(
        yield* unsupported(Effect.scoped(broker.subscribe(wildcard, () => Effect.void, { group: "g" }))),
        "Unsupported wildcards"
      )
      assert.strictEqual(
        yield* unsupported(Effect.scoped(broker.subscribe(topic, () => Effect.void, { group: "g", maxPriority: 5 }))),
        "Unsupported priority"
      )
      assert.strictEqual(yield* unsupported(broker.redrive("g")), "Unsupported redrive")
      assert.deepStrictEqual(reached, ["ok"], "only the honourable message reached the transport")
      // A concrete topic is fine, and plain publishes go through.
      yield* broker.publish(topic, { id: "plain" }, { messageId: "plain" })
      assert.deepStrictEqual(reached, ["ok", "plain"])
    }))
})
