import { assert, describe, it } from "@effect/vitest"
import {
  Config,
  ConfigProvider,
  Deferred,
  Effect,
  Either,
  Exit,
  Fiber,
  Option,
  Queue,
  Ref,
  Schedule,
  Schema,
  Scope,
  TestClock
} from "effect"
import * as Broker from "../../src/Broker.js"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import { memoryBrokerWithProbe, settled } from "../fixtures/memory.js"
import { brokerContract } from "./contract.js"

brokerContract("memory", memoryBrokerWithProbe, { real: false })

const Job = Schema.Struct({ n: Schema.Number })
const jobs = Broker.topic("jobs.run", Job)

const stats = (broker: MemoryBroker.Service, group: string) =>
  Effect.map(broker.queue(group), Option.getOrThrowWith(() => new Error(`no queue ${group}`)))

describe("MemoryBroker on TestClock", () => {
  it.scoped("a retry delay of one minute fires when the clock passes it, not before", () =>
    Effect.gen(function*() {
      const broker = yield* MemoryBroker.make()
      const attempts = yield* Queue.unbounded<number>()
      yield* broker.subscribe(
        jobs,
        (_, envelope) =>
          Queue.offer(attempts, envelope.attempt).pipe(
            Effect.zipRight(envelope.attempt === 1 ? Effect.fail("not yet") : Effect.void)
          ),
        { group: "jobs", retry: Schedule.spaced("1 minute") }
      )
      yield* broker.publish(jobs, { n: 1 })
      assert.strictEqual(yield* Queue.take(attempts), 1)
      yield* settled("retry scheduled", stats(broker, "jobs"), (s) => s.delayed === 1)

      yield* TestClock.adjust("59 seconds")
      yield* settled("nothing moved", stats(broker, "jobs"), (s) => s.delayed === 1 && s.inFlight === 0)
      assert.strictEqual(yield* Queue.size(attempts), 0)

      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Queue.take(attempts), 2)
      const after = yield* settled("acked", stats(broker, "jobs"), (s) => s.acked === 1)
      assert.strictEqual(after.retried, 1)
      assert.strictEqual(after.delayed, 0)
    }))

  it.scoped("a delayed publish is delivered when the clock reaches the delay", () =>
    Effect.gen(function*() {
      const broker = yield* MemoryBroker.make()
      const received = yield* Queue.unbounded<Broker.Envelope>()
      yield* broker.subscribe(jobs, (_, envelope) => Queue.offer(received, envelope), { group: "jobs" })
      yield* broker.publish(jobs, { n: 1 }, { delay: "5 minutes" })
      assert.strictEqual((yield* stats(broker, "jobs")).delayed, 1)

      yield* TestClock.adjust("4 minutes")
      yield* TestClock.adjust("59 seconds")
      yield* settled("still delayed", stats(broker, "jobs"), (s) => s.delayed === 1)
      assert.strictEqual(yield* Queue.size(received), 0)

      yield* TestClock.adjust("1 second")
      const envelope = yield* Queue.take(received)
      assert.strictEqual(envelope.attempt, 1)
      assert.strictEqual(envelope.publishedAt?.getTime(), 0)
    }))

  it.scoped("an expired message is dropped from the queue, a fresh one is delivered", () =>
    Effect.gen(function*() {
      const broker = yield* MemoryBroker.make()
      yield* Effect.scoped(broker.subscribe(jobs, () => Effect.void, { group: "jobs" }))
      yield* broker.publish(jobs, { n: 1 }, { expiration: "1 minute" })
      yield* broker.publish(jobs, { n: 2 }, { expiration: "10 minutes" })
      yield* TestClock.adjust("2 minutes")
      yield* broker.publish(jobs, { n: 3 })

      const received = yield* Queue.unbounded<number>()
      yield* broker.subscribe(jobs, (job) => Queue.offer(received, job.n), { group: "jobs", concurrency: 1 })
      assert.deepStrictEqual(yield* Effect.replicateEffect(Queue.take(received), 2), [2, 3])
      assert.strictEqual((yield* stats(broker, "jobs")).expired, 1)
    }))

  it.scoped("closing a subscription interrupts handlers after shutdownTimeout and requeues their messages", () =>
    Effect.gen(function*() {
      const broker = yield* MemoryBroker.make({ shutdownTimeout: "2 seconds" })
      const started = yield* Deferred.make<void>()
      const interrupted = yield* Ref.make(0)
      const scope = yield* Scope.make()
      yield* broker.subscribe(
        jobs,
        () =>
          Deferred.succeed(started, undefined).pipe(
            Effect.zipRight(Effect.never),
            Effect.onInterrupt(() => Ref.update(interrupted, (n) => n + 1))
          ),
        { group: "jobs" }
      ).pipe(Scope.extend(scope))
      yield* broker.publish(jobs, { n: 7 })
      yield* Deferred.await(started)

      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* settled("consumer detached", stats(broker, "jobs"), (s) => s.consumers === 0)
      yield* TestClock.adjust("1 second")
      assert.isNull(closing.unsafePoll(), "still waiting for the in-flight handler")
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(closing)
      assert.strictEqual(yield* Ref.get(interrupted), 1)
      const requeued = yield* stats(broker, "jobs")
      assert.strictEqual(requeued.ready, 1)
      assert.strictEqual(requeued.inFlight, 0)

      const received = yield* Queue.unbounded<readonly [number, Broker.Envelope]>()
      yield* broker.subscribe(jobs, (job, envelope) => Queue.offer(received, [job.n, envelope]), { group: "jobs" })
      const [n, envelope] = yield* Queue.take(received)
      assert.strictEqual(n, 7)
      assert.strictEqual(envelope.redelivered, true)
      assert.strictEqual(envelope.attempt, 1)
    }))

  it.scoped("a handler that finishes within shutdownTimeout is acked, not redelivered", () =>
    Effect.gen(function*() {
      const broker = yield* MemoryBroker.make({ shutdownTimeout: "5 seconds" })
      const started = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const scope = yield* Scope.make()
      yield* broker.subscribe(
        jobs,
        () => Deferred.succeed(started, undefined).pipe(Effect.zipRight(Deferred.await(gate))),
        { group: "jobs" }
      ).pipe(Scope.extend(scope))
      yield* broker.publish(jobs, { n: 1 })
      yield* Deferred.await(started)
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* settled("consumer detached", stats(broker, "jobs"), (s) => s.consumers === 0)
      yield* broker.publish(jobs, { n: 2 })
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(closing)
      const after = yield* stats(broker, "jobs")
      assert.strictEqual(after.acked, 1)
      assert.strictEqual(after.ready, 1, "the message published during shutdown waits for the next consumer")
    }))
})

