import { assert, describe, it, layer } from "@effect/vitest"
import type * as Amqp from "amqplib"
import {
  Context,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  Layer,
  Logger,
  Queue,
  Redacted,
  Schedule,
  Schema,
  Scope
} from "effect"
import { Socket } from "node:net"
import * as Broker from "../../src/Broker.js"
import { coalesceWrites } from "../../src/internal/rabbitmq/coalesce.js"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import { rabbitmqUrl, runId, uniqueName } from "../fixtures/env.js"
import { probeLayer, rabbitmqctl, rawConnection, scopedVhost, urlFor, withChannel } from "../support/rabbitmq.js"
import { tcpProxy } from "../support/tcpProxy.js"
import { brokerContract, ContractProbe } from "./contract.js"

const vhost = `eb-test-${runId}`
const prefix = `t${runId}`
const maxMessageBytes = 256 * 1024

/** The broker and its probe in a vhost of this file's own, deleted (with every queue) afterwards. */
const live = Layer.unwrapScoped(
  Effect.map(scopedVhost(vhost), (name) => {
    const url = urlFor(name)
    return Layer.merge(
      RabbitMQBroker.layer({ url: Redacted.make(url), prefix, maxMessageBytes }),
      probeLayer(url, prefix, maxMessageBytes)
    )
  })
).pipe(Layer.orDie)

brokerContract("RabbitMQ", live, { real: true })

const Ping = Schema.Struct({ n: Schema.Number })
const freshTopic = (base: string) => Broker.topic(`${uniqueName(base).replaceAll("_", "-")}.x`, Ping)
const liveUrl = () => urlFor(vhost)

const within = <A, E, R>(label: string, effect: Effect.Effect<A, E, R>, seconds = 20) =>
  Effect.timeoutFail(effect, { duration: Duration.seconds(seconds), onTimeout: () => new Error(`timed out: ${label}`) })

/** Whether a queue or exchange exists (a 404 closes the channel, so each check gets its own). */
const exists = (model: Amqp.ChannelModel, kind: "queue" | "exchange", name: string) =>
  Effect.either(
    withChannel(model, (channel) => kind === "queue" ? channel.checkQueue(name) : channel.checkExchange(name))
  )
    .pipe(Effect.map(Either.isRight))

/** A handler that takes 20 ms and records how many ran at once (`peak`) and how many ended. */
const slowHandler = () => {
  const state = { running: 0, peak: 0, done: 0 }
  const handle = <A>(_: A) =>
    Effect.acquireUseRelease(
      Effect.sync(() => {
        state.running++
        state.peak = Math.max(state.peak, state.running)
      }),
      () => Effect.sleep("20 millis"),
      () =>
        Effect.sync(() => {
          state.running--
          state.done++
        })
    )
  return { state, handle }
}

/** RabbitMQ's own count of a group queue's ready and unacknowledged messages. */
const queueCounts = (group: string) =>
  Effect.gen(function*() {
    const listed = yield* rabbitmqctl(
      "list_queues",
      "-q",
      "-p",
      vhost,
      "name",
      "messages_ready",
      "messages_unacknowledged"
    )
    const row = listed.split("\n").map((line) => line.trim().split(/\s+/)).find(([name]) =>
      name === `${prefix}.group.${group}`
    )
    assert.isDefined(row, listed)
    const [, ready, unacked] = (row ?? []).map(Number)
    return { ready: ready ?? Number.NaN, unacked: unacked ?? Number.NaN }
  })

/** Polls `done` every 10 ms until it holds, within the deadline. */
const until = (label: string, done: () => boolean) =>
  within(
    label,
    Effect.gen(function*() {
      while (!done()) yield* Effect.sleep("10 millis")
    })
  )

type Numbered = Broker.Topic<{ readonly n: number }, { readonly n: number }>

/**
 * A slow consumer (`slowHandler`) of `group` that records into `handled`; once it has handled 10
 * messages, `whileRunning` runs and the consumer is stopped. Returns that result and its peak.
 */
