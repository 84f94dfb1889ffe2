/**
 * The RabbitMQ wire with a client that is not this library (rabbitmq-c's `amqp-publish` and
 * `amqp-consume`, Debian's amqp-tools; `.ci/run` installs them when missing): a foreign JSON
 * message is decoded and handled like a native one, a foreign poison message is dead-lettered,
 * a message this library publishes is read by the foreign consumer as plain JSON, and Python's pika
 * (Debian's python3-pika, also installed by `.ci/run`) sends typed header values, kept through retries,
 * and reads dead letters that keep the original's properties.
 */
import { assert, layer } from "@effect/vitest"
import { Duration, Effect, Layer, Queue, Redacted, Schedule, Schema } from "effect"
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
      assert.strictEqual(envelope.publishedAt, undefined, "no AMQP timestamp: not invented")
      assert.strictEqual(envelope.attempt, 1)
      assert.match(envelope.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4/, "a random UUID given on receipt")
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

  it.scoped("pika → subscribe: typed header values stay typed through a retry; the AMQP timestamp is publishedAt", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = freshTopic()
      const group = uniqueName("g")
      const seen = yield* Queue.unbounded<Broker.Envelope>()
      yield* broker.subscribe(
        topic,
        (_order, envelope) =>
          Effect.zipRight(Queue.offer(seen, envelope), envelope.attempt === 1 ? Effect.fail("once more") : Effect.void),
        { group, retry: Schedule.spaced("10 millis") }
      )
      // Every AMQP field type pika 1.2 sends (it has no float), and one string header beside them.
      yield* run("/usr/bin/python3", [
        "-c",
        [
          "import datetime, decimal, sys, pika",
          "url, exchange, key = sys.argv[1:4]",
          "connection = pika.BlockingConnection(pika.URLParameters(url))",
          "headers = {'tenant': 'acme', 'int': 42, 'long': 2**40, 'negative': -7, 'yes': True,",
          "  'bytes': b'\\x00\\x01', 'when': datetime.datetime(2026, 12, 3, 12, 0, 0), 'price': decimal.Decimal('12.34'),",
          "  'nothing': None, 'list': [1, 'a', False], 'table': {'inner': 'x', 'n': 2}}",
          "properties = pika.BasicProperties(content_type='application/json', headers=headers, timestamp=1764763200)",
          "connection.channel().basic_publish(exchange, key, b'{\"id\":\"o-9\",\"amount\":9}', properties)",
          "connection.close()"
        ].join("\n"),
        url,
        `${prefix}.topic`,
        topic.name
      ])
      const first = yield* within("the typed message", Queue.take(seen))
      const retried = yield* within("its retry", Queue.take(seen))
      assert.strictEqual(retried.attempt, 2)
      for (const envelope of [first, retried]) {
        assert.deepStrictEqual(envelope.headers, { tenant: "acme" })
        const typed = envelope.typedHeaders
        assert.strictEqual(typed["int"], 42)
        assert.strictEqual(typed["long"], 2 ** 40)
        assert.strictEqual(typed["negative"], -7)
        assert.strictEqual(typed["yes"], true)
        assert.deepStrictEqual(Array.from(typed["bytes"] as Uint8Array), [0, 1])
        assert.deepStrictEqual(typed["when"], new Date(Date.UTC(2026, 11, 3, 12)))
        assert.deepStrictEqual(typed["price"], { _tag: "Decimal", places: 2, digits: 1234 })
        assert.strictEqual(typed["nothing"], null)
        assert.deepStrictEqual(typed["list"], [1, "a", false])
        assert.deepStrictEqual(typed["table"], new Map<string, Broker.HeaderValue>([["inner", "x"], ["n", 2]]))
        assert.deepStrictEqual(envelope.publishedAt, new Date(1_764_763_200_000))
      }
      assert.strictEqual(retried.id, first.id, "the id given on receipt travels with the retry")
    }))

  it.scoped("pika → dead letter → pika: the dead letter keeps the original's properties and typed headers", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.Broker
      const topic = freshTopic()
      const group = uniqueName("g")
      yield* broker.subscribe(topic, () => Effect.fail("never"), { group, retry: Schedule.recurs(0) })
      const script = [
        "import json, sys, time, pika",
        "url, exchange, key, dlq = sys.argv[1:5]",
        "connection = pika.BlockingConnection(pika.URLParameters(url))",
        "channel = connection.channel()",
        "properties = pika.BasicProperties(content_type='application/json', content_encoding='utf-8',",
        "  type='order.created', app_id='legacy', reply_to='replies', correlation_id='c-1', message_id='m-1',",
        "  headers={'n': 7, 'flag': True})",
        "channel.basic_publish(exchange, key, b'{\"id\":\"o-5\",\"amount\":5}', properties)",
        "deadline = time.time() + 15",
        "while time.time() < deadline:",
        "  method, got, body = channel.basic_get(dlq, auto_ack=True)",
        "  if method is not None:",
        "    print(json.dumps({'content_type': got.content_type, 'content_encoding': got.content_encoding,",
        "      'type': got.type, 'app_id': got.app_id, 'reply_to': got.reply_to,",
        "      'correlation_id': got.correlation_id, 'message_id': got.message_id, 'body': body.decode(),",
        "      'n': got.headers.get('n'), 'flag': got.headers.get('flag'), 'reason': got.headers.get('x-eb-dead-reason')}))",
        "    break",
        "  time.sleep(0.1)",
        "connection.close()"
      ].join("\n")
      const out = yield* run("/usr/bin/python3", [
        "-c",
        script,
        url,
        `${prefix}.topic`,
        topic.name,
        `${prefix}.dlq.${group}`
      ])
      const dead = JSON.parse(out) as Record<string, unknown>
      assert.deepStrictEqual({ ...dead, reason: typeof dead["reason"] }, {
        content_type: "application/json",
        content_encoding: "utf-8",
        type: "order.created",
        app_id: "legacy",
        reply_to: "replies",
        correlation_id: "c-1",
        message_id: "m-1",
        body: JSON.stringify({ id: "o-5", amount: 5 }),
        n: 7,
        flag: true,
        reason: "string"
      })
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
