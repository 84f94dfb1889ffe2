import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Context, Deferred, Duration, Effect, Either, Layer, Redacted, Schedule, Schema } from "effect"
import * as Broker from "../../src/Broker.js"
import * as RedisBroker from "../../src/layers/RedisBroker.js"
import { runId, uniqueName } from "../fixtures/env.js"
import { cleanupLayer, ownServer, probeLayer, rawClient, redisUrl } from "../support/redis.js"
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

const Ping = Schema.Struct({ n: Schema.Number })
const freshTopic = () => Broker.topic(uniqueName("r").replaceAll("_", "-"), Ping)

/** A broker under the prefix `<run>x`, whose keys are deleted before it starts and when the scope closes. */
const brokerWith = (options: Partial<RedisBroker.Options>) =>
  Effect.zipRight(
    Layer.build(cleanupLayer(`${prefix}x`)),
    Effect.map(
      Layer.build(RedisBroker.layer({ url: Redacted.make(redisUrl), prefix: `${prefix}x`, ...options })),
      (context) => Context.get(context, Broker.Broker)
    )
  )

const within = <A, E, R>(label: string, effect: Effect.Effect<A, E, R>) =>
  Effect.timeoutFail(effect, { duration: Duration.seconds(20), onTimeout: () => new Error(`timed out: ${label}`) })

const waitUntil = (label: string, done: () => boolean) =>
  within(label, Effect.repeat(Effect.sync(done), { until: (ok) => ok, schedule: Schedule.spaced("20 millis") }))