const consumeThenStop = <A, E, R>(
  topic: Numbered,
  group: string,
  options: { readonly concurrency: number; readonly prefetch?: number },
  handled: Array<number>,
  whileRunning: Effect.Effect<A, E, R>
) =>
  Effect.scoped(Effect.gen(function*() {
    const broker = yield* Broker.Broker
    const slow = slowHandler()
    yield* broker.subscribe(topic, (message) =>
      Effect.zipRight(slow.handle(message), Effect.sync(() => void handled.push(message.n))), {
      group,
      ...options
    })
    yield* until("consumption under way", () =>
      handled.length >= 10)
    return { result: yield* whileRunning, peak: slow.state.peak }
  }))

layer(live, { excludeTestServices: true, timeout: "60 seconds" })("RabbitMQBroker", (it) => {
  it.scoped("declares the documented topology: exchanges, group, dead-letter, retry and delay queues", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = freshTopic("names")
      const group = uniqueName("g")
      const handled = yield* Queue.unbounded<number>()
      yield* broker.subscribe(
        topic,
        (message, envelope) =>
          envelope.attempt === 1 ? Effect.fail("first attempt fails") : Queue.offer(handled, message.n),
        { group, retry: Schedule.spaced("300 millis") }
      )
      yield* broker.publish(topic, { n: 1 })
      assert.strictEqual(yield* within("the retried message", Queue.take(handled)), 1)
      yield* broker.publish(topic, { n: 2 }, { delay: "250 millis" })
      assert.strictEqual(yield* within("the delayed message", Queue.take(handled)), 2)

      const model = yield* rawConnection(liveUrl())
      assert.isTrue(yield* exists(model, "exchange", `${prefix}.topic`))
      assert.isTrue(yield* exists(model, "exchange", `${prefix}.delay`))
      assert.isTrue(yield* exists(model, "queue", `${prefix}.group.${group}`))
      assert.isTrue(yield* exists(model, "queue", `${prefix}.dlq.${group}`))
      assert.isTrue(yield* exists(model, "queue", `${prefix}.retry.300.${group}`))
      assert.isTrue(yield* exists(model, "queue", `${prefix}.delay.250`))
      assert.isFalse(yield* exists(model, "queue", `${prefix}.group.nobody-${runId}`))
    }))

  it.scoped("a foreign message without a message id gets a unique id, kept through its retry, in every session", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = freshTopic("noid")
      const group = uniqueName("g")
      const seen = yield* Queue.unbounded<{ readonly id: string; readonly n: number; readonly attempt: number }>()
      const model = yield* rawConnection(liveUrl())
      const publishForeign = (n: number) =>
        withChannel(model, async (channel) => {
          channel.publish(`${prefix}.topic`, topic.name, Buffer.from(JSON.stringify({ n })), {
            contentType: "application/json"
          })
        })
      const runs: Array<{ readonly id: string; readonly n: number; readonly attempt: number }> = []
      // One subscription session per message: delivery tags restart per channel, ids must not.
      for (const n of [1, 2]) {
        yield* Effect.scoped(Effect.gen(function*() {
          yield* broker.subscribe(
            topic,
            (message, envelope) =>
              Effect.zipRight(
                Queue.offer(seen, { id: envelope.id, n: message.n, attempt: envelope.attempt }),
                message.n === 1 && envelope.attempt === 1 ? Effect.fail("retry me") : Effect.void
              ),
            { group, retry: Schedule.spaced("50 millis") }
          )
          yield* publishForeign(n)
          runs.push(yield* within("the foreign message", Queue.take(seen)))
          if (n === 1) runs.push(yield* within("its retry", Queue.take(seen)))
        }))
      }
      const [first, retry, second] = runs
      assert.deepStrictEqual(runs.map((run) => [run.n, run.attempt]), [[1, 1], [1, 2], [2, 1]])
      assert.strictEqual(retry?.id, first?.id, "the retry keeps the id")
      assert.notStrictEqual(second?.id, first?.id, "another message, another id")
      assert.notMatch(first?.id ?? "", /^no-id:/)
    }))

  it.scoped("retry and dead-letter copies keep a foreign message's properties (content type, encoding, type, app id, reply-to)", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = freshTopic("props")
      const group = uniqueName("g")
      const attempts = yield* Queue.unbounded<number>()
      yield* broker.subscribe(
        topic,
        (_, envelope) => Effect.zipRight(Queue.offer(attempts, envelope.attempt), Effect.fail("always")),
        { group, retry: Schedule.spaced("50 millis").pipe(Schedule.intersect(Schedule.recurs(1))) }
      )
      const model = yield* rawConnection(liveUrl())
      const properties = {
        contentType: "application/vnd.acme.order+json",
        contentEncoding: "utf-8",
        type: "order.placed",
        appId: "acme-shop",
        replyTo: "acme.replies",
        messageId: uniqueName("foreign")
      }
      yield* withChannel(model, async (channel) => {
        channel.publish(`${prefix}.topic`, topic.name, Buffer.from(JSON.stringify({ n: 7 })), properties)
      })
      assert.strictEqual(yield* within("first attempt", Queue.take(attempts)), 1)
      assert.strictEqual(yield* within("the retry copy", Queue.take(attempts)), 2)
      const dead = yield* within(
        "the dead letter",
        withChannel(
          model,
          async (channel): Promise<Amqp.Message | undefined> =>
            (await channel.get(`${prefix}.dlq.${group}`, { noAck: true })) || undefined
        ).pipe(
          Effect.flatMap((message) => (message === undefined ? Effect.fail("not there yet") : Effect.succeed(message))),
          Effect.retry(Schedule.spaced("20 millis"))
        )
      )
      assert.isDefined(dead)
      const { appId, contentEncoding, contentType, messageId, replyTo, type } = dead?.properties ?? {}
      assert.deepStrictEqual({ appId, contentEncoding, contentType, messageId, replyTo, type }, properties)
    }))

  it.scoped("B3: a queue redeclared with other arguments fails that subscribe typed; other work goes on", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const working = freshTopic("b3-ok")
      const handled = yield* Queue.unbounded<number>()
      yield* broker.subscribe(working, (m) => Queue.offer(handled, m.n), { group: uniqueName("g") })

      const clash = uniqueName("clash")
      const model = yield* rawConnection(liveUrl())
      yield* withChannel(
        model,
        (channel) =>
          channel.assertQueue(`${prefix}.group.${clash}`, { durable: true, arguments: { "x-max-priority": 3 } })
      )

      const failed = yield* Effect.either(
        Effect.scoped(broker.subscribe(freshTopic("b3-bad"), () => Effect.void, { group: clash }))
      )
      assert.isTrue(Either.isLeft(failed))
      if (Either.isRight(failed)) return
      assert.strictEqual(failed.left._tag, "DeclareConflict")
      assert.include(failed.left.message, "PRECONDITION_FAILED")

      yield* broker.publish(working, { n: 7 })
      assert.strictEqual(yield* within("the message on the healthy subscription", Queue.take(handled)), 7)
      const health = yield* broker.health
      assert.strictEqual(health.status, "up")
      assert.isTrue(health.consumers >= 1)
    }))

  it.scoped("a consumer whose queue was deleted under it re-declares the queue and resumes", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = freshTopic("deleted")
      const group = uniqueName("g")
      const handled = yield* Queue.unbounded<number>()
      yield* broker.subscribe(topic, (m) => Queue.offer(handled, m.n), { group })
      const model = yield* rawConnection(liveUrl())
      yield* withChannel(model, (channel) => channel.deleteQueue(`${prefix}.group.${group}`))
      // Unroutable until the consumer re-declared its queue: publish until one is accepted.
      yield* within(
        "a publish accepted after the re-declaration",
        broker.publish(topic, { n: 1 }).pipe(Effect.retry(Schedule.spaced("50 millis")))
      )
      assert.strictEqual(yield* within("the message after resuming", Queue.take(handled)), 1)
    }))

  it.scoped("a broker nack fails exactly the rejected publishes (x-max-length, reject-publish)", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = freshTopic("nack")
      const model = yield* rawConnection(liveUrl())
      const queue = `${prefix}.raw.${uniqueName("full")}`
      yield* withChannel(model, async (channel) => {
        await channel.assertQueue(queue, { arguments: { "x-max-length": 5, "x-overflow": "reject-publish" } })
        await channel.bindQueue(queue, `${prefix}.topic`, topic.name)
      })
      const outcomes = yield* broker.publishAll(Array.from({ length: 8 }, (_, n) => Broker.entry(topic, { n })), {
        window: 1
      })
      const reasons = outcomes.map(Either.match({
        onLeft: (error) => (error._tag === "PublishRejected" ? `${error.reason}:${error.ambiguous}` : error._tag),
        onRight: () => "ok"
      }))
      assert.deepStrictEqual(reasons, ["ok", "ok", "ok", "ok", "ok", "nacked:false", "nacked:false", "nacked:false"])
    }))

  it.scoped("returns are matched to their own publish, ids repeating: only the unroutable entries of a batch fail", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const routable = freshTopic("routable")
      const unroutable = freshTopic("unroutable")
      yield* broker.subscribe(routable, () => Effect.void, { group: uniqueName("g") })
      // Entries 2k and 2k+1 share a caller-given id: some pairs mix a routable and an unroutable one.
      const entries = Array.from(
        { length: 400 },
        (_, n) => Broker.entry(n % 3 === 0 ? unroutable : routable, { n }, { messageId: `dup-${Math.floor(n / 2)}` })
      )
      const outcomes = yield* broker.publishAll(entries, { window: 64 })
      outcomes.forEach((outcome, n) => {
        if (n % 3 === 0) {
          assert.isTrue(
            Either.isLeft(outcome) && outcome.left._tag === "PublishRejected" && outcome.left.reason === "unroutable",
            `#${n}`
          )
        } else {
          assert.isTrue(Either.isRight(outcome), `#${n}: ${String(Either.getLeft(outcome))}`)
        }
      })
    }))

  it.scoped("persistent: false travels in memory (delivery mode 1), keeps it through a retry, and is dead-lettered on disk", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const model = yield* rawConnection(liveUrl())
      const topic = freshTopic("transient")
      /** The first message of `queue`, taken off it, polled within the test's deadline. */
      const firstOf = (queue: string) =>
        within(
          `a message in ${queue}`,
          Effect.gen(function*() {
            while (true) {
              const got = yield* withChannel(model, (channel) => channel.get(queue, { noAck: true }))
              if (got !== false) return got
              yield* Effect.sleep("50 millis")
            }
          })
        )
      const plain = uniqueName("g")
      yield* broker.declare(topic, { group: plain })
      // A long retry delay keeps the retry's copy in its retry queue, where it can be looked at.
      const retrying = uniqueName("g")
      yield* broker.subscribe(topic, () => Effect.fail("always"), {
        group: retrying,
        retry: Schedule.spaced("1 minute")
      })
      const dying = uniqueName("g")
      yield* broker.subscribe(topic, () => Effect.fail("always"), { group: dying, retry: Schedule.recurs(0) })

      yield* broker.publish(topic, { n: 1 }, { persistent: false })
      yield* broker.publish(topic, { n: 2 })
      /** [n, delivery mode] of the next two messages of `queue`, by n. */
      const modesIn = (queue: string) =>
        Effect.map(
          Effect.all([firstOf(queue), firstOf(queue)]),
          (messages) =>
            messages.map((
              message
            ) => [Number(JSON.parse(message.content.toString()).n), message.properties.deliveryMode])
              .sort(([a], [b]) => Number(a) - Number(b))
        )
      assert.deepStrictEqual(yield* modesIn(`${prefix}.group.${plain}`), [[1, 1], [2, 2]])
      assert.deepStrictEqual(
        yield* modesIn(`${prefix}.retry.60000.${retrying}`),
        [[1, 1], [2, 2]],
        "a retry keeps the mode"
      )
      assert.deepStrictEqual(
        yield* modesIn(`${prefix}.dlq.${dying}`),
        [[1, 2], [2, 2]],
        "a dead letter is kept on disk"
      )
    }))

  it.scoped("B10: a slow consumer on a large backlog holds at most its prefetch; the rest stays in RabbitMQ", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const Blob = Schema.Struct({ n: Schema.Number, data: Schema.String })
      const topic = Broker.topic(`${uniqueName("b10").replaceAll("_", "-")}.x`, Blob)
      const group = uniqueName("g")
      yield* broker.declare(topic, { group })
      const total = 4000
      const data = "x".repeat(4096)
      const outcomes = yield* broker.publishAll(
        Array.from({ length: total }, (_, n) => Broker.entry(topic, { n, data }))
      )
      assert.isTrue(outcomes.every(Either.isRight))
      const concurrency = 10
      const slow = slowHandler()
      yield* broker.subscribe(topic, slow.handle, { group, concurrency })
      yield* until("consumption under way", () => slow.state.done >= 50)
      // RabbitMQ's own count of what it handed out and has not had acked: the client's buffer.
      const { ready, unacked } = yield* queueCounts(group)
      assert.isAtMost(unacked, concurrency, "unacked deliveries bounded by the prefetch")
      assert.isAtLeast(ready, total / 2, "the backlog waits in RabbitMQ")
      assert.isAtMost(slow.state.peak, concurrency)
    }))

  it.scoped("a prefetch above the concurrency: RabbitMQ hands out up to the prefetch, the concurrency bounds what runs, and stopping loses nothing", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = Broker.topic(`${uniqueName("pf").replaceAll("_", "-")}.x`, Schema.Struct({ n: Schema.Number }))
      const group = uniqueName("g")
      yield* broker.declare(topic, { group })
      const total = 300
      assert.isTrue(
        (yield* broker.publishAll(Array.from({ length: total }, (_, n) => Broker.entry(topic, { n })))).every(
          Either.isRight
        )
      )
      const handled: Array<number> = []
      const { peak, result: unacked } = yield* consumeThenStop(
        topic,
        group,
        { concurrency: 2, prefetch: 20 },
        handled,
        Effect.map(queueCounts(group), (counts) => counts.unacked)
      )
      assert.isAtMost(peak, 2, "at most `concurrency` handlers at once")
      assert.isAbove(unacked, 2, "RabbitMQ handed out more than the running handlers")
      assert.isAtMost(unacked, 20, "and no more than the prefetch")
      // The deliveries waiting for a slot went back to the queue: a new consumer gets the rest.
      yield* broker.subscribe(topic, (message) => Effect.sync(() => void handled.push(message.n)), {
        group,
        concurrency: 50
      })
      yield* until("every message", () => new Set(handled).size >= total)
      assert.strictEqual(new Set(handled).size, total, "lost none")
      assert.strictEqual(handled.length - total, 0, "handled none twice")
    }))

  it.scoped("packed: 300 messages travel as 3; a consumer stopped mid-pack requeues the pack whole and nothing is lost", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = freshTopic("packed")
      const group = uniqueName("g")
      yield* broker.declare(topic, { group })
      const total = 300
      const outcomes = yield* broker.publishAll(Array.from({ length: total }, (_, n) => Broker.entry(topic, { n })), {
        pack: 100
      })
      assert.isTrue(outcomes.every(Either.isRight))
      assert.deepStrictEqual(yield* queueCounts(group), { ready: 3, unacked: 0 }, "RabbitMQ holds 3 messages")
      const handled: Array<number> = []
      yield* consumeThenStop(topic, group, { concurrency: 2 }, handled, Effect.void)
      const first = handled.length
      assert.isBelow(first, 100, "stopped mid-pack")
      assert.strictEqual((yield* queueCounts(group)).ready, 3, "the unfinished pack went back whole")
      yield* broker.subscribe(topic, (message) => Effect.sync(() => void handled.push(message.n)), {
        group,
        concurrency: 50
      })
      yield* until("every message", () => handled.length >= total + first)
      assert.strictEqual(new Set(handled).size, total, "lost none")
      assert.strictEqual(handled.length - total, first, "only the stopped pack's finished members ran twice")
    }))

  it.scoped("a malformed packed message is dead-lettered as undecodable; the next message is handled", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = freshTopic("packed-bad")
      const group = uniqueName("g")
      const handled = yield* Queue.unbounded<number>()
      yield* broker.subscribe(topic, (message) => Queue.offer(handled, message.n), { group })
      const model = yield* rawConnection(liveUrl())
      yield* withChannel(model, async (channel) => {
        channel.publish(`${prefix}.topic`, topic.name, Buffer.from([0, 0, 0, 9, 1, 2]), {
          contentType: "application/vnd.effect-background.packed",
          messageId: "bad-pack"
        })
      })
      yield* broker.publish(topic, { n: 7 })
      assert.strictEqual(yield* within("the next message", Queue.take(handled)), 7)
      const probe = yield* ContractProbe
      const dead = yield* within(
        "the dead letter",
        Effect.repeat(probe.deadLetters(group), { until: (all) => all.length > 0 })
      )
      assert.strictEqual(dead[0]?.messageId, "bad-pack")
      assert.include(dead[0]?.reason ?? "", "cannot decode message bad-pack")
    }))

  it.scoped("a large publishAll is on the wire before its last entry is encoded, and every entry arrives", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      let encoded = 0
      const Counted = Schema.transform(Schema.Number, Schema.Number, {
        strict: true,
        decode: (n) => n,
        encode: (n) => {
          encoded++
          return n
        }
      })
      const topic = Broker.topic(`${uniqueName("stream").replaceAll("_", "-")}.x`, Schema.Struct({ n: Counted }))
      const group = uniqueName("g")
      yield* broker.declare(topic, { group })
      const total = 10_000
      const received: Array<number> = []
      let encodedAtFirstDelivery: number | undefined
      yield* broker.subscribe(topic, (message) =>
        Effect.sync(() => {
          encodedAtFirstDelivery ??= encoded
          received.push(message.n)
        }), { group, concurrency: 50 })
      const outcomes = yield* broker.publishAll(Array.from({ length: total }, (_, n) => Broker.entry(topic, { n })))
      assert.deepStrictEqual(outcomes.filter(Either.isLeft), [])
      yield* until("every message received", () => received.length === total)
      assert.deepStrictEqual(received.sort((a, b) => a - b), Array.from({ length: total }, (_, n) => n))
      // Encoding the whole batch first would deliver the first only after the last was encoded.
      assert.isBelow(
        encodedAtFirstDelivery ?? total,
        total / 2,
        `encoded before the first delivery: ${encodedAtFirstDelivery}`
      )
    }))

  it.scoped("a burst of publishes leaves in a few socket writes, and every one arrives in order", () =>
    Effect.gen(function*() {
      const model = yield* rawConnection(liveUrl())
      assert.isTrue(coalesceWrites(model), "the installed amqplib has the muxer shape coalesceWrites expects")
      const socket: unknown = Reflect.get(Reflect.get(model, "connection") as object, "stream")
      assert.instanceOf(socket, Socket)
      let writes = 0
      for (const method of ["_write", "_writev"] as const) {
        const original = socket[method]
        if (original === undefined) continue
        socket[method] = function(this: Socket, ...args: Array<never>) {
          writes++
          return Reflect.apply(original, this, args)
        }
      }
      const queue = uniqueName("burst")
      const count = 500
      const received = yield* Effect.tryPromise(async () => {
        const channel = await model.createConfirmChannel()
        await channel.assertQueue(queue, { exclusive: true })
        writes = 0
        for (let n = 0; n < count; n++) channel.sendToQueue(queue, Buffer.from(String(n)))
        await channel.waitForConfirms()
        const burstWrites = writes
        const seen: Array<number> = []
        for (
          let message = await channel.get(queue, { noAck: true });
          message !== false;
          message = await channel.get(queue, { noAck: true })
        ) {
          seen.push(Number(message.content.toString()))
        }
        await channel.close()
        return { burstWrites, seen }
      })
      assert.deepStrictEqual(received.seen, Array.from({ length: count }, (_, n) => n))
      assert.isBelow(received.burstWrites, count / 10, `${received.burstWrites} socket writes for ${count} publishes`)
    }))

  it.effect("health says up and where, never the password", () =>
    Effect.gen(function*() {
      const health = yield* Broker.health
      assert.strictEqual(health.status, "up")
      assert.strictEqual(health.connection, "open")
      assert.include(health.detail, "127.0.0.1:5672")
      assert.notInclude(health.detail, "guest:guest")
    }))
})

