import { assert, describe, it, layer } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Either, Layer, Queue, Redacted, Schedule, Schema } from "effect"
import * as Broker from "../../src/Broker.js"
import { durableOf, names } from "../../src/internal/nats/subjects.js"
import { isInvalidOptions } from "../../src/InvalidOptions.js"
import * as NatsBroker from "../../src/layers/NatsBroker.js"
import { runId, uniqueName } from "../fixtures/env.js"
import { deleteStreams, natsUrl, probeLayer, rawNats, scopedStreams } from "../support/nats.js"
import { brokerContract } from "./contract.js"

const stream = `T${runId}`
const maxMessageBytes = 256 * 1024
const url = Redacted.make(natsUrl)

/** The broker on streams of this file's own, deleted afterwards. */
const live = Layer.unwrapScoped(
  Effect.map(
    scopedStreams(stream),
    () => Layer.merge(NatsBroker.layer({ url, stream, maxMessageBytes }), probeLayer(stream, maxMessageBytes))
  )
).pipe(Layer.orDie)

brokerContract("NATS", live, { real: true, unsupported: ["priority"] })

/** Polls `check` every 50 ms until it holds; fails after 3 s. */
const waitFor = (check: () => Promise<boolean>) =>
  Effect.promise(check).pipe(
    Effect.filterOrFail((ok) => ok, () => "not yet"),
    Effect.retry(Schedule.spaced("50 millis")),
    Effect.timeout("3 seconds"),
    Effect.orDie
  )

const Ping = Schema.Struct({ n: Schema.Number })
const freshTopic = (base: string) => Broker.topic(`${uniqueName(base).replaceAll("_", "-")}.x`, Ping)

layer(live, { excludeTestServices: true, timeout: "60 seconds" })("NatsBroker", (it) => {
  it.effect("priority is declared unsupported and rejected with a typed error, on publish and subscribe", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      assert.isFalse(broker.capabilities.priority)
      const topic = freshTopic("prio")
      const published = yield* Effect.flip(broker.publish(topic, { n: 1 }, { priority: 3 }))
      assert.strictEqual(published._tag, "Unsupported")
      const subscribed = yield* Effect.flip(
        Effect.scoped(broker.subscribe(topic, () => Effect.void, { group: uniqueName("g"), maxPriority: 5 }))
      )
      assert.strictEqual(subscribed._tag, "Unsupported")
    }))

  it.scoped("a publish retried with the same id within the duplicate window is delivered once", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = freshTopic("dedupe")
      const handled = yield* Queue.unbounded<number>()
      yield* broker.subscribe(topic, (m) => Queue.offer(handled, m.n), { group: uniqueName("g") })
      const messageId = uniqueName("same")
      yield* broker.publish(topic, { n: 1 }, { messageId })
      yield* broker.publish(topic, { n: 2 }, { messageId })
      yield* broker.publish(topic, { n: 3 })
      assert.deepStrictEqual([yield* Queue.take(handled), yield* Queue.take(handled)], [1, 3])
      yield* Effect.sleep("300 millis")
      assert.strictEqual(yield* Queue.size(handled), 0, "the copy was dropped")
    }))

  it.scoped("a group subscribed to a second pattern fails DeclareConflict naming filter_subject", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const group = uniqueName("g")
      yield* broker.declare(freshTopic("one"), { group })
      const clash = yield* Effect.flip(broker.declare(freshTopic("two"), { group }))
      assert.strictEqual(clash._tag, "DeclareConflict")
      assert.include(clash.message, "filter_subject")
    }))

  it.scoped("groups of different topics declared at once all get their subject in the stream", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topics = Array.from({ length: 8 }, (_, i) => freshTopic(`many${i}`))
      yield* Effect.forEach(topics, (topic) => broker.declare(topic, { group: uniqueName("g") }), {
        concurrency: "unbounded"
      })
      for (const topic of topics) yield* broker.publish(topic, { n: 1 })
    }))

  it.scoped("a closed subscription leaves no pull waiting: a later message stays in the stream, undelivered", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const { jsm } = yield* rawNats()
      const topic = freshTopic("close")
      const group = uniqueName("g")
      const consumer = () => jsm.consumers.info(names(stream).stream, durableOf(group))
      yield* Effect.scoped(Effect.gen(function*() {
        yield* broker.subscribe(topic, () => Effect.void, { group })
        yield* waitFor(() => consumer().then((info) => info.num_waiting > 0))
      }))
      // Well before the pull's own expiry (5 s): it went with its inbox.
      yield* waitFor(() => consumer().then((info) => info.num_waiting === 0))
      yield* broker.publish(topic, { n: 1 })
      const info = yield* Effect.promise(consumer)
      assert.strictEqual(info.num_ack_pending, 0, "nothing sent to a closed inbox")
      assert.strictEqual(info.num_pending, 1)
    }))

  it.scoped("health reports the open connection and the consumers", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      yield* broker.subscribe(freshTopic("health"), () => Effect.void, { group: uniqueName("g") })
      const health = yield* broker.health
      assert.strictEqual(health.status, "up")
      assert.strictEqual(health.connection, "open")
      assert.isAtLeast(health.consumers, 1)
    }))
})

