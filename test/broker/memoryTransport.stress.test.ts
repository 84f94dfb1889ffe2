/**
 * Stress and property tests of the in-memory transport kernel (`src/internal/memory/transport.ts`,
 * `queue.ts`), through `MemoryBroker` on a manual `Clock`: many seeded interleavings of publishes
 * (priorities, delays, expirations, unroutable topics), competing consumers opened and closed at
 * random, handlers that succeed, fail, die or outlive the shutdown timeout, retries, dead letters
 * and redrives. Each run keeps a ledger and checks the kernel's invariants against it; a failure
 * names the seed that replays it (`STRESS_SEED`).
 */
import { assert, describe, it } from "@effect/vitest"
import { Clock, Duration, Effect, Either, Exit, Fiber, Option, Schedule, Schema, Scope } from "effect"
import * as Broker from "../../src/Broker.js"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import { settled } from "../fixtures/memory.js"
import { makeManualClock } from "../support/manualClock.js"
import { announce, hash01, rng, stressSeed } from "../support/prng.js"

const baseSeed = stressSeed()
announce("memoryTransport.stress", baseSeed)

const Msg = Schema.Struct({ id: Schema.String })
type Msg = typeof Msg.Type

const stats = (broker: MemoryBroker.Service, group: string) =>
  Effect.map(broker.queue(group), Option.getOrThrowWith(() => new Error(`no queue ${group}`)))

// ---------------------------------------------------------------------------------------------
// 1. the ledger: conservation, concurrency, outcomes
// ---------------------------------------------------------------------------------------------

const topicA = Broker.topic("s.a", Msg)
const topicB = Broker.topic("s.b", Msg)
const topicCX = Broker.topic("s.c.x", Msg)
/** Bound to no group: every publish to it is unroutable. */
const topicNone = Broker.topic("t.none", Msg)
const routable = [topicA, topicB, topicCX]

/** Attempts before a message is dead-lettered: every group retries twice. */
const maxAttempts = 3

interface GroupSpec {
  readonly name: string
  readonly binding: Broker.Subscribable<Msg, Msg>
  readonly maxPriority: number | undefined
  readonly retry: Schedule.Schedule<unknown, unknown>
  readonly routes: (topic: string) => boolean
}

const groupSpecs: ReadonlyArray<GroupSpec> = [
  { name: "ga", binding: topicA, maxPriority: undefined, retry: Schedule.recurs(2), routes: (t) => t === "s.a" },
  {
    name: "gall",
    binding: Broker.pattern("s.#", Msg),
    maxPriority: 5,
    retry: Schedule.spaced("10 millis").pipe(Schedule.intersect(Schedule.recurs(2))),
    routes: (t) => t.startsWith("s.")
  },
  {
    name: "gcx",
    binding: Broker.pattern("s.*.x", Msg),
    maxPriority: undefined,
    retry: Schedule.exponential("5 millis").pipe(Schedule.intersect(Schedule.recurs(2))),
    routes: (t) => t === "s.c.x"
  }
]

/** What a handler does with one attempt of one message: decided by (seed, id, attempt), so replays agree. */
type Behaviour =
  | { readonly kind: "ok" | "fail" | "die" }
  | { readonly kind: "slow" | "stuck"; readonly ms: number }

const shutdownMs = 50