/** Builds the layer in a throwaway scope and returns its failure, if any. */
const buildError = (options: RabbitMQBroker.Options) =>
  Effect.flip(Effect.scoped(Layer.build(RabbitMQBroker.layer(options))))

describe("RabbitMQBroker connection failures (B8, B11)", () => {
  const secret = "s3cr3t-Pa55:w@rd/x"
  const encoded = encodeURIComponent(secret)
  const leaks = (text: string) => text.includes(secret) || text.includes(encoded) || text.includes("s3cr3t")

  it.live("a wrong password fails auth once, fast, with no password in the error", () =>
    Effect.gen(function*() {
      const proxy = yield* tcpProxy("127.0.0.1", 5672)
      const started = Date.now()
      const error = yield* buildError({ url: Redacted.make(`amqp://guest:${encoded}@127.0.0.1:${proxy.port}/`) })
      assert.strictEqual(error.reason, "auth")
      assert.isBelow(Date.now() - started, 5000)
      assert.strictEqual(proxy.accepted(), 1, "no retry on an auth failure")
      if (error._tag !== "BrokerUnavailable") return assert.fail(`expected BrokerUnavailable, got ${error._tag}`)
      for (
        const text of [
          error.message,
          String(error),
          JSON.stringify(error),
          JSON.stringify(Schema.encodeSync(Broker.BrokerUnavailable)(error))
        ]
      ) {
        assert.isFalse(leaks(text), text)
      }
    }).pipe(Effect.scoped))

  it.live("a closed port fails connect at once", () =>
    Effect.gen(function*() {
      const port = yield* Effect.scoped(Effect.map(tcpProxy("127.0.0.1", 5672), (proxy) => proxy.port))
      const started = Date.now()
      const error = yield* buildError({ url: Redacted.make(`amqp://guest:${encoded}@127.0.0.1:${port}/`) })
      assert.strictEqual(error.reason, "connect")
      assert.isBelow(Date.now() - started, 5000)
      assert.isFalse(leaks(error.message))
    }))

  it.live("malformed URLs fail InvalidOptions (field url) without echoing the password", () =>
    Effect.gen(function*() {
      for (
        const url of [
          `not a url ${secret}`,
          `http://guest:${encoded}@127.0.0.1/`,
          `amqp://guest:${encoded}@:5672`,
          `amqp://u:${encoded}@host:99999/`
        ]
      ) {
        const error = yield* buildError({ url: Redacted.make(url) })
        assert.strictEqual(error._tag, "InvalidOptions", url)
        assert.strictEqual(error._tag === "InvalidOptions" ? error.field : undefined, "url")
        for (const text of [error.message, String(error), JSON.stringify(error)]) assert.isFalse(leaks(text), text)
      }
    }))

  it.live("an unknown vhost fails auth with a readable reason", () =>
    Effect.gen(function*() {
      const error = yield* buildError({ url: Redacted.make(urlFor(`missing-${runId}`)) })
      assert.strictEqual(error.reason, "auth")
      assert.include(error.message, `missing-${runId}`)
    }))

  it.live("a host that never answers fails timeout within connectTimeout (no hang)", () =>
    Effect.gen(function*() {
      const proxy = yield* tcpProxy("127.0.0.1", 5672)
      yield* proxy.setMode("blackhole")
      const started = Date.now()
      const error = yield* buildError({ url: Redacted.make(proxy.url(rabbitmqUrl)), connectTimeout: "500 millis" })
      assert.strictEqual(error.reason, "timeout")
      assert.isBelow(Date.now() - started, 3000)
    }).pipe(Effect.scoped))

  it.live("B11: a real password appears in no log line, health output or error, across a reconnect", () =>
    Effect.gen(function*() {
      const user = `eb-user-${runId}`
      const b11 = `b11${runId}`
      const group = uniqueName("g")
      yield* Effect.acquireRelease(rabbitmqctl("add_user", user, secret), () =>
        Effect.gen(function*() {
          yield* Effect.ignore(rabbitmqctl("delete_user", user))
          const model = yield* rawConnection(rabbitmqUrl)
          yield* Effect.ignore(withChannel(model, async (channel) => {
            await channel.deleteQueue(`${b11}.group.${group}`)
            await channel.deleteQueue(`${b11}.dlq.${group}`)
            await channel.deleteExchange(`${b11}.topic`)
            await channel.deleteExchange(`${b11}.delay`)
          }))
        }).pipe(Effect.scoped, Effect.orDie))
      yield* rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
      const lines: Array<string> = []
      const capture = Logger.replace(
        Logger.defaultLogger,
        Logger.make(({ annotations, message }) =>
          lines.push(JSON.stringify({ message, annotations: [...annotations] }))
        )
      )
      // Through a proxy, so the test can cut the connection and make the layer log the reconnect.
      const proxy = yield* tcpProxy("127.0.0.1", 5672)
      const url = `amqp://${user}:${encoded}@127.0.0.1:${proxy.port}/`
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(RabbitMQBroker.layer({ url: Redacted.make(url), prefix: b11 }), scope)
        .pipe(
          Effect.provide(capture)
        )
      const broker = Context.get(context, Broker.Broker)
      const topic = freshTopic("b11")
      const seen = yield* Deferred.make<void>()
      yield* broker.subscribe(topic, () => Deferred.succeed(seen, undefined), { group }).pipe(
        Scope.extend(scope),
        Effect.provide(capture)
      )
      yield* broker.publish(topic, { n: 1 }).pipe(Effect.provide(capture))
      yield* within("the message", Deferred.await(seen))
      const health = yield* broker.health
      yield* Effect.either(broker.publish(freshTopic("b11-nobody"), { n: 2 }))
      yield* proxy.setMode("reset")
      yield* proxy.setMode("pass")
      yield* within(
        "a reconnect",
        Effect.repeat(broker.health, {
          schedule: Schedule.spaced("50 millis"),
          until: (h) => h.status === "up" && h.detail.includes("#2")
        })
      )
      const afterReconnect = yield* broker.health
      yield* Scope.close(scope, Exit.void).pipe(Effect.provide(capture))
      const wrongVhost = yield* buildError({
        url: Redacted.make(`amqp://${user}:${encoded}@127.0.0.1:5672/nope-${runId}`)
      })

      assert.isTrue(lines.some((line) => line.includes("reconnected")), "the reconnect was logged")
      for (
        const text of [
          ...lines,
          JSON.stringify(health),
          JSON.stringify(afterReconnect),
          wrongVhost.message,
          JSON.stringify(wrongVhost)
        ]
      ) {
        assert.isFalse(leaks(text), text)
      }
    }).pipe(Effect.scoped))
})