describe("MemoryBroker inspection API", () => {
  it.scoped("published, messages, dead letters and queue stats", () =>
    Effect.gen(function*() {
      const broker = yield* MemoryBroker.make()
      yield* broker.subscribe(jobs, (job) => (job.n < 0 ? Effect.fail("negative") : Effect.void), {
        group: "workers",
        retry: Schedule.recurs(1)
      })
      yield* broker.subscribe(Broker.pattern("jobs.#", Job), () => Effect.void, { group: "audit" })
      yield* broker.publish(jobs, { n: 1 }, { headers: { tenant: "acme" }, correlationId: "c-1", priority: 3 })
      yield* broker.publish(jobs, { n: -1 }, { messageId: "bad-job", persistent: false })
      yield* broker.awaitIdle

      const published = yield* broker.published
      assert.strictEqual(published.length, 2)
      const first = published[0]
      assert.strictEqual(first?.topic, "jobs.run")
      assert.strictEqual(first?.body, "{\"n\":1}")
      assert.deepStrictEqual(first?.headers, { tenant: "acme" })
      assert.strictEqual(first?.correlationId, "c-1")
      assert.strictEqual(first?.priority, 3)
      assert.deepStrictEqual(first?.groups, ["workers", "audit"])
      assert.deepStrictEqual(published.map((message) => message.persistent), [true, false])
      assert.deepStrictEqual(yield* broker.messages(jobs), [{ n: 1 }, { n: -1 }])
      assert.deepStrictEqual(yield* broker.messages(Broker.pattern("other.*", Job)), [])

      const dead = yield* broker.deadLetters("workers")
      assert.strictEqual(dead.length, 1)
      assert.strictEqual(dead[0]?.messageId, "bad-job")
      assert.strictEqual(dead[0]?.attempt, 2)
      assert.include(dead[0]?.reason, "negative")
      assert.strictEqual(dead[0]?.body, "{\"n\":-1}")
      assert.deepStrictEqual(yield* broker.deadLetters("audit"), [])
      assert.deepStrictEqual(yield* broker.deadLetters("unknown"), [])

      const workers = yield* stats(broker, "workers")
      assert.deepStrictEqual(
        { ...workers },
        {
          group: "workers",
          patterns: ["jobs.run"],
          maxPriority: undefined,
          consumers: 1,
          ready: 0,
          inFlight: 0,
          delayed: 0,
          acked: 1,
          retried: 1,
          expired: 0,
          deadLettered: 1
        }
      )
      assert.strictEqual((yield* stats(broker, "audit")).acked, 2)
      assert.isTrue(Option.isNone(yield* broker.queue("unknown")))
      const health = yield* broker.health
      assert.strictEqual(health.status, "up")
      assert.strictEqual(health.consumers, 2)
    }))

  it.scoped("awaitIdle returns once thousands of messages are handled", () =>
    Effect.gen(function*() {
      const broker = yield* MemoryBroker.make()
      const handled = yield* Ref.make(0)
      yield* broker.subscribe(jobs, () => Ref.update(handled, (n) => n + 1), { group: "a", concurrency: 10 })
      yield* broker.subscribe(jobs, () => Ref.update(handled, (n) => n + 1), { group: "a", concurrency: 10 })
      const outcomes = yield* broker.publishAll(Array.from({ length: 3000 }, (_, n) => Broker.entry(jobs, { n })))
      assert.isTrue(outcomes.every(Either.isRight))
      yield* broker.awaitIdle
      assert.strictEqual(yield* Ref.get(handled), 3000)
      assert.strictEqual((yield* stats(broker, "a")).acked, 3000)
    }))

  it.scoped("competing consumers share a group round-robin", () =>
    Effect.gen(function*() {
      const broker = yield* MemoryBroker.make()
      const seen = yield* Queue.unbounded<string>()
      for (const name of ["a", "b", "c"]) {
        yield* broker.subscribe(jobs, () => Queue.offer(seen, name), { group: "g", concurrency: 1 })
      }
      yield* broker.publishAll(Array.from({ length: 9 }, (_, n) => Broker.entry(jobs, { n })))
      yield* broker.awaitIdle
      const by = yield* Queue.takeAll(seen)
      const counts = new Map<string, number>()
      for (const name of by) counts.set(name, (counts.get(name) ?? 0) + 1)
      assert.deepStrictEqual(Object.fromEntries(counts), { a: 3, b: 3, c: 3 })
    }))

  it.scoped("priorities above maxPriority count as the maximum; equal priorities keep order", () =>
    Effect.gen(function*() {
      const broker = yield* MemoryBroker.make()
      yield* Effect.scoped(broker.subscribe(jobs, () => Effect.void, { group: "p", maxPriority: 2 }))
      for (const [n, priority] of [[1, 0], [2, 200], [3, 2], [4, 1]] as const) {
        yield* broker.publish(jobs, { n }, { priority })
      }
      const order = yield* Queue.unbounded<number>()
      yield* broker.subscribe(jobs, (job) => Queue.offer(order, job.n), { group: "p", concurrency: 1, maxPriority: 2 })
      assert.deepStrictEqual(yield* Effect.replicateEffect(Queue.take(order), 4), [2, 3, 4, 1])
    }))

  it.effect("a broker whose scope closed rejects publishes and reports down", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const broker = yield* MemoryBroker.make().pipe(Scope.extend(scope))
      yield* Effect.scoped(broker.subscribe(jobs, () => Effect.void, { group: "g" }))
      yield* Scope.close(scope, Exit.void)
      const result = yield* Effect.either(broker.publish(jobs, { n: 1 }))
      assert.isTrue(Either.isLeft(result) && result.left._tag === "BrokerUnavailable")
      assert.strictEqual((yield* broker.health).status, "down")
    }))

  it.effect("the layer provides Broker.Broker and MemoryBroker as one broker", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const memory = yield* MemoryBroker.MemoryBroker
      assert.strictEqual(broker, memory)
      const maxed = yield* Effect.either(
        Effect.scoped(
          Effect.zipRight(
            broker.subscribe(jobs, () => Effect.void, { group: "g" }),
            broker.publish(Broker.topic("jobs.run", Schema.String), "x".repeat(2048))
          )
        )
      )
      assert.isTrue(Either.isLeft(maxed) && maxed.left._tag === "PublishRejected" && maxed.left.reason === "too-large")
    }).pipe(Effect.provide(MemoryBroker.layer({ maxMessageBytes: 1024 }))))

  it.live("closing one of two consumers under load loses nothing; only interrupted messages repeat", () =>
    Effect.gen(function*() {
      const broker = yield* MemoryBroker.make({ shutdownTimeout: "1 millis" })
      const handled = yield* Ref.make<ReadonlyArray<number>>([])
      const byA = yield* Ref.make(0)
      const redelivered = yield* Ref.make(0)
      const halfway = yield* Deferred.make<void>()
      // A is slow, so closing it with a 1 ms shutdownTimeout interrupts handlers mid-flight.
      const handler =
        (counter: Ref.Ref<number> | undefined) => (job: { readonly n: number }, envelope: Broker.Envelope) =>
          Effect.sleep(counter === undefined ? "2 millis" : "50 millis").pipe(
            Effect.zipRight(Ref.update(handled, (all) => [...all, job.n])),
            Effect.zipRight(envelope.redelivered ? Ref.update(redelivered, (n) => n + 1) : Effect.void),
            Effect.zipRight(counter === undefined ? Effect.succeed(0) : Ref.updateAndGet(counter, (n) => n + 1)),
            Effect.tap((n) => (n === 5 ? Deferred.succeed(halfway, undefined) : Effect.void))
          )
      const scopeA = yield* Scope.make()
      yield* broker.subscribe(jobs, handler(byA), { group: "g", concurrency: 5 }).pipe(Scope.extend(scopeA))
      yield* Effect.scoped(
        Effect.gen(function*() {
          yield* broker.subscribe(jobs, handler(undefined), { group: "g", concurrency: 5 })
          yield* broker.publishAll(Array.from({ length: 1000 }, (_, n) => Broker.entry(jobs, { n })))
          yield* Deferred.await(halfway)
          yield* Scope.close(scopeA, Exit.void)
          yield* broker.awaitIdle
        })
      )
      const all = yield* Ref.get(handled)
      const distinct = new Set(all)
      assert.strictEqual(distinct.size, 1000, "every message handled")
      assert.isAtMost(all.length - distinct.size, 5, "repeats bounded by the closed consumer's concurrency")
      assert.isAtLeast(yield* Ref.get(redelivered), 1, "interrupted messages were redelivered")
      const stats = yield* broker.queue("g")
      assert.isTrue(Option.isSome(stats) && stats.value.ready === 0 && stats.value.inFlight === 0)
    }).pipe(Effect.scoped, Effect.timeout("30 seconds")))

  it.effect("layerConfig reads its options from Config", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const rejected = yield* Effect.either(
        Effect.scoped(
          Effect.zipRight(
            broker.subscribe(jobs, () => Effect.void, { group: "g" }),
            broker.publish(Broker.topic("jobs.run", Schema.String), "x".repeat(200))
          )
        )
      )
      assert.isTrue(
        Either.isLeft(rejected) && rejected.left._tag === "PublishRejected" && rejected.left.reason === "too-large"
      )
    }).pipe(
      Effect.provide(MemoryBroker.layerConfig({ maxMessageBytes: Config.integer("BROKER_MAX_BYTES") })),
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["BROKER_MAX_BYTES", "100"]])))
    ))

  it.scoped("each make is a separate broker", () =>
    Effect.gen(function*() {
      const first = yield* MemoryBroker.make()
      const second = yield* MemoryBroker.make()
      yield* first.subscribe(jobs, () => Effect.void, { group: "g" })
      const result = yield* Effect.either(second.publish(jobs, { n: 1 }))
      assert.isTrue(
        Either.isLeft(result) && result.left._tag === "PublishRejected",
        "the second broker has no group bound"
      )
    }))
})