describe("NatsBroker streams", () => {
  it.live("the duplicate window is the configured one: a copy after it is stored again", () =>
    Effect.gen(function*() {
      const own = `D${runId}`
      yield* scopedStreams(own)
      const built = yield* Layer.build(NatsBroker.layer({ url, stream: own, duplicateWindow: "1 second" }))
      const broker = Context.get(built, Broker.Broker)
      const topic = freshTopic("window")
      const handled = yield* Queue.unbounded<number>()
      yield* broker.subscribe(topic, (m) => Queue.offer(handled, m.n), { group: uniqueName("g") })
      const messageId = uniqueName("id")
      yield* broker.publish(topic, { n: 1 }, { messageId })
      yield* broker.publish(topic, { n: 2 }, { messageId })
      yield* Effect.sleep("1500 millis")
      yield* broker.publish(topic, { n: 3 }, { messageId })
      assert.deepStrictEqual([yield* Queue.take(handled), yield* Queue.take(handled)], [1, 3])
    }).pipe(Effect.scoped))

  it.live("an existing stream with other settings fails DeclareConflict naming the field; it is left as it was", () =>
    Effect.gen(function*() {
      const own = `C${runId}`
      const { jsm } = yield* scopedStreams(own)
      const first = yield* Layer.build(NatsBroker.layer({ url, stream: own }))
      yield* Context.get(first, Broker.Broker).declare(freshTopic("conflict"), { group: uniqueName("g") })
      const clash = yield* Effect.flip(
        Layer.build(NatsBroker.layer({ url, stream: own, duplicateWindow: "5 minutes" }))
      )
      assert.strictEqual(clash._tag, "DeclareConflict")
      assert.include(clash.message, "duplicate_window")
      const info = yield* Effect.promise(() => jsm.streams.info(own))
      assert.strictEqual(info.config.duplicate_window, 120_000_000_000)
      const storage = yield* Effect.flip(Layer.build(NatsBroker.layer({ url, stream: own, storage: "memory" })))
      assert.include(storage.message, "storage")
    }).pipe(Effect.scoped))

  it.live("a full stream (maxBytes) refuses a publish with PublishRejected nacked and keeps what it confirmed", () =>
    Effect.gen(function*() {
      const own = `B${runId}`
      yield* scopedStreams(own)
      const built = yield* Layer.build(NatsBroker.layer({ url, stream: own, maxBytes: 4096 }))
      const broker = Context.get(built, Broker.Broker)
      const Big = Schema.Struct({ n: Schema.Number, pad: Schema.String })
      const topic = Broker.topic(`${uniqueName("full").replaceAll("_", "-")}.x`, Big)
      const group = uniqueName("g")
      yield* broker.declare(topic, { group })
      const outcomes = yield* broker.publishAll(
        Array.from({ length: 20 }, (_, n) => Broker.entry(topic, { n, pad: "x".repeat(500) })),
        { window: 1 }
      )
      const refused = outcomes.findIndex(Either.isLeft)
      assert.isAbove(refused, 0, "some were stored before the stream was full")
      const failure = outcomes[refused]
      assert.isTrue(
        failure !== undefined && Either.isLeft(failure) && failure.left._tag === "PublishRejected" &&
          failure.left.reason === "nacked",
        String(failure)
      )
      const handled = yield* Queue.unbounded<number>()
      yield* broker.subscribe(topic, (m) => Queue.offer(handled, m.n), { group, concurrency: 1 })
      const stored = outcomes.filter(Either.isRight).length
      const seen = yield* Effect.replicateEffect(Queue.take(handled), stored)
      assert.deepStrictEqual(seen.slice(0, refused), Array.from({ length: refused }, (_, n) => n))
    }).pipe(Effect.scoped))

  it.live("storage memory creates memory streams", () =>
    Effect.gen(function*() {
      const own = `M${runId}`
      const { jsm } = yield* scopedStreams(own)
      const built = yield* Layer.build(NatsBroker.layer({ url, stream: own, storage: "memory" }))
      yield* Context.get(built, Broker.Broker).declare(freshTopic("mem"), { group: uniqueName("g") })
      const info = yield* Effect.promise(() => jsm.streams.info(own))
      assert.strictEqual(info.config.storage, "memory")
    }).pipe(Effect.scoped))

  it.live("cleanup helper removes the streams", () =>
    Effect.gen(function*() {
      const { jsm } = yield* rawNats()
      yield* deleteStreams(jsm, `X${runId}`)
    }).pipe(Effect.scoped))
})

