/**
 * Stress test of the RabbitMQ consumer kernel (`src/internal/rabbitmq/consumer.ts`, `acker.ts`,
 * `packed.ts`) against the real broker, through `RabbitMQBroker`: packed and unpacked messages,
 * handlers that succeed, fail, die or take a while (decided per message and attempt by a seeded
 * hash, so every message's fate is known in advance), subscriptions with random concurrency and
 * prefetch closed mid-way and replaced, sometimes two competing at once, and sometimes a
 * connection reset through a TCP proxy. The ledger checks that every message ends handled or
 * dead-lettered after its last attempt, that no subscription ran more handlers than its
 * concurrency, and that a message ran twice only after the broker redelivered it.
 */
import { assert, layer } from "@effect/vitest"
import type * as Amqp from "amqplib"
import {
  Context,
  Duration,
  Effect,
  Either,
  Exit,
  Layer,
  Logger,
  LogLevel,
  Redacted,
  Schedule,
  Schema,
  Scope
} from "effect"
import * as Broker from "../../src/Broker.js"
import * as wire from "../../src/internal/wire.js"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import { runId } from "../fixtures/env.js"
import { announce, hash01, rng, stressSeed } from "../support/prng.js"
import { drain, rawConnection, scopedVhost, urlFor, withChannel } from "../support/rabbitmq.js"
import { tcpProxy } from "../support/tcpProxy.js"

const baseSeed = stressSeed()
announce("consumer.stress", baseSeed)

class Vhost extends Context.Tag("test/consumer.stress/Vhost")<Vhost, string>() {}

const Msg = Schema.Struct({ id: Schema.String })

const maxAttempts = 3
const shutdownTimeout = Duration.millis(250)

type Behaviour =
  | { readonly kind: "ok" | "fail" | "die" }
  | { readonly kind: "slow" | "stuck"; readonly ms: number }

const behaviour = (seed: number, id: string, attempt: number): Behaviour => {
  const r = hash01(seed, id, attempt)
  const s = hash01(seed, id, attempt, "ms")
  if (r < 0.5) return { kind: "ok" }
  if (r < 0.67) return { kind: "slow", ms: 1 + Math.floor(s * (s < 0.9 ? 15 : 80)) }
  // Outlives the shutdown timeout: interrupted (and requeued) when its subscription closes.
  if (r < 0.7) return { kind: "stuck", ms: 400 + Math.floor(s * 200) }
  if (r < 0.87) return { kind: "fail" }
  return { kind: "die" }
}

const act = (b: Behaviour): Effect.Effect<void, string> => {
  switch (b.kind) {
    case "ok":
      return Effect.void
    case "fail":
      return Effect.fail("failed on purpose")
    case "die":
      return Effect.die("died on purpose")
    case "slow":
    case "stuck":
      return Effect.sleep(Duration.millis(b.ms))
  }
}

/** The attempt that succeeds, or undefined: dead-lettered after `maxAttempts`. */
const successfulAttempt = (seed: number, id: string): number | undefined => {
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    const b = behaviour(seed, id, attempt)
    if (b.kind === "ok" || b.kind === "slow" || b.kind === "stuck") return attempt
  }
  return undefined
}

interface Ledger {
  readonly successes: Array<number>
  readonly attempts: Array<number>
  redelivered: boolean
  /** Handlers of this message running now. */
  running: number
}

interface Subscription {
  readonly name: string
  readonly concurrency: number
  running: number
  peak: number
}

