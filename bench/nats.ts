/**
 * `npm run bench -- nats`: NatsBroker against the raw `@nats-io/jetstream` client, in the same
 * run, on the local nats-server (file storage, interest retention, ~200 B JSON).
 *
 * - publish: raw = `js.publish` with a `Nats-Msg-Id` (what ours sends for dedupe), a window of
 *   1,000 PubAcks in flight; ours = `publishAll` with the same window (Schema encode, headers).
 * - consume: a backlog of N messages in a group's durable consumer; raw = the client's
 *   `consume()` (100 messages per pull) acking each after `JSON.parse`; ours = `subscribe` with
 *   concurrency 100 (decode, envelope, ack). Both read a backlog that ours published.
 * - latency: publish → handler at 2,000 msg/s for 4 s, p50/p99.
 * - tasks: `TaskQueue.enqueueAll` + a worker (concurrency 50) on NatsBroker and on RabbitMQBroker.
 *
 * Ratios are medians of per-round ratios (both sides of a round meet the same machine load).
 */
import * as Amqp from "amqplib"
import { Context, Deferred, Effect, Either, Layer, Redacted, Schema } from "effect"
import * as Broker from "../src/Broker.js"
import { durableOf, names } from "../src/internal/nats/subjects.js"
import * as NatsBroker from "../src/layers/NatsBroker.js"
import * as RabbitMQBroker from "../src/layers/RabbitMQBroker.js"
import * as ResultStore from "../src/ResultStore.js"
import * as Task from "../src/Task.js"
import * as TaskQueue from "../src/TaskQueue.js"
import { rabbitmqUrl, runId } from "../test/fixtures/env.js"
import { natsUrl, rawJetStream } from "./support/nats.js"
import { log, median, Order, order, percentile, print, publishLatency, ratio } from "./support/report.js"

const N = Number(process.env["BENCH_NATS_N"] ?? 20_000)
const ROUNDS = Number(process.env["BENCH_NATS_ROUNDS"] ?? 5)
const TASKS_N = Number(process.env["BENCH_NATS_TASKS_N"] ?? 20_000)
const WINDOW = 1_000
const PREFETCH = 100
const RATE = 2_000
const LATENCY_SECONDS = 4

const stream = `BENCH${runId}`
const encoder = new TextEncoder()