const behaviour = (seed: number, id: string, attempt: number): Behaviour => {
  const r = hash01(seed, id, attempt)
  const s = hash01(seed, id, attempt, "ms")
  if (r < 0.45) return { kind: "ok" }
  if (r < 0.6) return { kind: "slow", ms: 1 + Math.floor(s * 20) }
  // Longer than the shutdown timeout: interrupted (and requeued) when its consumer closes.
  if (r < 0.7) return { kind: "stuck", ms: 2 * shutdownMs + Math.floor(s * 100) }
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

const succeeds = (b: Behaviour) => b.kind === "ok" || b.kind === "slow" || b.kind === "stuck"

/** The attempt that succeeds, or undefined: dead-lettered after `maxAttempts`. */
const successfulAttempt = (seed: number, id: string): number | undefined => {
  for (let attempt = 1; attempt <= maxAttempts; attempt++) if (succeeds(behaviour(seed, id, attempt))) return attempt
  return undefined
}

interface Accepted {
  readonly topic: string
  readonly publishedAt: number
  readonly delay: number
  readonly expiration: number | undefined
}

interface Delivered {
  /** In a handler right now: a message is never handed to two workers at once. */
  running: boolean
  redelivered: boolean
  readonly successes: Array<number>
}

interface Consumer {
  readonly id: number
  readonly group: GroupSpec
  readonly concurrency: number
  readonly scope: Scope.CloseableScope
  running: number
  closing: Fiber.RuntimeFiber<void> | undefined
}

const ledgerRun = (seed: number) => {
  const clock = makeManualClock()
  return Effect.gen(function*() {
    const where = `seed ${seed}`
    const random = rng(seed)
    const broker = yield* MemoryBroker.make({ shutdownTimeout: Duration.millis(shutdownMs), publishedLimit: 0 })
    for (const group of groupSpecs) {
      yield* broker.declare(group.binding, { group: group.name, maxPriority: group.maxPriority })
    }

    const accepted = new Map<string, Accepted>()
    const routed = new Map<string, number>(groupSpecs.map((g) => [g.name, 0]))
    const delivered = new Map<string, Delivered>()
    const violations: Array<string> = []
    const consumers: Array<Consumer> = []
    let nextId = 0
    let nextConsumer = 0

    const deliveredOf = (group: string, id: string): Delivered => {
      const key = `${group}|${id}`
      const found = delivered.get(key)
      if (found !== undefined) return found
      const fresh: Delivered = { running: false, redelivered: false, successes: [] }
      delivered.set(key, fresh)
      return fresh
    }

    const handler = (consumer: Consumer) => (message: Msg, envelope: Broker.Envelope) =>
      Effect.acquireUseRelease(
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            const record = accepted.get(message.id)
            if (record === undefined) violations.push(`${message.id}: delivered but never accepted`)
            else if (envelope.attempt === 1 && now < record.publishedAt + record.delay) {
              violations.push(
                `${message.id}: delivered at ${now}, before its delay ended (${record.publishedAt} + ${record.delay})`
              )
            }
            const entry = deliveredOf(consumer.group.name, message.id)
            if (entry.running) violations.push(`${consumer.group.name}: ${message.id} handed to two handlers at once`)
            entry.running = true
            if (envelope.redelivered) entry.redelivered = true
            consumer.running++
            if (consumer.running > consumer.concurrency) {
              violations.push(
                `consumer ${consumer.id}: ${consumer.running} handlers at once, concurrency ${consumer.concurrency}`
              )
            }
          })),
        () => {
          return Effect.zipRight(
            act(behaviour(seed, message.id, envelope.attempt)),
            Effect.sync(() => void deliveredOf(consumer.group.name, message.id).successes.push(envelope.attempt))
          )
        },
        () =>
          Effect.sync(() => {
            consumer.running--
            deliveredOf(consumer.group.name, message.id).running = false
          })
      )

    /** Every message routed to a group is in exactly one place: ready, in flight, delayed, acked, dead or expired. */
    const check = (label: string) =>
      Effect.gen(function*() {
        assert.deepStrictEqual(violations, [], `${where}: ${label}`)
        for (const group of groupSpecs) {
          const s = yield* stats(broker, group.name)
          assert.strictEqual(
            s.ready + s.inFlight + s.delayed + s.acked + s.deadLettered + s.expired,
            routed.get(group.name),
            `${where}: ${group.name} conserves its messages (${label}): ${JSON.stringify(s)}`
          )
          const capacity = consumers
            .filter((c) => c.group === group && (c.closing === undefined || c.closing.unsafePoll() === null))
            .reduce((sum, c) => sum + c.concurrency, 0)
          assert.isAtMost(
            s.inFlight,
            capacity,
            `${where}: ${group.name} in flight within its consumers' concurrency (${label})`
          )
        }
      })

    const prepare = (now: number) => {
      const id = `m${nextId++}`
      const topic = random.chance(0.05) ? topicNone : random.pick(routable)
      const priority = random.chance(0.5) ? random.int(0, 9) : undefined
      const delay = random.chance(0.2) ? random.int(1, 40) : 0
      const expiration = random.chance(0.15) ? random.int(5, 80) : undefined
      const options: Broker.PublishOptions = {
        priority,
        delay: delay > 0 ? Duration.millis(delay) : undefined,
        expiration: expiration === undefined ? undefined : Duration.millis(expiration)
      }
      const record = (outcome: Either.Either<void, Broker.PublishError>) => {
        if (topic === topicNone) {
          assert.isTrue(
            Either.isLeft(outcome) && outcome.left._tag === "PublishRejected" && outcome.left.reason === "unroutable",
            `${where}: ${id} to an unbound topic is unroutable`
          )
          return
        }
        assert.isTrue(Either.isRight(outcome), `${where}: ${id} accepted: ${String(Either.getLeft(outcome))}`)
        accepted.set(id, { topic: topic.name, publishedAt: now, delay, expiration })
        for (const group of groupSpecs) {
          if (group.routes(topic.name)) routed.set(group.name, (routed.get(group.name) ?? 0) + 1)
        }
      }
      return { entry: Broker.entry(topic, { id }, options), topic, id, options, record }
    }

    const open = (group: GroupSpec, concurrency: number) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const consumer: Consumer = { id: nextConsumer++, group, concurrency, scope, running: 0, closing: undefined }
        consumers.push(consumer)
        yield* broker.subscribe(group.binding, handler(consumer), {
          group: group.name,
          concurrency,
          retry: group.retry,
          maxPriority: group.maxPriority
        }).pipe(Scope.extend(scope), Effect.orDie)
      })

    /** Closing may wait for the shutdown timeout on the manual clock: forked, joined at the end. */
    const close = (consumer: Consumer) =>
      Effect.map(Effect.fork(Scope.close(consumer.scope, Exit.void)), (fiber) => {
        consumer.closing = fiber
      })

    const openConsumers = () => consumers.filter((c) => c.closing === undefined)

    const steps = random.int(100, 250)
    for (let step = 0; step < steps; step++) {
      const op = random.next()
      const now = yield* Clock.currentTimeMillis
      if (op < 0.25) {
        const one = prepare(now)
        one.record(yield* Effect.either(broker.publish(one.topic, { id: one.id }, one.options)))
      } else if (op < 0.4) {
        const batch = Array.from({ length: random.int(1, 15) }, () => prepare(now))
        const outcomes = yield* broker.publishAll(batch.map((b) => b.entry))
        assert.strictEqual(outcomes.length, batch.length, `${where}: one outcome per entry`)
        batch.forEach((b, i) => {
          const outcome = outcomes[i]
          if (outcome === undefined) assert.fail(`${where}: no outcome for entry ${i}`)
          else b.record(outcome)
        })
      } else if (op < 0.5) {
        if (openConsumers().length < 8) yield* open(random.pick(groupSpecs), random.int(1, 4))
      } else if (op < 0.58) {
        const running = openConsumers()
        if (running.length > 0) yield* close(random.pick(running))
      } else if (op < 0.8) {
        yield* clock.advance(random.int(1, 20))
      } else if (op < 0.83) {
        yield* broker.redrive(random.pick(groupSpecs).name)
      } else {
        for (let n = random.int(1, 5); n > 0; n--) yield* Effect.yieldNow()
      }
      yield* check(`step ${step}`)
    }

    // Drain: close what is open, give every group one steady consumer, let the clock run.
    for (const consumer of openConsumers()) yield* close(consumer)
    for (const group of groupSpecs) yield* open(group, 3)
    for (let turn = 0;; turn++) {
      const closed = consumers.every((c) => c.closing === undefined || c.closing.unsafePoll() !== null)
      let idle = closed
      for (const group of groupSpecs) {
        const s = yield* stats(broker, group.name)
        if (s.ready > 0 || s.inFlight > 0 || s.delayed > 0) idle = false
      }
      if (idle) break
      // The deadline is the assertion: 5 s of virtual time is far beyond any delay or handler here.
      assert.isBelow(turn, 1000, `${where}: the broker drains`)
      yield* clock.advance(5)
      yield* check(`drain turn ${turn}`)
    }
    for (const consumer of consumers) if (consumer.closing !== undefined) yield* Fiber.join(consumer.closing)

    // The outcome of every accepted message, per group.
    for (const group of groupSpecs) {
      const s = yield* stats(broker, group.name)
      const dead = yield* broker.deadLetters(group.name)
      const deadIds = new Set(dead.map((d) => JSON.parse(d.body).id as string))
      assert.strictEqual(deadIds.size, dead.length, `${where}: ${group.name}: a message is dead-lettered once`)
      for (const letter of dead) {
        assert.strictEqual(letter.attempt, maxAttempts, `${where}: ${group.name}: dead after its last attempt`)
        assert.include(letter.reason, "retries exhausted", `${where}: ${group.name}`)
      }
      let vanished = 0
      for (const [id, record] of accepted) {
        if (!group.routes(record.topic)) continue
        const entry = delivered.get(`${group.name}|${id}`)
        const successes = entry?.successes ?? []
        const expected = successfulAttempt(seed, id)
        const label = `${where}: ${group.name}: ${id}`
        if (successes.length > 0) {
          assert.isFalse(deadIds.has(id), `${label} succeeded and was dead-lettered`)
          assert.isDefined(expected, `${label} succeeded on an attempt meant to fail`)
          for (const attempt of successes) {
            assert.strictEqual(attempt, expected, `${label} succeeded on attempt ${attempt}`)
          }
          // A second success only follows a requeue (a handler interrupted after it finished its work).
          if (successes.length > 1) {
            assert.isTrue(entry?.redelivered, `${label} succeeded ${successes.length} times without a redelivery`)
          }
        } else if (deadIds.has(id)) {
          assert.isUndefined(expected, `${label} dead-lettered though attempt ${expected} succeeds`)
        } else {
          assert.isDefined(record.expiration, `${label} lost: neither acked, dead-lettered nor expirable`)
          vanished++
        }
      }
      assert.deepStrictEqual({ ready: s.ready, inFlight: s.inFlight, delayed: s.delayed }, {
        ready: 0,
        inFlight: 0,
        delayed: 0
      }, where)
      assert.strictEqual(s.deadLettered, dead.length, where)
      assert.isAtLeast(s.expired, vanished, `${where}: ${group.name}: every vanished message expired`)
      assert.strictEqual(
        s.acked + s.deadLettered + s.expired,
        routed.get(group.name),
        `${where}: ${group.name}: all settled`
      )
    }
    assert.deepStrictEqual(violations, [], where)
  }).pipe(Effect.scoped, Effect.withClock(clock))
}

