/**
 * Stress test of the RabbitMQ publisher kernel (`src/internal/rabbitmq/publisher.ts`, and the
 * streaming `publishAll` of `transport.ts` above it) against the real broker. Many concurrent
 * streamed batches and single publishes with random windows, mixed with entries the broker nacks
 * (`x-max-length` + `reject-publish`), returns (unroutable), amqplib refuses (a header table
 * over 64 KiB), or that close the channel (a publish to a missing exchange), and connection
 * resets through a TCP proxy. Every entry's outcome is checked against a ledger of what amqplib
 * was handed and confirmed, and against what the queues hold, counted by message id.
 */
import { assert, layer } from "@effect/vitest"
import type * as Amqp from "amqplib"
import {
  Context,
  Deferred,
  Duration,
  Effect,
  Either,
  Fiber,
  Layer,
  Logger,
  LogLevel,
  Redacted,
  Schedule,
  Schema
} from "effect"
import * as Broker from "../../src/Broker.js"
import { PublishRejected } from "../../src/BrokerError.js"
import * as connection from "../../src/internal/rabbitmq/connection.js"
import * as packed from "../../src/internal/rabbitmq/packed.js"
import * as publisher from "../../src/internal/rabbitmq/publisher.js"
import * as url from "../../src/internal/rabbitmq/url.js"
import * as wire from "../../src/internal/wire.js"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import { runId } from "../fixtures/env.js"
import { announce, rng, stressSeed } from "../support/prng.js"
import { drain, rawConnection, scopedVhost, urlFor, withChannel } from "../support/rabbitmq.js"
import { tcpProxy } from "../support/tcpProxy.js"

/** The channel errors and reconnects this test provokes are expected: log only errors. */
const quiet = Logger.withMinimumLogLevel(LogLevel.Error)

const baseSeed = stressSeed()
announce("publisher.stress", baseSeed)

class Vhost extends Context.Tag("test/publisher.stress/Vhost")<Vhost, string>() {}

const yieldToEventLoop = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/** Queue contents by message id; packed carriers are counted by their members' ids. */
const countIds = (messages: ReadonlyArray<Amqp.Message>) => {
  const counts = new Map<string, number>()
  for (const message of messages) {
    const members = message.properties.contentType === wire.packedContentType
      ? packed.unpack(message, "x-eb-published-at")
      : [message]
    for (const member of members ?? []) {
      const id = String(member.properties.messageId)
      counts.set(id, (counts.get(id) ?? 0) + 1)
    }
  }
  return counts
}

// ---------------------------------------------------------------------------------------------
// the kernel itself, instrumented
// ---------------------------------------------------------------------------------------------

type Kind = "good" | "full" | "unroutable" | "invalid" | "poison"

/** What amqplib was handed and what it reported, per message id. */
class Probe {
  readonly written = new Map<string, number>()
  readonly threw = new Set<string>()
  readonly confirm = new Map<string, string>()
  readonly inFlight = new Map<string, number>()
  readonly peak = new Map<string, number>()
  writes = 0
  onWrite: (() => void) | undefined = undefined

  /** Wraps `channel.publish` to record, per message, the write and its own confirm callback. */
  instrument(channel: Amqp.ConfirmChannel): Amqp.ConfirmChannel {
    const original = channel.publish.bind(channel)
    const call = (id: string) => id.slice(0, id.indexOf(":"))
    channel.publish = (exchange, routingKey, content, options, callback) => {
      const id = String(options?.messageId)
      let result: boolean
      try {
        result = original(exchange, routingKey, content, options, (error, ok) => {
          this.confirm.set(
            id,
            error === null || error === undefined ? "ack" : error instanceof Error ? error.message : String(error)
          )
          this.inFlight.set(call(id), (this.inFlight.get(call(id)) ?? 0) - 1)
          callback?.(error, ok)
        })
      } catch (error) {
        this.threw.add(id)
        throw error
      }
      this.written.set(id, (this.written.get(id) ?? 0) + 1)
      const now = (this.inFlight.get(call(id)) ?? 0) + 1
      this.inFlight.set(call(id), now)
      this.peak.set(call(id), Math.max(now, this.peak.get(call(id)) ?? 0))
      this.writes++
      this.onWrite?.()
      return result
    }
    return channel
  }