describe("RedisBroker streams", () => {
  it.live(
    "a stream is trimmed to what every group acknowledged, never past a lagging group's unread entries",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const broker = yield* brokerWith({ trimInterval: "100 millis" })
        const client = yield* rawClient()
        const topic = freshTopic()
        const stream = `${prefix}x:s:${topic.name}`
        const fast = uniqueName("fast")
        const lagging = uniqueName("lagging")
        let handled = 0
        yield* broker.subscribe(topic, () => Effect.sync(() => handled++), { group: fast })
        const results = yield* broker.publishAll(Array.from({ length: 200 }, (_, n) => Broker.entry(topic, { n })))
        assert.strictEqual(results.length, 200)
        yield* within(
          "every message handled",
          Effect.gen(function*() {
            while (handled < 200) yield* Effect.sleep("20 millis")
          })
        )
        // One group, all acknowledged: trimmed to nothing.
        yield* within(
          "the stream trimmed",
          Effect.gen(function*() {
            while ((yield* Effect.promise(() => client.xLen(stream))) > 0) yield* Effect.sleep("50 millis")
          })
        )
        // A group that reads nothing keeps every entry published after it joined.
        yield* broker.declare(topic, { group: lagging })
        yield* broker.publishAll(Array.from({ length: 50 }, (_, n) => Broker.entry(topic, { n: 1000 + n })))
        yield* within(
          "the fast group to handle them",
          Effect.gen(function*() {
            while (handled < 250) yield* Effect.sleep("20 millis")
          })
        )
        yield* Effect.sleep("400 millis")
        assert.strictEqual(
          yield* Effect.promise(() => client.xLen(stream)),
          50,
          "unread entries of the lagging group stay"
        )
      })),
    { timeout: 30_000 }
  )

  it.live(
    "waitForReplicas: with no replica the publish fails PublishRejected timeout, ambiguous (stored on the primary)",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const broker = yield* brokerWith({ waitForReplicas: { replicas: 1, timeout: "50 millis" } })
        const topic = freshTopic()
        yield* broker.declare(topic, { group: uniqueName("g") })
        const error = yield* Effect.flip(broker.publish(topic, { n: 1 }))
        assert.strictEqual(error._tag, "PublishRejected")
        if (error._tag !== "PublishRejected") return
        assert.strictEqual(error.reason, "timeout")
        assert.isTrue(error.ambiguous)
        const batch = yield* broker.publishAll([Broker.entry(topic, { n: 2 }), Broker.entry(topic, { n: 3 })])
        assert.isTrue(batch.every((result) => result._tag === "Left" && result.left._tag === "PublishRejected"))
        const client = yield* rawClient()
        assert.strictEqual(yield* Effect.promise(() => client.xLen(`${prefix}x:s:${topic.name}`)), 3)
      })),
    { timeout: 20_000 }
  )

  it.live(
    "a delivery handed out maxDeliveries times without a settlement is dead-lettered, not claimed again",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const keyPrefix = `${prefix}x`
        const broker = yield* brokerWith({ claimIdle: "200 millis", maxDeliveries: 3 })
        const client = yield* rawClient()
        const topic = freshTopic()
        const group = uniqueName("g")
        const stream = `${keyPrefix}:s:${topic.name}`
        yield* broker.declare(topic, { group })
        yield* broker.publish(topic, { n: 1 })
        yield* broker.publish(topic, { n: 2 })
        // A consumer that read both and died; the first had already been handed out 3 times.
        const read: unknown = yield* Effect.promise(() =>
          client.sendCommand(["XREADGROUP", "GROUP", group, "ghost", "COUNT", "2", "STREAMS", stream, ">"])
        )
        const entries: unknown = Array.isArray(read) && Array.isArray(read[0]) ? read[0][1] : []
        const ids = Array.isArray(entries) ? entries.map((entry) => Array.isArray(entry) ? String(entry[0]) : "") : []
        assert.strictEqual(ids.length, 2)
        yield* Effect.promise(() =>
          client.sendCommand(["XCLAIM", stream, group, "ghost", "0", ids[0] ?? "", "RETRYCOUNT", "3"])
        )
        const handled: Array<number> = []
        yield* broker.subscribe(topic, (m) => Effect.sync(() => handled.push(m.n)), { group })
        const dead = yield* within(
          "the stalled delivery dead-lettered and the other claimed",
          Effect.gen(function*() {
            while (true) {
              const letters = yield* Effect.promise(() => client.xRange(`${keyPrefix}:dlq:${group}`, "-", "+"))
              if (letters.length >= 1 && handled.length >= 1) return letters
              yield* Effect.sleep("50 millis")
            }
          })
        )
        assert.deepStrictEqual(handled, [2])
        assert.strictEqual(dead.length, 1)
        assert.include(dead[0]?.message["d"] ?? "", "delivered 3 times")
        assert.include((yield* broker.health).detail, "stalled 1")
      })),
    { timeout: 20_000 }
  )

  it.live(
    "a consumer never holds more than prefetch entries, reads in flight included, and settles all of them",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const keyPrefix = `${prefix}x`
        const broker = yield* brokerWith({})
        const client = yield* rawClient()
        const topic = freshTopic()
        const group = uniqueName("g")
        const stream = `${keyPrefix}:s:${topic.name}`
        yield* broker.declare(topic, { group })
        // Handlers wait until released: nothing settles, so the consumer stops reading at its window.
        const gate = yield* Deferred.make<void>()
        let started = 0
        const handled = new Set<number>()
        yield* broker.subscribe(
          topic,
          (m) => Effect.sync(() => started++).pipe(Effect.zipRight(Deferred.await(gate)), Effect.as(handled.add(m.n))),
          { group, concurrency: 3, prefetch: 10 }
        )
        const publish = (from: number, count: number) =>
          Effect.flatMap(
            broker.publishAll(Array.from({ length: count }, (_, i) => Broker.entry(topic, { n: from + i }))),
            (results) => Effect.sync(() => assert.isTrue(results.every(Either.isRight)))
          )
        const pendingCount = Effect.promise(() => client.sendCommand<Array<unknown>>(["XPENDING", stream, group]))
          .pipe(Effect.map((summary) => Number(summary[0])))
        // One message first: one of the two blocked reads returns it, and the next read goes out
        // while the other is still waiting. It may ask only for what the window has left, once
        // the blocked read's request is counted: the backlog then fills exactly the window.
        yield* publish(0, 1)
        yield* waitUntil("the first handler started", () => started >= 1)
        yield* Effect.sleep("100 millis")
        yield* publish(1, 99)
        yield* waitUntil("the first handlers started", () => started >= 3)
        // Several read cycles' worth of time with the window full: nothing more may be read.
        for (let i = 0; i < 10; i++) {
          assert.isAtMost(yield* pendingCount, 10)
          yield* Effect.sleep("50 millis")
        }
        assert.strictEqual(yield* pendingCount, 10)
        assert.strictEqual(started, 3)
        yield* Deferred.succeed(gate, undefined)
        yield* waitUntil("every message handled once the gate opened", () => handled.size === 100)
        yield* within(
          "everything acknowledged",
          Effect.repeat(pendingCount, { until: (n) => n === 0, schedule: Schedule.spaced("20 millis") })
        )
      })),
    { timeout: 30_000 }
  )

  it.live(
    "publishAll splits large messages into chunks of bounded size; every one arrives whole, in order, on a server that had no script loaded",
    () =>
      Effect.scoped(Effect.gen(function*() {
        // A server of its own that refuses any argument over 8 MiB (it drops the connection): one
        // script call carrying the whole 12 MiB batch would fail; chunks cut at 4 MiB pass. It
        // starts with no script loaded: a chunk repeated after NOSCRIPT would land after later ones.
        const server = yield* ownServer(false, ["--proto-max-bulk-len", "8mb"])
        const broker = Context.get(
          yield* Layer.build(RedisBroker.layer({ url: Redacted.make(server.url), prefix: `${prefix}x` })),
          Broker.Broker
        )
        const Blob = Broker.topic(
          uniqueName("blob").replaceAll("_", "-"),
          Schema.Struct({ n: Schema.Number, text: Schema.String })
        )
        const group = uniqueName("g")
        yield* broker.declare(Blob, { group })
        const text = (n: number) => String.fromCharCode(97 + n).repeat(1024 * 1024)
        const results = yield* broker.publishAll(
          Array.from({ length: 12 }, (_, n) => Broker.entry(Blob, { n, text: text(n) }))
        )
        assert.deepStrictEqual(results.filter(Either.isLeft), [])
        const received: Array<number> = []
        yield* broker.subscribe(
          Blob,
          (m) => Effect.sync(() => m.text === text(m.n) && received.push(m.n)),
          { group, concurrency: 1 }
        )
        yield* waitUntil("every large message handled", () => received.length === 12)
        assert.deepStrictEqual(received, Array.from({ length: 12 }, (_, n) => n))
      })),
    { timeout: 30_000 }
  )

  it.live(
    "publishAll of 1,000 across chunks that shrink towards the window's end: every outcome at its own index, the good messages once each, in order",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const broker = yield* brokerWith({})
        const topic = freshTopic()
        const nobody = freshTopic()
        const nobodyLate = freshTopic()
        const group = uniqueName("g")
        yield* broker.declare(topic, { group })
        // Every 97th entry fails in the front (a reserved header); every 89th goes to a topic no
        // group is bound to, and so does every third of the last 150 (to another such topic,
        // whose chunk is made near the window's end, so smaller): each unroutable. Chunk
        // bookkeeping must map every outcome back to its entry.
        const kind = (n: number) =>
          n % 97 === 5 ? "invalid" : n % 89 === 7 ? "early" : n >= 850 && n % 3 === 0 ? "late" : "ok"
        const results = yield* broker.publishAll(
          Array.from({ length: 1000 }, (_, n) =>
            kind(n) === "invalid"
              ? Broker.entry(topic, { n }, { headers: { "x-eb-bad": "1" } })
              : Broker.entry(kind(n) === "early" ? nobody : kind(n) === "late" ? nobodyLate : topic, { n })),
          { window: 1000 }
        )
        const outcome = (n: number) => {
          const result = results[n]
          if (result === undefined) return "missing"
          return Either.isRight(result)
            ? "ok"
            : result.left._tag === "InvalidName"
            ? "invalid"
            : result.left._tag === "PublishRejected" && result.left.reason === "unroutable"
            ? "unroutable"
            : result.left._tag
        }
        const expected = Array.from({ length: 1000 }, (_, n): string => {
          const k = kind(n)
          return k === "early" || k === "late" ? "unroutable" : k
        })
        assert.deepStrictEqual(Array.from({ length: 1000 }, (_, n): string => outcome(n)), expected)
        const received: Array<number> = []
        yield* broker.subscribe(topic, (m) => Effect.sync(() => received.push(m.n)), { group, concurrency: 1 })
        const good = expected.flatMap((k, n) => k === "ok" ? [n] : [])
        yield* waitUntil("every good message handled", () => received.length >= good.length)
        yield* Effect.sleep("200 millis")
        assert.deepStrictEqual(received, good)
      })),
    { timeout: 30_000 }
  )

  it.live("layerConfig reads REDIS_URL (redacted) and REDIS_PREFIX", () =>
    Effect.scoped(Effect.gen(function*() {
      yield* Layer.build(cleanupLayer(`${prefix}c`))
      const provider = ConfigProvider.fromMap(new Map([["REDIS_URL", redisUrl], ["REDIS_PREFIX", `${prefix}c`]]))
      const context = yield* Layer.build(RedisBroker.layerConfig(RedisBroker.config)).pipe(
        Effect.withConfigProvider(provider)
      )
      const broker = Context.get(context, Broker.Broker)
      assert.strictEqual((yield* broker.health).status, "up")
      const topic = freshTopic()
      yield* broker.declare(topic, { group: uniqueName("g") })
      yield* broker.publish(topic, { n: 1 })
      const client = yield* rawClient()
      assert.strictEqual(yield* Effect.promise(() => client.xLen(`${prefix}c:s:${topic.name}`)), 1)
    })), { timeout: 20_000 })
})