// ---------------------------------------------------------------------------------------------
// 2. order: FIFO per priority level, requeue at the head, expiry at the head
// ---------------------------------------------------------------------------------------------

interface Queued {
  readonly id: string
  readonly level: number
  readonly expiresAt: number | undefined
}

/**
 * One consumer at a time, concurrency 1: deliveries must follow a model of the queue (the head of
 * the highest non-empty level; a requeued message back at the head of its level; an expired head
 * dropped). Each round handles some messages, then blocks on one and is closed (the blocked one is
 * interrupted and requeued); new messages are published between rounds.
 */
const orderRun = (seed: number) => {
  const clock = makeManualClock()
  return Effect.gen(function*() {
    const where = `seed ${seed}`
    const random = rng(seed)
    const shutdown = 10
    const broker = yield* MemoryBroker.make({ shutdownTimeout: Duration.millis(shutdown), publishedLimit: 0 })
    const topic = Broker.topic("o.q", Msg)
    const maxPriority = random.chance(0.3) ? undefined : random.int(1, 5)
    yield* broker.declare(topic, { group: "o", maxPriority })
    const levels: Array<Array<Queued>> = Array.from({ length: (maxPriority ?? 0) + 1 }, () => [])
    const levelOf = (priority: number | undefined) =>
      maxPriority === undefined ? 0 : Math.min(priority ?? 0, maxPriority)
    let nextId = 0
    let expiredInModel = 0

    const publishSome = (count: number) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        for (let n = 0; n < count; n++) {
          const id = `o${nextId++}`
          const priority = random.chance(0.3) ? undefined : random.int(0, 7)
          const expiration = random.chance(0.15) ? random.int(1, 3) * shutdown : undefined
          yield* broker.publish(topic, { id }, {
            priority,
            expiration: expiration === undefined ? undefined : Duration.millis(expiration)
          })
          levels[levelOf(priority)]?.push({
            id,
            level: levelOf(priority),
            expiresAt: expiration === undefined ? undefined : now + expiration
          })
        }
      })

    /** The model's next delivery at `now`: expired heads are dropped, as the kernel does. */
    const takeModel = (now: number): Queued | undefined => {
      for (let level = levels.length - 1; level >= 0; level--) {
        const queue = levels[level] ?? []
        while (queue.length > 0) {
          const head = queue.shift()
          if (head === undefined) break
          if (head.expiresAt !== undefined && head.expiresAt <= now) {
            expiredInModel++
            continue
          }
          return head
        }
      }
      return undefined
    }

    yield* publishSome(random.int(5, 30))
    const requeued = new Set<string>()
    for (let round = 0; round < 40; round++) {
      const remaining = levels.reduce((sum, queue) => sum + queue.length, 0)
      if (remaining === 0) break
      const handleFirst = random.int(0, 6)
      const seen: Array<{ readonly id: string; readonly redelivered: boolean }> = []
      let blocked = false
      const scope = yield* Scope.make()
      yield* broker.subscribe(topic, (message, envelope) =>
        Effect.suspend(() => {
          seen.push({ id: message.id, redelivered: envelope.redelivered })
          if (seen.length <= handleFirst) return Effect.void
          blocked = true
          return Effect.never
        }), { group: "o", concurrency: 1, maxPriority }).pipe(Scope.extend(scope), Effect.orDie)
      // Runs until it blocks or the queue is empty (nothing moves the clock meanwhile).
      yield* settled(
        `${where}: round ${round}`,
        stats(broker, "o"),
        (s) => blocked || (s.ready === 0 && s.inFlight === 0)
      )
      const now = yield* Clock.currentTimeMillis
      for (const [i, delivery] of seen.entries()) {
        const next = takeModel(now)
        assert.strictEqual(delivery.id, next?.id, `${where}: round ${round}, delivery ${i}: ${JSON.stringify(seen)}`)
        const wasRequeued = next !== undefined && requeued.delete(next.id)
        assert.strictEqual(
          delivery.redelivered,
          wasRequeued,
          `${where}: round ${round}: only a requeued message is flagged`
        )
        if (blocked && i === seen.length - 1 && next !== undefined) {
          // Interrupted by the close below: back at the head of its own level.
          levels[next.level]?.unshift(next)
          requeued.add(next.id)
        }
      }
      // Not blocked: the consumer emptied the queue, dropping every expired message on the way.
      if (!blocked) assert.isUndefined(takeModel(now), `${where}: round ${round}: the queue is empty`)
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      yield* settled(`${where}: detached`, stats(broker, "o"), (s) => s.consumers === 0)
      // A blocked handler: the close waits for the shutdown timeout, then interrupts it.
      if (blocked) yield* settled(`${where}: shutdown timer armed`, Effect.sync(clock.pending), (n) => n > 0)
      yield* clock.advance(shutdown)
      yield* Fiber.join(closing)
      if (random.chance(0.6)) yield* publishSome(random.int(1, 6))
    }
    // Whatever the model still holds is what the queue holds (expired heads not yet dropped included).
    const s = yield* stats(broker, "o")
    assert.strictEqual(s.ready, levels.reduce((sum, queue) => sum + queue.length, 0), where)
    assert.strictEqual(s.expired, expiredInModel, `${where}: expired heads dropped`)
    assert.strictEqual(s.inFlight, 0, where)
  }).pipe(Effect.scoped, Effect.withClock(clock))
}