  /** A manager whose connections hand out instrumented confirm channels. */
  wrap(manager: connection.Manager): connection.Manager {
    const instrument = (channel: Amqp.ConfirmChannel) => this.instrument(channel)
    return {
      ...manager,
      awaitOpen: (timeout, after) =>
        Effect.map(manager.awaitOpen(timeout, after), (open) => ({
          ...open,
          model: new Proxy(open.model, {
            get(target, property) {
              if (property === "createConfirmChannel") {
                return async () => instrument(await target.createConfirmChannel())
              }
              const value: unknown = Reflect.get(target, property, target)
              return typeof value === "function" ? value.bind(target) : value
            }
          })
        }))
    }
  }
}

interface Planned {
  readonly kind: Kind
  readonly message: publisher.OutMessage
}

interface Call {
  readonly name: string
  readonly window: number
  /** Undefined: one `publishOne`. */
  readonly chunks: ReadonlyArray<number> | undefined
  readonly produceFirst: boolean
  readonly items: ReadonlyArray<Planned>
}

const kernelRun = (seed: number, vhost: string) =>
  Effect.gen(function*() {
    const where = `seed ${seed}`
    const random = rng(seed)
    const tag = `${runId}-${seed}`
    const queue = `pk.${tag}.ok`
    const full = `pk.${tag}.full`
    const capacity = random.int(20, 200)
    const direct = yield* rawConnection(urlFor(vhost))
    yield* withChannel(direct, async (channel) => {
      await channel.assertQueue(queue, { durable: true })
      await channel.assertQueue(full, {
        durable: true,
        arguments: { "x-max-length": capacity, "x-overflow": "reject-publish" }
      })
    })
    const proxy = yield* tcpProxy("127.0.0.1", 5672)
    const endpoint = yield* url.parse(proxy.url(urlFor(vhost)))
    const manager = yield* connection.make({
      endpoint,
      heartbeatSeconds: 5,
      connectTimeout: Duration.seconds(5),
      shutdownTimeout: Duration.seconds(2),
      reconnect: Schedule.spaced("50 millis"),
      connectionName: `publisher stress ${tag}`,
      setup: async () => {}
    })
    const probe = new Probe()
    const kernel = yield* publisher.make(probe.wrap(manager), Duration.seconds(5))
    yield* Effect.addFinalizer(() => kernel.close(Duration.seconds(5)))

    const poison = random.chance(0.7)
    let n = 0
    const plan = (call: string): Planned => {
      const id = `${call}:${n++}`
      const roll = random.next()
      const kind: Kind = poison && roll < 0.01
        ? "poison"
        : roll < 0.05
        ? "invalid"
        : roll < 0.12
        ? "unroutable"
        : roll < 0.3
        ? "full"
        : "good"
      const options: Amqp.Options.Publish = {
        persistent: random.chance(0.7),
        mandatory: true,
        messageId: id,
        contentType: "application/json",
        ...(kind === "invalid"
          ? { headers: { big: "x".repeat(70_000) } }
          : random.chance(0.2)
          ? { headers: { h: id } }
          : {})
      }
      const exchange = kind === "poison" ? `pk.${tag}.missing-exchange` : ""
      const routingKey = kind === "full" ? full : kind === "unroutable" ? `pk.${tag}.nobody` : queue
      return {
        kind,
        message: {
          exchange,
          routingKey,
          content: Buffer.from(JSON.stringify({ id })),
          options,
          topic: routingKey,
          messageId: id
        }
      }
    }
    const calls: Array<Call> = []
    for (let c = random.int(2, 6); c > 0; c--) {
      const name = `b${calls.length}`
      const size = random.int(1, 400)
      const items = Array.from({ length: size }, () => plan(name))
      const chunks: Array<number> = []
      for (let left = size; left > 0;) {
        const chunk = Math.min(left, random.int(1, 64))
        chunks.push(chunk)
        left -= chunk
      }
      calls.push({ name, window: random.int(1, 64), chunks, produceFirst: random.chance(0.3), items })
    }
    for (let c = random.int(0, 30); c > 0; c--) {
      const name = `s${calls.length}`
      calls.push({ name, window: 1, chunks: undefined, produceFirst: false, items: [plan(name)] })
    }
    const total = calls.reduce((sum, call) => sum + call.items.length, 0)
    // A connection reset once a random share of the messages was written (a new connection follows).
    const resetAt = random.chance(0.5) ? random.int(1, total) : undefined
    const resetNow = yield* Deferred.make<void>()
    probe.onWrite = () => {
      if (resetAt !== undefined && probe.writes === resetAt) Deferred.unsafeDone(resetNow, Effect.void)
    }
    const resetter = yield* Effect.fork(
      Effect.zipRight(Deferred.await(resetNow), Effect.zipRight(proxy.setMode("reset"), proxy.setMode("pass")))
    )

    const run = (call: Call): Effect.Effect<ReadonlyArray<publisher.Outcome>> => {
      const first = call.items[0]
      if (call.chunks === undefined && first !== undefined) {
        return Effect.map(kernel.publishOne(first.message), (o) => [o])
      }
      const feed = new publisher.Feed()
      const produce = Effect.gen(function*() {
        let at = 0
        for (const chunk of call.chunks ?? []) {
          for (const item of call.items.slice(at, at + chunk)) {
            feed.push(item.message)
          }
          at += chunk
          feed.flush()
          yield* yieldToEventLoop
        }
        feed.end()
      })
      return call.produceFirst
        ? Effect.zipRight(produce, kernel.publish(feed, call.window))
        : Effect.map(Effect.all([produce, kernel.publish(feed, call.window)], { concurrency: 2 }), ([, outcomes]) =>
          outcomes)
    }
    const results = yield* Effect.forEach(calls, run, { concurrency: "unbounded" }).pipe(
      Effect.timeoutFail({
        duration: "40 seconds",
        onTimeout: () =>
          new Error(`${where}: publishing never finished`)
      }),
      Effect.orDie
    )
    yield* Fiber.interrupt(resetter)

    const inQueues = countIds([...(yield* drain(direct, queue)), ...(yield* drain(direct, full))])
    const outcomeOf = new Map<string, publisher.Outcome>()
    let fullOk = 0
    calls.forEach((call, c) => {
      const outcomes = results[c] ?? []
      assert.strictEqual(outcomes.length, call.items.length, `${where}: ${call.name}: one outcome per message`)
      assert.isAtMost(
        probe.peak.get(call.name) ?? 0,
        call.window,
        `${where}: ${call.name}: confirms in flight within the window`
      )
      call.items.forEach(({ kind, message }, i) => {
        const id = message.messageId
        const outcome = outcomes[i]
        outcomeOf.set(id, outcome)
        const label = `${where}: ${id} (${kind}) → ${outcome === undefined ? "ok" : outcome.message}`
        const written = probe.written.get(id) ?? 0
        const stored = inQueues.get(id) ?? 0
        assert.isAtMost(written, 1, `${label}: written at most once`)
        if (outcome === undefined) {
          assert.include(["good", "full"], kind, label)
          assert.strictEqual(probe.confirm.get(id), "ack", `${label}: reported after its own ack`)
          assert.strictEqual(stored, 1, `${label}: confirmed, so in its queue exactly once`)
          if (kind === "full") fullOk++
          return
        }
        if (outcome._tag === "BrokerUnavailable") {
          assert.strictEqual(written, 0, `${label}: no channel, never written`)
          return
        }
        assert.strictEqual(outcome.messageId, id, `${label}: outcomes in input order`)
        switch (outcome.reason) {
          case "nacked":
            assert.strictEqual(kind, "full", label)
            assert.isFalse(outcome.ambiguous, label)
            assert.strictEqual(stored, 0, label)
            break
          case "unroutable":
            assert.strictEqual(kind, "unroutable", label)
            assert.isFalse(outcome.ambiguous, label)
            break
          case "invalid":
            assert.strictEqual(kind, "invalid", label)
            assert.isTrue(probe.threw.has(id) && written === 0, `${label}: refused by amqplib before writing`)
            break
          case "channel-closed":
            assert.isTrue(outcome.ambiguous, label)
            assert.strictEqual(written, 1, `${label}: was written`)
            break
          case "timeout":
            // In flight (possibly still queued behind amqplib's backpressure) → ambiguous.
            if (written === 1) assert.isTrue(outcome.ambiguous, `${label}: written, so ambiguous`)
            break
          default:
            assert.fail(`${label}: unexpected reason`)
        }
        if (!outcome.ambiguous) assert.strictEqual(stored, 0, `${label}: a definite failure is not in any queue`)
        if (kind === "invalid" || kind === "poison" || kind === "unroutable") assert.strictEqual(stored, 0, label)
      })
    })
    for (const [id, count] of inQueues) {
      assert.strictEqual(count, 1, `${where}: ${id} stored once`)
      const outcome = outcomeOf.get(id)
      assert.isTrue(
        outcome === undefined || (outcome instanceof PublishRejected && outcome.ambiguous),
        `${where}: ${id} is stored, so it was confirmed or ambiguous`
      )
    }
    assert.isAtMost(fullOk, capacity, `${where}: no more confirmed than the full queue holds`)
  }).pipe(Effect.scoped, quiet)

