/**
 * Property test of the consumer kernel's ack coalescing (`src/internal/rabbitmq/acker.ts`) on a
 * fake channel that enforces RabbitMQ's rules: delivery tags are consecutive from 1; an ack or
 * nack of a tag that is not outstanding closes the channel (PRECONDITION_FAILED); a multiple ack
 * settles every outstanding tag up to it. Seeded random orders of acks, nacks, new deliveries,
 * microtask flushes and handlers that stay stuck for a long time.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as Amqp from "amqplib"
import { Effect } from "effect"
import { Acker } from "../../src/internal/rabbitmq/acker.js"
import { announce, rng, stressSeed } from "../support/prng.js"

const baseSeed = stressSeed()
announce("acker.stress", baseSeed)

const message = (tag: number): Amqp.Message => ({
  fields: { deliveryTag: tag, redelivered: false, exchange: "", routingKey: "q", consumerTag: "c" },
  properties: { headers: {} } as Amqp.MessageProperties,
  content: Buffer.alloc(0)
})

/** RabbitMQ's side of one channel. */
class FakeBroker {
  readonly outstanding = new Set<number>()
  readonly acked = new Set<number>()
  readonly nacked = new Set<number>()
  readonly errors: Array<string> = []
  frames = 0
  /** What the consumer decided so far, to catch an ack the consumer did not ask for. */
  readonly intent = new Map<number, "ack" | "nack">()

  deliver(tag: number) {
    this.outstanding.add(tag)
  }

  readonly channel = {
    ack: (m: Amqp.Message, allUpTo?: boolean) => {
      this.frames++
      const tag = m.fields.deliveryTag
      if (!this.outstanding.has(tag)) return void this.errors.push(`ack of unknown tag ${tag}`)
      const covered = allUpTo === true ? [...this.outstanding].filter((t) => t <= tag) : [tag]
      for (const t of covered) {
        if (this.intent.get(t) !== "ack") {
          this.errors.push(`tag ${t} acked (multiple up to ${tag}) without an ack from the consumer`)
        }
        this.outstanding.delete(t)
        this.acked.add(t)
      }
    },
    nack: (m: Amqp.Message, allUpTo?: boolean, requeue?: boolean) => {
      this.frames++
      const tag = m.fields.deliveryTag
      if (allUpTo === true || requeue !== true) this.errors.push(`nack of ${tag} not single with requeue`)
      if (!this.outstanding.has(tag)) return void this.errors.push(`nack of unknown tag ${tag}`)
      if (this.intent.get(tag) !== "nack") this.errors.push(`tag ${tag} nacked without a nack from the consumer`)
      this.outstanding.delete(tag)
      this.nacked.add(tag)
    }
  }
}

const microtask = Effect.promise(() => Promise.resolve())

const run = (seed: number) =>
  Effect.gen(function*() {
    const where = `seed ${seed}`
    const random = rng(seed)
    const broker = new FakeBroker()
    const acker = new Acker(broker.channel as unknown as Amqp.Channel, (operation, error) => {
      broker.errors.push(`${operation} threw: ${String(error)}`)
    })
    const prefetch = random.int(2, 64)
    const total = random.int(50, 3000)
    const unsettled: Array<number> = []
    /** Handlers that stay stuck for most of the run (a slow message holding its tag). */
    const stuck = new Set<number>()
    const stuckTag = random.chance(0.5) ? random.int(1, 20) : undefined
    let delivered = 0
    let settledSinceFlush = 0
    while (delivered < total || unsettled.length > 0) {
      const roll = random.next()
      const canDeliver = delivered < total && unsettled.length < prefetch
      // Stuck handlers finish only when nothing else can move: all delivered, or only they hold
      // the prefetch window.
      const free = unsettled.filter((t) => !stuck.has(t))
      const settleable = free.length > 0 ? free : canDeliver ? [] : unsettled
      if (roll < 0.4 && canDeliver) {
        const tag = ++delivered
        broker.deliver(tag)
        unsettled.push(tag)
        if (tag === stuckTag || random.chance(0.001)) stuck.add(tag)
      } else if (roll < 0.9 && settleable.length > 0) {
        const tag = random.pick(settleable)
        unsettled.splice(unsettled.indexOf(tag), 1)
        const nack = random.chance(0.1)
        broker.intent.set(tag, nack ? "nack" : "ack")
        if (nack) acker.nack(message(tag))
        else acker.ack(message(tag))
        settledSinceFlush++
      } else {
        yield* microtask
        settledSinceFlush = 0
      }
      // Retention: what the acker holds is bounded by what is unsettled and not yet flushed, not
      // by how many messages went by while a stuck one held the lowest tag.
      const bound = 2 * (unsettled.length + settledSinceFlush) + 1
      if (acker.retained() > bound || broker.errors.length > 0) {
        assert.deepStrictEqual(broker.errors, [], where)
        assert.fail(
          `${where}: the acker holds ${acker.retained()} entries (bound ${bound}) after ${delivered} deliveries`
        )
      }
    }
    yield* microtask
    assert.deepStrictEqual(broker.errors, [], where)
    assert.strictEqual(broker.outstanding.size, 0, `${where}: every delivery settled at the broker`)
    for (const [tag, intent] of broker.intent) {
      assert.isTrue(
        intent === "ack" ? broker.acked.has(tag) : broker.nacked.has(tag),
        `${where}: tag ${tag} ${intent}ed`
      )
    }
    assert.strictEqual(acker.retained(), 0, `${where}: nothing held once all is settled`)
    return { frames: broker.frames, total }
  })

describe("acker (consumer kernel) under stress", () => {
  it.effect("each tag settled once as the consumer decided, never covered before it settled, retention bounded", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 100; i++) yield* run(baseSeed + i)
    }))

  it.effect("in-order acks within a microtask go out as one frame", () =>
    Effect.gen(function*() {
      const broker = new FakeBroker()
      const acker = new Acker(broker.channel as unknown as Amqp.Channel, () => undefined)
      for (let tag = 1; tag <= 500; tag++) {
        broker.deliver(tag)
        broker.intent.set(tag, "ack")
        acker.ack(message(tag))
      }
      yield* microtask
      assert.strictEqual(broker.frames, 1)
      assert.strictEqual(broker.outstanding.size, 0)
    }))
})