const main = Effect.gen(function*() {
  const { js, jsm } = yield* rawJetStream
  yield* Effect.addFinalizer(() =>
    Effect.promise(async () => {
      const n = names(stream)
      for (const name of [n.stream, n.deadLetterStream, n.delayStream]) {
        await jsm.streams.delete(name).catch(() => false)
      }
    })
  )
  const context = yield* Layer.build(NatsBroker.layer({ url: Redacted.make(natsUrl), stream }))
  const broker = Context.get(context, Broker.Broker)

  const rawPublish = (subject: string, count: number) =>
    Effect.promise(async () => {
      const started = performance.now()
      let next = 0
      let inFlight = 0
      await new Promise<void>((resolve, reject) => {
        const pump = () => {
          while (inFlight < WINDOW && next < count) {
            const n = next++
            inFlight++
            js.publish(subject, encoder.encode(JSON.stringify(order(n))), { msgID: crypto.randomUUID() }).then(() => {
              inFlight--
              if (next >= count && inFlight === 0) resolve()
              else pump()
            }, reject)
          }
        }
        pump()
      })
      return count / ((performance.now() - started) / 1000)
    })

  const rawConsume = (group: string, count: number) =>
    Effect.promise(async () => {
      const consumer = await js.consumers.get(stream, durableOf(group))
      const messages = await consumer.consume({ max_messages: PREFETCH })
      const started = performance.now()
      let received = 0
      for await (const msg of messages) {
        JSON.parse(new TextDecoder().decode(msg.data))
        msg.ack()
        if (++received === count) break
      }
      const rate = count / ((performance.now() - started) / 1000)
      await messages.close()
      return rate
    })

  const oursPublish = (topic: Broker.Topic<Order, Order>, count: number) =>
    Effect.gen(function*() {
      const started = performance.now()
      const outcomes = yield* broker.publishAll(
        Array.from({ length: count }, (_, n) => Broker.entry(topic, order(n))),
        { window: WINDOW }
      )
      const failed = outcomes.filter(Either.isLeft).length
      if (failed > 0) return yield* Effect.dieMessage(`${failed} publishes failed`)
      return count / ((performance.now() - started) / 1000)
    })

  const oursConsume = (topic: Broker.Topic<Order, Order>, group: string, count: number) =>
    Effect.gen(function*() {
      const done = yield* Deferred.make<void>()
      let received = 0
      const started = performance.now()
      yield* broker.subscribe(topic, () =>
        Effect.sync(() => {
          if (++received === count) Deferred.unsafeDone(done, Effect.void)
        }), { group, concurrency: PREFETCH })
      yield* Deferred.await(done)
      return count / ((performance.now() - started) / 1000)
    }).pipe(Effect.scoped)

  const publish = { raw: [] as Array<number>, ours: [] as Array<number> }
  const consume = { raw: [] as Array<number>, ours: [] as Array<number> }
  for (let round = 0; round < ROUNDS; round++) {
    const topic = Broker.topic(`bench.nats.r${round}`, Order)
    const group = `bench-${round}`
    yield* broker.declare(topic, { group })
    const rawRound = Effect.gen(function*() {
      publish.raw.push(yield* rawPublish(topic.name, N))
      // Drain what raw published, then consume a backlog ours published.
      yield* rawConsume(group, N)
      yield* oursPublish(topic, N)
      consume.raw.push(yield* rawConsume(group, N))
    })
    const oursRound = Effect.gen(function*() {
      publish.ours.push(yield* oursPublish(topic, N))
      consume.ours.push(yield* oursConsume(topic, group, N))
    })
    if (round % 2 === 0) yield* Effect.zipRight(rawRound, oursRound)
    else yield* Effect.zipRight(oursRound, rawRound)
    log(
      `round ${round + 1}: publish raw ${publish.raw[round]?.toFixed(0)}/s ours ${
        publish.ours[round]?.toFixed(0)
      }/s; consume raw ${consume.raw[round]?.toFixed(0)}/s ours ${consume.ours[round]?.toFixed(0)}/s`
    )
  }
  print("nats.publish.raw_msgs_per_s", Math.round(median(publish.raw)), "msg/s")
  print("nats.publish.ours_msgs_per_s", Math.round(median(publish.ours)), "msg/s")
  print("nats.publish.ratio_vs_raw", ratio(publish.ours, publish.raw), "x")
  print("nats.consume.raw_msgs_per_s", Math.round(median(consume.raw)), "msg/s")
  print("nats.consume.ours_msgs_per_s", Math.round(median(consume.ours)), "msg/s")
  print("nats.consume.ratio_vs_raw", ratio(consume.ours, consume.raw), "x")

  // Latency: publish → handler at a fixed rate.
  const latencyTopic = Broker.topic("bench.nats.latency", Order)
  const latencies = yield* publishLatency(broker, latencyTopic, {
    group: "latency",
    total: RATE * LATENCY_SECONDS,
    rate: RATE,
    window: WINDOW,
    concurrency: PREFETCH
  })
  print("nats.latency_p50_ms", percentile(latencies, 50), "ms")
  print("nats.latency_p99_ms", percentile(latencies, 99), "ms")

  // Tasks: the same TaskQueue code on NATS and on RabbitMQ.
  const rabbitPrefix = `benchnats${runId}`
  const rabbitGroups: Array<string> = []
  yield* Effect.addFinalizer(() =>
    Effect.promise(async () => {
      const model = await Amqp.connect(rabbitmqUrl)
      const admin = await model.createChannel()
      for (const group of rabbitGroups) {
        await admin.deleteQueue(`${rabbitPrefix}.group.${group}`)
        await admin.deleteQueue(`${rabbitPrefix}.dlq.${group}`)
      }
      for (const exchange of [`${rabbitPrefix}.topic`, `${rabbitPrefix}.delay`]) await admin.deleteExchange(exchange)
      await model.close()
    })
  )
  const rabbitContext = yield* Layer.build(
    RabbitMQBroker.layer({ url: Redacted.make(rabbitmqUrl), prefix: rabbitPrefix })
  )
  const Payload = Schema.Struct({ id: Schema.String, note: Schema.String })
  const tasksRun = (brokerContext: Context.Context<Broker.Broker>, name: string) =>
    Effect.gen(function*() {
      const task = Task.make(name, { payload: Payload })
      if (brokerContext === rabbitContext) rabbitGroups.push(task.group)
      let handled = 0
      const done = yield* Deferred.make<void>()
      const worker = TaskQueue.worker(task, () =>
        Effect.sync(() => {
          if (++handled === TASKS_N) Deferred.unsafeDone(done, Effect.void)
        }), { concurrency: 50 })
      return yield* Effect.gen(function*() {
        const started = performance.now()
        const outcomes = yield* TaskQueue.enqueueAll(
          task,
          Array.from({ length: TASKS_N }, (_, n) => ({ id: `t-${n}`, note: order(n).note })),
          { window: WINDOW }
        )
        if (outcomes.some(Either.isLeft)) return yield* Effect.dieMessage("enqueue failed")
        yield* Deferred.await(done)
        return TASKS_N / ((performance.now() - started) / 1000)
      }).pipe(
        Effect.provide(
          Layer.mergeAll(TaskQueue.layerWithoutResults(), worker).pipe(
            Layer.provide(Layer.succeedContext(brokerContext))
          )
        ),
        Effect.provide(ResultStore.layerMemory)
      )
    })
  const tasks = { nats: [] as Array<number>, rabbit: [] as Array<number> }
  for (let round = 0; round < ROUNDS; round++) {
    const nats = tasksRun(context, `bench.nats.tasks.${runId}.${round}`)
    const rabbit = tasksRun(rabbitContext, `bench.rabbit.tasks.${runId}.${round}`)
    if (round % 2 === 0) {
      tasks.nats.push(yield* nats)
      tasks.rabbit.push(yield* rabbit)
    } else {
      tasks.rabbit.push(yield* rabbit)
      tasks.nats.push(yield* nats)
    }
    log(
      `tasks round ${round + 1}: nats ${tasks.nats[round]?.toFixed(0)}/s rabbitmq ${tasks.rabbit[round]?.toFixed(0)}/s`
    )
  }
  print("tasks.throughput.nats_tasks_per_s", Math.round(median(tasks.nats)), "tasks/s")
  print("tasks.throughput.rabbitmq_tasks_per_s", Math.round(median(tasks.rabbit)), "tasks/s")
  print("tasks.throughput.nats_vs_rabbitmq", ratio(tasks.nats, tasks.rabbit), "x")
})

await Effect.runPromise(Effect.scoped(main))