// ---------------------------------------------------------------------------------------------
// through the public API: publish / publishAll with packs, windows and bad entries
// ---------------------------------------------------------------------------------------------

/** The payload schema of one run: counts encodes, so a fault can be injected mid-batch. */
const payloadSchema = (onEncode: () => void) =>
  Schema.Struct({
    id: Schema.transform(Schema.String, Schema.String, {
      strict: true,
      decode: (id) => id,
      encode: (id) => {
        onEncode()
        return id
      }
    }),
    pad: Schema.String
  })
const maxMessageBytes = 32 * 1024

type EntryKind = "good" | "full" | "none" | "oversize" | "badHeader"

const apiRun = (seed: number, vhost: string) =>
  Effect.gen(function*() {
    const where = `seed ${seed}`
    const random = rng(seed)
    const tag = `${runId}-${seed}`
    const prefix = `pa${seed % 100000}`
    const direct = yield* rawConnection(urlFor(vhost))
    const proxy = yield* tcpProxy("127.0.0.1", 5672)
    const broker = yield* RabbitMQBroker.make({
      url: Redacted.make(proxy.url(urlFor(vhost))),
      prefix,
      maxMessageBytes,
      publishTimeout: "5 seconds",
      reconnect: Schedule.spaced("50 millis")
    }).pipe(Effect.orDie)
    let encoded = 0
    const resetNow = yield* Deferred.make<void>()
    const reset: { at: number | undefined } = { at: undefined }
    const Payload = payloadSchema(() => {
      if (++encoded === reset.at) Deferred.unsafeDone(resetNow, Effect.void)
    })
    const topics = {
      good: Broker.topic(`api.${tag}.good`, Payload),
      full: Broker.topic(`api.${tag}.full`, Payload),
      none: Broker.topic(`api.${tag}.none`, Payload)
    }
    const queue = `${prefix}.raw.${tag}.good`
    const full = `${prefix}.raw.${tag}.full`
    const capacity = random.int(10, 100)
    yield* withChannel(direct, async (channel) => {
      await channel.assertQueue(queue, { durable: true })
      await channel.assertQueue(full, {
        durable: true,
        arguments: { "x-max-length": capacity, "x-overflow": "reject-publish" }
      })
      await channel.bindQueue(queue, `${prefix}.topic`, topics.good.name)
      await channel.bindQueue(full, `${prefix}.topic`, topics.full.name)
    })

    let n = 0
    const entry = () => {
      const id = `${tag}:${n++}`
      const roll = random.next()
      const kind: EntryKind = roll < 0.04
        ? "oversize"
        : roll < 0.08
        ? "badHeader"
        : roll < 0.15
        ? "none"
        : roll < 0.3
        ? "full"
        : "good"
      const topic = kind === "full" ? topics.full : kind === "none" ? topics.none : topics.good
      const options: Broker.PublishOptions = {
        messageId: id,
        persistent: random.chance(0.7),
        ...(kind === "badHeader"
          ? { headers: random.chance(0.5) ? { "x-eb-mine": "no" } : { nul: "a\u0000b" } }
          : random.chance(0.2)
          ? { headers: { tenant: "t" } }
          : {})
      }
      const message = { id, pad: kind === "oversize" ? "x".repeat(maxMessageBytes) : "" }
      return { id, kind, topic, message, options }
    }
    type Planned = ReturnType<typeof entry>
    const batches: Array<{ readonly entries: Array<Planned>; readonly window: number; readonly pack: number }> = []
    for (let b = random.int(2, 5); b > 0; b--) {
      batches.push({
        // Over 256 entries, encoding and sending interleave (transport.ts streams in slices).
        entries: Array.from({ length: random.chance(0.5) ? random.int(1, 256) : random.int(257, 1000) }, entry),
        window: random.int(1, 200),
        pack: random.chance(0.5) ? 1 : random.int(2, 50)
      })
    }
    const singles = Array.from({ length: random.int(0, 60) }, entry)
    const total = batches.reduce((sum, b) => sum + b.entries.length, 0) + singles.length
    // A connection reset a little after a random share of the entries was encoded (sending runs
    // alongside): where it lands against the confirms in flight is the interleaving under test.
    reset.at = random.chance(0.6) ? random.int(1, total) : undefined
    const resetLag = Duration.millis(random.chance(0.5) ? 0 : random.int(1, 10))

    const outcomes = new Map<string, Either.Either<void, Broker.PublishError>>()
    const record = (planned: Planned, outcome: Either.Either<void, Broker.PublishError>) => {
      assert.isFalse(outcomes.has(planned.id), `${where}: ${planned.id} has one outcome`)
      outcomes.set(planned.id, outcome)
    }
    const work = Effect.all([
      Effect.forEach(batches, (batch) =>
        Effect.map(
          broker.publishAll(batch.entries.map((p) => Broker.entry(p.topic, p.message, p.options)), {
            window: batch.window,
            pack: batch.pack
          }),
          (results) => {
            assert.strictEqual(results.length, batch.entries.length, `${where}: one outcome per entry`)
            batch.entries.forEach((p, i) => record(p, results[i] ?? Either.void))
          }
        ), { concurrency: "unbounded" }),
      Effect.forEach(singles, (p) =>
        Effect.map(Effect.either(broker.publish(p.topic, p.message, p.options)), (o) => record(p, o)), {
        concurrency: "unbounded"
      })
    ], { concurrency: "unbounded" })
    const resetter = yield* Effect.fork(
      Deferred.await(resetNow).pipe(
        Effect.zipRight(Effect.sleep(resetLag)),
        Effect.zipRight(proxy.setMode("reset")),
        Effect.zipRight(proxy.setMode("pass"))
      )
    )
    yield* work.pipe(
      Effect.timeoutFail({
        duration: "40 seconds",
        onTimeout: () =>
          new Error(`${where}: publishing never finished`)
      }),
      Effect.orDie
    )
    yield* Fiber.interrupt(resetter)

    const fullMessages = yield* drain(direct, full)
    // Packed carriers count once against the queue's length limit.
    assert.isAtMost(fullMessages.length, capacity, where)
    const stored = countIds([...(yield* drain(direct, queue)), ...fullMessages])
    for (
      const planned of [
        ...batches.flatMap((b) =>
          b.entries
        ),
        ...singles
      ]
    ) {
      const outcome = outcomes.get(planned.id)
      const count = stored.get(planned.id) ?? 0
      const label = `${where}: ${planned.id} (${planned.kind}) → ${
        outcome === undefined ? "none" : Either.isRight(outcome) ? "ok" : outcome.left.message
      }`
      assert.isDefined(outcome, label)
      if (outcome === undefined) continue
      if (Either.isRight(outcome)) {
        assert.include(["good", "full"], planned.kind, label)
        assert.strictEqual(count, 1, `${label}: confirmed, so stored exactly once`)
        continue
      }
      const error = outcome.left
      assert.isAtMost(count, 1, `${label}: never stored twice`)
      switch (planned.kind) {
        case "oversize":
          assert.isTrue(error._tag === "PublishRejected" && error.reason === "too-large", label)
          break
        case "badHeader":
          assert.strictEqual(error._tag, "InvalidName", label)
          break
        case "none":
          assert.isTrue(error._tag === "PublishRejected" && (error.reason === "unroutable" || error.ambiguous), label)
          break
        case "full":
          assert.isTrue(
            error._tag === "BrokerUnavailable" ||
              (error._tag === "PublishRejected" &&
                (error.reason === "nacked" || error.ambiguous || error.reason === "timeout")),
            label
          )
          break
        case "good":
          assert.isTrue(
            error._tag === "BrokerUnavailable" ||
              (error._tag === "PublishRejected" && (error.ambiguous || error.reason === "timeout")),
            label
          )
      }
      const ambiguous = error._tag === "PublishRejected" && error.ambiguous
      if (!ambiguous) assert.strictEqual(count, 0, `${label}: a definite failure is not stored`)
    }
    for (const [id, count] of stored) {
      assert.strictEqual(count, 1, `${where}: ${id} stored once`)
      assert.isTrue(outcomes.has(id), `${where}: ${id} stored but never published`)
    }
  }).pipe(Effect.scoped, quiet)

const vhostLayer = Layer.scoped(Vhost, scopedVhost(`eb-pstress-${runId}`)).pipe(Layer.orDie)

layer(vhostLayer, { excludeTestServices: true, timeout: "120 seconds" })("publisher kernel under stress", (it) => {
  it.effect(
    "every message gets one outcome in order; ok means confirmed and stored once; definite failures are stored nowhere",
    () =>
      Effect.gen(function*() {
        const vhost = yield* Vhost
        for (let i = 0; i < 6; i++) yield* kernelRun(baseSeed + i, vhost)
      }),
    { timeout: 120_000 }
  )

  it.effect(
    "publish and publishAll (packs, windows, bad entries, a reset): every entry one outcome, ok entries stored once",
    () =>
      Effect.gen(function*() {
        const vhost = yield* Vhost
        for (let i = 0; i < 4; i++) yield* apiRun(baseSeed + i, vhost)
      }),
    { timeout: 120_000 }
  )
})
