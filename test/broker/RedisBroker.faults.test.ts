/**
 * Faults of the Redis transport, counted as lost / duplicated / recovered:
 *
 * - RS1 a consumer process SIGKILLed mid-batch: its pending deliveries are claimed and run by a
 *   live consumer of the group; 0 lost, duplicates ≤ what it had finished but not yet acked.
 * - RS2 the server killed (SIGKILL) and restarted, own instance with `appendfsync always`: 0
 *   confirmed messages lost; consumers resume. RS3 the same without persistence: everything not
 *   yet consumed is lost (counted and printed, not hidden), and consumers resume on the empty
 *   server (the group is declared again).
 * - RS4 the connection cut through the TCP proxy while publishing and consuming: every publish has
 *   a typed outcome, 0 confirmed lost, consumers resume.
 * - RS5 a handler slower than `claimIdle`: the heartbeat keeps its delivery from being claimed by
 *   the group's other consumer: 0 duplicates.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Duration, Effect, Either, Layer, Queue, Redacted, Schema, type Scope } from "effect"
import { fork } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as Broker from "../../src/Broker.js"
import * as RedisBroker from "../../src/layers/RedisBroker.js"
import { runId, uniqueName } from "../fixtures/env.js"
import { cleanupLayer, ownServer, redisUrl } from "../support/redis.js"
import { tcpProxy } from "../support/tcpProxy.js"
import type { ChildMessage } from "./redisConsumerChild.js"

const Item = Schema.Struct({ n: Schema.Number })
const script = fileURLToPath(new URL("./redisConsumerChild.ts", import.meta.url))

const within = <A, E, R>(label: string, effect: Effect.Effect<A, E, R>, seconds = 60) =>
  Effect.timeoutFail(effect, { duration: Duration.seconds(seconds), onTimeout: () => new Error(`timed out: ${label}`) })

const waitUntil = (label: string, done: () => boolean, seconds = 60) =>
  within(
    label,
    Effect.gen(function*() {
      while (!done()) yield* Effect.sleep("20 millis")
    }),
    seconds
  )

const brokerOn = (url: string, prefix: string, options: Partial<RedisBroker.Options> = {}) =>
  Effect.map(
    Layer.build(RedisBroker.layer({ url: Redacted.make(url), prefix, ...options })),
    (context) => Context.get(context, Broker.Broker)
  )

const freshTopic = () => Broker.topic(uniqueName("fault").replaceAll("_", "-"), Item)

/** Publishes 0..total-1 one window at a time, recording which were confirmed. */
const publishCounting = (
  broker: Broker.Service,
  topic: Broker.Topic<typeof Item.Type, typeof Item.Encoded>,
  total: number,
  window: number,
  confirmed: Set<number>,
  failed: Map<string, number>,
  pauseMs = 0
) =>
  Effect.gen(function*() {
    for (let start = 0; start < total; start += window) {
      const ns = Array.from({ length: Math.min(window, total - start) }, (_, i) => start + i)
      const results = yield* broker.publishAll(ns.map((n) => Broker.entry(topic, { n })))
      results.forEach((result, i) => {
        const n = ns[i]
        if (n === undefined) return
        if (Either.isRight(result)) confirmed.add(n)
        else {
          const key = result.left._tag === "PublishRejected"
            ? `${result.left._tag}:${result.left.reason}`
            : result.left._tag
          failed.set(key, (failed.get(key) ?? 0) + 1)
        }
      })
      if (pauseMs > 0) yield* Effect.sleep(pauseMs)
    }
  })

/** Subscribes a counter: how many times each n was handled. */
const countingSubscriber = (
  broker: Broker.Service,
  topic: Broker.Topic<typeof Item.Type, typeof Item.Encoded>,
  group: string,
  counts: Map<number, number>,
  options: Partial<Broker.SubscribeOptions<never>> = {}
): Effect.Effect<void, Broker.SubscribeError, Scope.Scope> =>
  broker.subscribe(
    topic,
    (item) => Effect.sync(() => counts.set(item.n, (counts.get(item.n) ?? 0) + 1)),
    { group, concurrency: 10, ...options }
  )