const consumerRun = (seed: number, vhost: string) => {
  // Warnings are kept for the ledger (a channel error is a finding), not printed.
  const warnings: Array<string> = []
  const capture = Logger.make<unknown, void>(({ logLevel, message }) => {
    if (LogLevel.greaterThanEqual(logLevel, LogLevel.Warning)) {
      warnings.push(Array.isArray(message) ? message.map(String).join(" ") : String(message))
    }
  })
  return Effect.gen(function*() {
    const where = `seed ${seed}`
    const random = rng(seed)
    const tag = `${runId}-${seed}`
    const prefix = `cs${seed % 100000}`
    const group = `g-${tag}`
    const direct = yield* rawConnection(urlFor(vhost))
    const proxy = yield* tcpProxy("127.0.0.1", 5672)
    const broker = yield* RabbitMQBroker.make({
      url: Redacted.make(proxy.url(urlFor(vhost))),
      prefix,
      shutdownTimeout,
      publishTimeout: "5 seconds",
      reconnect: Schedule.spaced("50 millis")
    }).pipe(Effect.orDie)
    const topic = Broker.topic(`c.${tag}`, Msg)
    yield* broker.declare(topic, { group })
    const retry = random.chance(0.5)
      ? Schedule.recurs(maxAttempts - 1)
      : Schedule.spaced("20 millis").pipe(Schedule.intersect(Schedule.recurs(maxAttempts - 1)))

    // Publish everything first: chunks, some packed, all confirmed.
    const ids: Array<string> = []
    for (let left = random.int(200, 600); left > 0;) {
      const size = Math.min(left, random.int(1, 80))
      left -= size
      const chunk = Array.from({ length: size }, (_, i) => `${tag}:${ids.length + i}`)
      for (const id of chunk) ids.push(id)
      const pack = random.chance(0.5) ? 1 : random.int(2, 40)
      const outcomes = yield* broker.publishAll(chunk.map((id) => Broker.entry(topic, { id }, { messageId: id })), {
        pack
      })
      assert.isTrue(outcomes.every(Either.isRight), `${where}: published`)
    }

    const ledger = new Map<string, Ledger>(
      ids.map((id) => [id, { successes: [], attempts: [], redelivered: false, running: 0 }])
    )
    const dead = new Map<string, Array<Amqp.Message>>()
    const subscriptions: Array<Subscription> = []
    const violations: Array<string> = []
    /** Messages run by two handlers at once: only possible for a redelivered one (see below). */
    const overlapping = new Set<string>()
    let handled = 0

    const handler = (subscription: Subscription) => (message: typeof Msg.Type, envelope: Broker.Envelope) =>
      Effect.acquireUseRelease(
        Effect.sync(() => {
          const entry = ledger.get(message.id)
          if (entry === undefined) violations.push(`${message.id}: never published`)
          entry?.attempts.push(envelope.attempt)
          if (entry !== undefined) {
            if (envelope.redelivered) entry.redelivered = true
            if (++entry.running > 1) overlapping.add(message.id)
          }
          subscription.running++
          subscription.peak = Math.max(subscription.peak, subscription.running)
          if (subscription.running > subscription.concurrency) {
            violations.push(
              `${subscription.name}: ${subscription.running} handlers at once, concurrency ${subscription.concurrency}`
            )
          }
        }),
        () =>
          Effect.zipRight(
            act(behaviour(seed, message.id, envelope.attempt)),
            Effect.sync(() => void ledger.get(message.id)?.successes.push(envelope.attempt))
          ),
        () =>
          Effect.sync(() => {
            subscription.running--
            const entry = ledger.get(message.id)
            if (entry !== undefined) entry.running--
            handled++
          })
      )

    const subscribe = (scope: Scope.Scope, concurrency: number, prefetch: number) =>
      Effect.gen(function*() {
        const subscription: Subscription = { name: `sub${subscriptions.length}`, concurrency, running: 0, peak: 0 }
        subscriptions.push(subscription)
        yield* broker.subscribe(topic, handler(subscription), { group, concurrency, prefetch, retry }).pipe(
          Scope.extend(scope),
          Effect.orDie
        )
      })

    const pollDead = drain(direct, `${prefix}.dlq.${group}`).pipe(
      Effect.map((messages) => {
        for (const message of messages) {
          const id = String(message.properties.messageId)
          dead.set(id, [...(dead.get(id) ?? []), message])
        }
      }),
      // Not declared yet: nothing dead-lettered so far.
      Effect.orElse(() => Effect.void)
    )
    const complete = () =>
      ids.every((id) => {
        const expected = successfulAttempt(seed, id)
        return expected === undefined ? dead.has(id) : ledger.get(id)?.successes.includes(expected) === true
      })

    // Subscriptions closed mid-way and replaced; sometimes two compete; sometimes the connection resets.
    const phases = random.int(2, 4)
    const resetPhase = random.chance(0.4) ? random.int(0, phases - 1) : undefined
    for (let phase = 0; phase < phases && !complete(); phase++) {
      const scope = yield* Scope.make()
      for (let n = random.chance(0.3) ? 2 : 1; n > 0; n--) {
        const concurrency = random.int(1, 16)
        yield* subscribe(scope, concurrency, random.int(concurrency, concurrency * 4))
      }
      const target = handled + random.int(20, 250)
      /** Polls the dead letters until `done`; the deadline is the assertion. */
      const progress = (label: string, done: () => boolean) =>
        Effect.repeat(pollDead, { until: () => done() || complete(), schedule: Schedule.spaced("20 millis") }).pipe(
          Effect.timeoutFail({
            duration: "30 seconds",
            onTimeout: () => new Error(`${where}: phase ${phase} ${label}`)
          }),
          Effect.orDie
        )
      if (phase === resetPhase) {
        yield* progress("never got under way", () => handled >= target - 10)
        yield* proxy.setMode("reset")
        yield* proxy.setMode("pass")
      }
      yield* progress("stalled", () => handled >= target)
      const started = Date.now()
      yield* Scope.close(scope, Exit.void)
      // Shutdown is bounded by its timeout: cancel, wait for in-flight handlers up to it, interrupt
      // the rest (requeued), close. The margin covers the round trips.
      assert.isBelow(
        Date.now() - started,
        Duration.toMillis(shutdownTimeout) + 2000,
        `${where}: phase ${phase} shut down in time`
      )
    }

    const last = yield* Scope.make()
    yield* subscribe(last, random.int(1, 16), 32)
    yield* Effect.repeat(pollDead, { until: complete, schedule: Schedule.spaced("20 millis") }).pipe(
      Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error(`${where}: never completed`) }),
      Effect.orDie
    )
    yield* Scope.close(last, Exit.void)
    yield* pollDead

    assert.deepStrictEqual(violations, [], where)
    for (const subscription of subscriptions) {
      assert.isAtMost(
        subscription.peak,
        subscription.concurrency,
        `${where}: ${subscription.name} within its concurrency`
      )
    }
    for (const id of ids) {
      const entry = ledger.get(id)
      const letters = dead.get(id) ?? []
      const expected = successfulAttempt(seed, id)
      const label = `${where}: ${id} (attempts ${entry?.attempts}, dead ${letters.length})`
      if (entry === undefined) continue
      if (expected === undefined) {
        assert.deepStrictEqual(entry.successes, [], `${label} succeeded on an attempt meant to fail`)
        assert.isAtLeast(letters.length, 1, `${label} was never dead-lettered`)
        for (const letter of letters) {
          const headers = letter.properties.headers ?? {}
          assert.strictEqual(
            String(headers[wire.headers.attempt]),
            String(maxAttempts),
            `${label}: dead after its last attempt`
          )
          assert.include(String(headers[wire.headers.deadReason]), "retries exhausted", label)
        }
      } else {
        assert.strictEqual(letters.length, 0, `${label} dead-lettered though attempt ${expected} succeeds`)
        for (const attempt of entry.successes) {
          assert.strictEqual(attempt, expected, `${label} succeeded on attempt ${attempt}`)
        }
      }
      // Twice only after a redelivery (a requeued pack, an interrupted handler, a lost channel).
      if (entry.successes.length > 1 || letters.length > 1) {
        assert.isTrue(entry.redelivered, `${label} ran to an end twice without a redelivery: ${entry.successes}`)
      }
    }
    // A settle too many (a second ack or nack of one delivery tag) closes the channel: never
    // seen unless this run cut the connection.
    // Two handlers of one message at once: a lost channel's handler beside the redelivery, or a
    // requeued pack's member beside its own retry; never without a redelivery.
    for (const id of overlapping) {
      assert.isTrue(ledger.get(id)?.redelivered, `${where}: ${id} ran in two handlers at once`)
    }
    if (resetPhase === undefined) {
      const channelTrouble = warnings.filter((line) =>
        /consumer lost|channel error|PRECONDITION|could not forward/.test(line)
      )
      assert.deepStrictEqual(channelTrouble, [], where)
    }
    // Whatever was not handled is still in RabbitMQ: nothing is left behind the last close.
    const left = yield* withChannel(direct, (channel) => channel.checkQueue(`${prefix}.group.${group}`))
    if (ids.every((id) => ledger.get(id)?.redelivered !== true)) assert.strictEqual(left.messageCount, 0, where)
  }).pipe(Effect.scoped, Effect.provide(Logger.replace(Logger.defaultLogger, capture)))
}

const vhostLayer = Layer.scoped(Vhost, scopedVhost(`eb-cstress-${runId}`)).pipe(Layer.orDie)

layer(vhostLayer, { excludeTestServices: true, timeout: "120 seconds" })("consumer kernel under stress", (it) => {
  it.effect(
    "every message handled or dead-lettered after its retries; concurrency bounded; a second run only after a redelivery",
    () =>
      Effect.gen(function*() {
        const vhost = yield* Vhost
        for (let i = 0; i < 4; i++) yield* consumerRun(baseSeed + i, vhost)
      }),
    { timeout: 120_000 }
  )
})