// ---------------------------------------------------------------------------------------------
// 3. competing consumers share a backlog round-robin
// ---------------------------------------------------------------------------------------------

const fairnessRun = (seed: number) => {
  const clock = makeManualClock()
  return Effect.gen(function*() {
    const where = `seed ${seed}`
    const random = rng(seed)
    const broker = yield* MemoryBroker.make({ publishedLimit: 0 })
    const topic = Broker.topic("f.q", Msg)
    yield* broker.declare(topic, { group: "f" })
    const k = random.int(2, 6)
    const rounds = random.int(3, 12)
    const total = k * rounds
    const outcomes = yield* broker.publishAll(
      Array.from({ length: total }, (_, n) => Broker.entry(topic, { id: `f${n}` }))
    )
    assert.isTrue(outcomes.every(Either.isRight), where)
    const handled = Array.from({ length: k }, () => 0)
    for (let c = 0; c < k; c++) {
      yield* broker.subscribe(topic, () =>
        Effect.zipRight(
          Effect.sleep("10 millis"),
          Effect.sync(() => {
            handled[c] = (handled[c] ?? 0) + 1
          })
        ), { group: "f", concurrency: 1 })
    }
    for (let round = 0; round <= rounds + 1; round++) yield* clock.advance(10)
    yield* settled(`${where}: drained`, stats(broker, "f"), (s) => s.acked === total)
    // Equal handlers, one slot each: every consumer took one message per round.
    assert.deepStrictEqual(
      handled,
      Array.from({ length: k }, () => rounds),
      `${where}: ${k} consumers, ${rounds} rounds`
    )
  }).pipe(Effect.scoped, Effect.withClock(clock))
}