const cases: ReadonlyArray<readonly [field: string, options: NatsBroker.Options]> = [
  ["url", { url: Redacted.make("http://127.0.0.1:4222") }],
  ["url", { url: Redacted.make("") }],
  ["url", { url: natsUrl } as unknown as NatsBroker.Options],
  ["token", { url, token: "plain" } as unknown as NatsBroker.Options],
  ["password", { url, user: "u", password: "plain" } as unknown as NatsBroker.Options],
  ["stream", { url, stream: "has.dot" }],
  ["stream", { url, stream: "" }],
  ["storage", { url, storage: "disk" } as unknown as NatsBroker.Options],
  ["replicas", { url, replicas: 0 }],
  ["replicas", { url, replicas: 6 }],
  ["maxAge", { url, maxAge: "-1 second" }],
  ["maxAge", { url, maxAge: "10 millis" }],
  ["maxBytes", { url, maxBytes: 0 }],
  ["duplicateWindow", { url, duplicateWindow: 0 }],
  ["duplicateWindow", { url, maxAge: "1 minute", duplicateWindow: "2 minutes" }],
  ["subjects", { url, subjects: [] }],
  ["subjects", { url, subjects: ["has space"] }],
  ["ackWait", { url, ackWait: 0 }],
  ["maxAckPending", { url, maxAckPending: 0 }],
  ["maxDeliver", { url, maxDeliver: 0 }],
  ["connectTimeout", { url, connectTimeout: "-1 second" }],
  ["shutdownTimeout", { url, shutdownTimeout: 0 }],
  ["publishTimeout", { url, publishTimeout: "soon" } as unknown as NatsBroker.Options],
  ["maxMessageBytes", { url, maxMessageBytes: 0 }]
]

describe("NatsBroker options", () => {
  for (const [field, options] of cases) {
    it.effect(`${field}: ${JSON.stringify(options, (_, v: unknown) => (Redacted.isRedacted(v) ? "<redacted>" : v))}`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(Effect.scoped(Layer.build(NatsBroker.layer(options))))
        assert.isTrue(isInvalidOptions(error), `expected InvalidOptions, got ${String(error)}`)
        if (!isInvalidOptions(error)) return
        assert.strictEqual(error.module, "NatsBroker")
        assert.strictEqual(error.field, field)
      }))
  }

  it.live("an unreachable server fails BrokerUnavailable at build", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Effect.scoped(
          Layer.build(NatsBroker.layer({ url: Redacted.make("nats://127.0.0.1:1"), connectTimeout: "2 seconds" }))
        )
      )
      assert.strictEqual(error._tag, "BrokerUnavailable")
    }))

  it.live("layerConfig reads NATS_URL and NATS_STREAM", () =>
    Effect.gen(function*() {
      const own = `L${runId}`
      yield* scopedStreams(own)
      const provider = ConfigProvider.fromMap(new Map([["NATS_URL", natsUrl], ["NATS_STREAM", own]]))
      const built = yield* Layer.build(NatsBroker.layerConfig(NatsBroker.config)).pipe(
        Effect.withConfigProvider(provider)
      )
      const health = yield* Context.get(built, Broker.Broker).health
      assert.strictEqual(health.status, "up")
      assert.include(health.detail, own)
    }).pipe(Effect.scoped))
})
