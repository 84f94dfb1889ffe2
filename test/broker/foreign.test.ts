/**
 * The RabbitMQ wire with a client that is not this library (rabbitmq-c's `amqp-publish` and
 * `amqp-consume`, Debian's amqp-tools; `.ci/run` installs them when missing): a foreign JSON
 * message is decoded and handled like a native one, a foreign poison message is dead-lettered,
 * and a message this library publishes is read by the foreign consumer as plain JSON.
 */
import { assert, layer } from "@effect/vitest"
import { Duration, Effect, Layer, Queue, Redacted, Schema } from "effect"
import { execFile } from "node:child_process"
import * as Broker from "../../src/Broker.js"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import { runId, uniqueName } from "../fixtures/env.js"
import { scopedVhost, urlFor } from "../support/rabbitmq.js"

const vhost = `eb-foreign-${runId}`
const prefix = `f${runId}`
const url = urlFor(vhost)

const run = (command: string, args: ReadonlyArray<string>) =>
  Effect.async<string, Error>((resume) => {
    execFile(command, [...args], { timeout: 20_000 }, (error, stdout, stderr) => {
      if (error !== null) resume(Effect.fail(new Error(`${command} ${args.join(" ")}: ${error.message} ${stderr}`)))
      else resume(Effect.succeed(stdout))
    })
  })

const live = Layer.unwrapScoped(
  Effect.map(scopedVhost(vhost), () => RabbitMQBroker.layer({ url: Redacted.make(url), prefix }))
).pipe(Layer.orDie)

const Order = Schema.Struct({ id: Schema.String, amount: Schema.Int })
const freshTopic = () => Broker.topic(`${uniqueName("foreign").replaceAll("_", "-")}.x`, Order)
const within = <A, E, R>(label: string, effect: Effect.Effect<A, E, R>) =>
  Effect.timeoutFail(effect, { duration: Duration.seconds(20), onTimeout: () => new Error(`timed out: ${label}`) })

layer(live, { excludeTestServices: true, timeout: "60 seconds" })("RabbitMQ wire with a foreign client", (it) => {
  it.scoped("amqp-publish → subscribe: decoded, typed, headers kept, a fresh id; foreign poison is dead-lettered", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = freshTopic()
      const group = uniqueName("g")
      const seen = yield* Queue.unbounded<{ readonly order: typeof Order.Type; readonly envelope: Broker.Envelope }>()
      yield* broker.subscribe(topic, (order, envelope) => Queue.offer(seen, { order, envelope }), { group })
      yield* run("amqp-publish", [
        "-u",
        url,
        "-e",
        `${prefix}.topic`,
        "-r",
        topic.name,
        "-p",
        "-C",
        "application/json",
        "-H",
        "tenant: acme",
        "-b",
        JSON.stringify({ id: "o-1", amount: 42 })
      ])
      const { envelope, order } = yield* within("the foreign message", Queue.take(seen))
      assert.deepStrictEqual(order, { id: "o-1", amount: 42 })
      assert.strictEqual(envelope.headers["tenant"], "acme")
      assert.strictEqual(envelope.attempt, 1)
      assert.match(envelope.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7/, "a UUIDv7 given on receipt")
      // Not JSON of the Schema: dead-lettered at once, never handed to the handler.
      yield* run("amqp-publish", ["-u", url, "-e", `${prefix}.topic`, "-r", topic.name, "-b", "{not json"])
      yield* run("amqp-publish", [
        "-u",
        url,
        "-e",
        `${prefix}.topic`,
        "-r",
        topic.name,
        "-b",
        JSON.stringify({ id: "o-2", amount: 7 })
      ])
      assert.deepStrictEqual((yield* within("the next message", Queue.take(seen))).order, { id: "o-2", amount: 7 })
      const dead = yield* run("amqp-consume", ["-u", url, "-q", `${prefix}.dlq.${group}`, "-c", "1", "cat"])
      assert.strictEqual(dead, "{not json", "the poison message waits in the group's dead letters, as sent")
    }))

  it.scoped("publish → amqp-consume: a foreign consumer reads the group queue as plain JSON", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = freshTopic()
      const group = uniqueName("g")
      yield* broker.declare(topic, { group })
      yield* broker.publish(topic, { id: "o-3", amount: 3 }, { headers: { tenant: "acme" } })
      const body = yield* run("amqp-consume", ["-u", url, "-q", `${prefix}.group.${group}`, "-c", "1", "cat"])
      assert.deepStrictEqual(JSON.parse(body), { id: "o-3", amount: 3 })
    }))
})