/**
 * Idle consumers (concurrency 1, parked) take turns: with messages published one at a time,
 * any `k` consecutive messages go to the `k` consumers of the epoch, one each. Between epochs a
 * consumer is closed or a new one opened.
 */
const rotationRun = (seed: number) => {
  const clock = makeManualClock()
  return Effect.gen(function*() {
    const where = `seed ${seed}`
    const random = rng(seed)
    const broker = yield* MemoryBroker.make({ publishedLimit: 0 })
    const topic = Broker.topic("r.q", Msg)
    yield* broker.declare(topic, { group: "r" })
    const taken: Array<number> = []
    const open = new Map<number, Scope.CloseableScope>()
    let nextConsumer = 0
    const openOne = Effect.gen(function*() {
      const id = nextConsumer++
      const scope = yield* Scope.make()
      open.set(id, scope)
      yield* broker.subscribe(topic, () => Effect.sync(() => void taken.push(id)), { group: "r", concurrency: 1 }).pipe(
        Scope.extend(scope),
        Effect.orDie
      )
    })
    for (let n = random.int(2, 5); n > 0; n--) yield* openOne
    let published = 0
    for (let epoch = 0; epoch < 6; epoch++) {
      const start = taken.length
      const k = open.size
      const count = k * random.int(2, 4)
      for (let n = 0; n < count; n++) {
        yield* broker.publish(topic, { id: `r${published++}` })
        yield* settled(`${where}: handled`, stats(broker, "r"), (s) => s.acked === published)
        // Let the worker park again before the next message.
        for (let turn = 0; turn < 10; turn++) yield* Effect.yieldNow()
      }
      const epochTaken = taken.slice(start)
      for (let i = 0; i + k <= epochTaken.length; i++) {
        const window = new Set(epochTaken.slice(i, i + k))
        assert.strictEqual(
          window.size,
          k,
          `${where}: epoch ${epoch}: ${k} consecutive messages go to ${k} consumers: ${epochTaken}`
        )
      }
      if (open.size > 2 && random.chance(0.5)) {
        const [id, scope] = random.pick([...open])
        open.delete(id)
        yield* Scope.close(scope, Exit.void)
      } else {
        yield* openOne
      }
    }
  }).pipe(Effect.scoped, Effect.withClock(clock))
}

describe("memory transport kernel under stress", () => {
  it.effect("idle competing consumers take turns (round-robin)", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 30; i++) yield* rotationRun(baseSeed + i)
    }))

  it.effect(
    "ledger: every accepted message is in exactly one place, then acked, dead-lettered after its retries, or expired",
    () =>
      Effect.gen(function*() {
        for (let i = 0; i < 40; i++) yield* ledgerRun(baseSeed + i)
      }),
    { timeout: 60_000 }
  )

  it.effect("order: FIFO per priority level, a requeued message first at the head of its level, expired heads dropped", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 60; i++) yield* orderRun(baseSeed + i)
    }))

  it.effect("competing consumers with equal handlers share a backlog evenly", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 40; i++) yield* fairnessRun(baseSeed + i)
    }))
})