const summary = (label: string, accepted: number, counts: Map<number, number>, extra = "") => {
  let duplicated = 0
  for (const count of counts.values()) duplicated += Math.max(0, count - 1)
  return `${label}: accepted ${accepted}, delivered ${counts.size}, duplicated ${duplicated}${extra}`
}

describe("RedisBroker faults", () => {
  it.live(
    "RS1: a consumer process SIGKILLed mid-batch: its pending deliveries are claimed and run; 0 lost",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const prefix = `tf1${runId}`
        yield* Layer.build(cleanupLayer(prefix))
        const claimIdle = 1000
        const broker = yield* brokerOn(redisUrl, prefix, { claimIdle })
        const topic = freshTopic()
        const group = uniqueName("g")
        yield* broker.declare(topic, { group })
        const inbox = yield* Queue.unbounded<ChildMessage>()
        const child = yield* Effect.acquireRelease(
          Effect.sync(() => {
            const forked = fork(script, [], {
              execArgv: ["--import", "tsx"],
              env: {
                ...process.env,
                REDIS_TEST_URL: redisUrl,
                REDIS_TEST_PREFIX: prefix,
                TOPIC: topic.name,
                GROUP: group,
                HOLD_MS: "100",
                CLAIM_IDLE_MS: String(claimIdle)
              },
              stdio: ["ignore", "inherit", "inherit", "ipc"]
            })
            forked.on("message", (message) => Queue.unsafeOffer(inbox, message as ChildMessage))
            return forked
          }),
          (forked) =>
            Effect.sync(() => forked.exitCode === null && forked.signalCode === null && forked.kill("SIGKILL"))
        )
        const childDone = new Set<number>()
        let childStarted = 0
        const drain = Effect.map(Queue.takeAll(inbox), (messages) => {
          for (const message of messages) {
            if (message.type === "started") childStarted++
            if (message.type === "done") childDone.add(message.n)
          }
        })
        yield* within("the child to subscribe", Queue.take(inbox))
        const total = 300
        const confirmed = new Set<number>()
        yield* publishCounting(broker, topic, total, 300, confirmed, new Map())
        assert.strictEqual(confirmed.size, total)
        yield* waitUntil("the child to be mid-batch", () => {
          Effect.runSync(drain)
          return childDone.size >= 30
        })
        child.kill("SIGKILL")
        const killedAt = Date.now()
        yield* Effect.sleep("100 millis")
        yield* drain
        const inFlightAtKill = childStarted - childDone.size

        const counts = new Map<number, number>()
        const redelivered = new Set<number>()
        yield* broker.subscribe(
          topic,
          (item, envelope) =>
            Effect.sync(() => {
              counts.set(item.n, (counts.get(item.n) ?? 0) + 1)
              if (envelope.redelivered) redelivered.add(item.n)
            }),
          { group, concurrency: 10 }
        )
        const all = () => {
          let seen = 0
          for (let n = 0; n < total; n++) if (childDone.has(n) || counts.has(n)) seen++
          return seen === total
        }
        yield* waitUntil("every message handled by the child or the live consumer", all)
        const recoveredMs = Date.now() - killedAt
        let duplicated = 0
        for (const [n, count] of counts) duplicated += count - 1 + (childDone.has(n) ? 1 : 0)
        const lost = [...confirmed].filter((n) => !childDone.has(n) && !counts.has(n)).length
        const health = yield* broker.health
        console.log(
          `RS1: accepted ${total}, done by the killed child ${childDone.size}, in flight at kill ${inFlightAtKill}, ` +
            `handled by the live consumer ${counts.size} (${redelivered.size} claimed/redelivered), lost ${lost}, ` +
            `duplicated ${duplicated}, recovered in ${recoveredMs} ms; ${health.detail}`
        )
        assert.strictEqual(lost, 0)
        // Duplicates: only what the child finished but had not acked yet (at most its prefetch of 20 per stream).
        assert.isAtMost(duplicated, 40)
        assert.isAtLeast(redelivered.size, 1, "the child's pending deliveries were claimed")
      })),
    { timeout: 120_000 }
  )

  it.live(
    "RS2: the server SIGKILLed and restarted (AOF, appendfsync always): 0 confirmed messages lost",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const server = yield* ownServer(true)
        const broker = yield* brokerOn(server.url, "r2", { claimIdle: 1000, publishTimeout: "20 seconds" })
        const topic = freshTopic()
        const group = uniqueName("g")
        const counts = new Map<number, number>()
        yield* countingSubscriber(broker, topic, group, counts)
        const confirmed = new Set<number>()
        const failed = new Map<string, number>()
        const total = 3000
        const publishing = yield* Effect.fork(publishCounting(broker, topic, total, 100, confirmed, failed, 5))
        yield* waitUntil("some messages to be confirmed", () => confirmed.size >= 800)
        yield* server.restart
        const restartedAt = Date.now()
        yield* within("publishing to finish", publishing.await)
        yield* waitUntil(
          "every confirmed message consumed",
          () => [...confirmed].every((n) => counts.has(n)),
          60
        )
        const lost = [...confirmed].filter((n) => !counts.has(n)).length
        console.log(
          summary(
            "RS2 (AOF always)",
            total,
            counts,
            `, confirmed ${confirmed.size}, failed typed ${
              JSON.stringify(Object.fromEntries(failed))
            }, lost ${lost}, ` +
              `recovered in ${Date.now() - restartedAt} ms`
          )
        )
        assert.strictEqual(lost, 0)
        assert.strictEqual(confirmed.size + [...failed.values()].reduce((a, b) => a + b, 0), total)
        assert.strictEqual((yield* broker.health).status, "up")
      })),
    { timeout: 120_000 }
  )

  it.live(
    "RS3: the same without persistence loses what was not yet consumed; consumers resume",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const server = yield* ownServer(false)
        const broker = yield* brokerOn(server.url, "r2b", { claimIdle: 1000, publishTimeout: "20 seconds" })
        const topic = freshTopic()
        const group = uniqueName("g")
        const counts = new Map<number, number>()
        // A slow consumer, so a backlog is on the server when it dies.
        yield* broker.subscribe(
          topic,
          (item) =>
            Effect.zipRight(
              Effect.sleep("2 millis"),
              Effect.sync(() => counts.set(item.n, (counts.get(item.n) ?? 0) + 1))
            ),
          { group, concurrency: 1 }
        )
        const confirmed = new Set<number>()
        yield* publishCounting(broker, topic, 1000, 1000, confirmed, new Map())
        yield* server.restart
        // The group is gone with everything else: the consumer declares it again and reads new messages.
        const after = new Set<number>()
        yield* within(
          "a publish after the restart to be consumed",
          Effect.gen(function*() {
            let n = 10_000
            while (true) {
              // Unroutable until the consumer declared its group again.
              const result = yield* Effect.either(broker.publish(topic, { n }))
              if (Either.isRight(result)) after.add(n)
              if ([...after].some((m) => counts.has(m))) return
              n++
              yield* Effect.sleep("100 millis")
            }
          })
        )
        const lost = [...confirmed].filter((m) => !counts.has(m)).length
        console.log(
          `RS3 (no persistence): confirmed ${confirmed.size} before the restart, consumed ${
            [...confirmed].filter((m) => counts.has(m)).length
          }, lost ${lost} (the backlog on the server when it died); consumption resumed after the restart`
        )
        assert.isAtLeast(lost, 1, "a backlog was lost: this is what a server without persistence does")
      })),
    { timeout: 120_000 }
  )

  it.live(
    "RS4: the connection cut through the TCP proxy: typed outcomes, 0 confirmed lost, consumers resume",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const prefix = `tf3${runId}`
        yield* Layer.build(cleanupLayer(prefix))
        const target = new URL(redisUrl)
        const proxy = yield* tcpProxy(target.hostname, Number(target.port || 6379))
        const broker = yield* brokerOn(proxy.url(redisUrl), prefix, { claimIdle: 1000, publishTimeout: "20 seconds" })
        const topic = freshTopic()
        const group = uniqueName("g")
        const counts = new Map<number, number>()
        yield* countingSubscriber(broker, topic, group, counts)
        const confirmed = new Set<number>()
        const failed = new Map<string, number>()
        const total = 5000
        const publishing = yield* Effect.fork(publishCounting(broker, topic, total, 100, confirmed, failed, 2))
        yield* waitUntil("some messages to be confirmed", () => confirmed.size >= 1000)
        yield* proxy.setMode("reset")
        yield* Effect.sleep("300 millis")
        yield* proxy.setMode("pass")
        const cutAt = Date.now()
        yield* within("publishing to finish", publishing.await)
        yield* waitUntil("every confirmed message consumed", () => [...confirmed].every((n) => counts.has(n)))
        const lost = [...confirmed].filter((n) => !counts.has(n)).length
        let duplicated = 0
        for (const count of counts.values()) duplicated += count - 1
        console.log(
          summary(
            "RS4 (connection reset)",
            total,
            counts,
            `, confirmed ${confirmed.size}, failed typed ${
              JSON.stringify(Object.fromEntries(failed))
            }, lost ${lost}, ` +
              `recovered in ${Date.now() - cutAt} ms`
          )
        )
        assert.strictEqual(lost, 0)
        assert.strictEqual(confirmed.size + [...failed.values()].reduce((a, b) => a + b, 0), total)
        // A cut loses the acks in flight and the settlements of what was held (those deliveries
        // come back once claimed): at most the held window (prefetch 10 per stream, two streams)
        // plus one window of acks sent in the last round trip.
        assert.isAtMost(duplicated, 40)
      })),
    { timeout: 120_000 }
  )

  it.live(
    "RS5: a handler slower than claimIdle is not claimed by the group's other consumer (heartbeat): 0 duplicates",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const prefix = `tf4${runId}`
        yield* Layer.build(cleanupLayer(prefix))
        const claimIdle = 600
        const first = yield* brokerOn(redisUrl, prefix, { claimIdle })
        const second = yield* brokerOn(redisUrl, prefix, { claimIdle })
        const topic = freshTopic()
        const group = uniqueName("g")
        const counts = new Map<number, number>()
        const slow = (broker: Broker.Service) =>
          broker.subscribe(
            topic,
            (item) =>
              Effect.zipRight(
                Effect.sleep(item.n % 2 === 0 ? "2400 millis" : "10 millis"),
                Effect.sync(() => counts.set(item.n, (counts.get(item.n) ?? 0) + 1))
              ),
            { group, concurrency: 4 }
          )
        yield* slow(first)
        yield* slow(second)
        const total = 20
        const confirmed = new Set<number>()
        yield* publishCounting(first, topic, total, total, confirmed, new Map())
        yield* waitUntil("every message handled", () => counts.size === total)
        // Past several claim periods: a duplicate would have arrived by now.
        yield* Effect.sleep("2000 millis")
        const health = yield* first.health
        console.log(summary(`RS5 (handler 4 × claimIdle ${claimIdle} ms)`, total, counts, `; ${health.detail}`))
        let duplicated = 0
        for (const count of counts.values()) duplicated += count - 1
        assert.strictEqual(duplicated, 0)
      })),
    { timeout: 60_000 }
  )
})
