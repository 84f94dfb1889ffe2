/**
 * `npm run bench -- broker`: RabbitMQBroker against raw amqplib, in the same run, on the local
 * RabbitMQ (durable classic queues, persistent messages, ~200 B JSON).
 *
 * - publish: raw = confirm channel, window 1,000, straight to the queue; raw+mandatory = the same
 *   with what ours puts on the wire: through a topic exchange with `mandatory` (needed to detect
 *   unroutable messages) and a UUID message id; ours = `publishAll` with the same
 *   window (Schema encode, topic exchange, `mandatory`, return correlation included).
 * - consume: a backlog of N messages; raw = manual ack at prefetch 100; ours = `subscribe` with
 *   concurrency 100 (decode, envelope, ack included). Like for like, both read the same messages
 *   from the same group queue, each time after `publishAll` filled it (the rate of consuming
 *   RabbitMQ queues depends on what is in them: raw amqplib reads a queue of its own plain
 *   publishes 1.5-2x faster than the same queue of ours, so that figure is printed apart).
 * - single publishes: 100 publishers at once, each awaiting its confirm before the next (how an
 *   app publishes from request handlers); raw = 100 loops of `publish` + confirm callback on one
 *   confirm channel, with what ours sends (topic exchange, `mandatory`, UUID id); ours =
 *   100 fibers of `Broker.publish`.
 * - latency: publish→handler at 2,000 msg/s for a few seconds, p50/p99, both paths.
 */
import * as Amqp from "amqplib"
import { Context, Deferred, Effect, Either, Layer, Redacted } from "effect"
import * as Broker from "../src/Broker.js"
import * as RabbitMQBroker from "../src/layers/RabbitMQBroker.js"
import { rabbitmqUrl, runId } from "../test/fixtures/env.js"
import { publishConfirmedWindow } from "./support/amqp.js"
import { median, Order, order, percentile, print, publishLatency } from "./support/report.js"

const N = Number(process.env["BENCH_BROKER_N"] ?? 50_000)
const WINDOW = 1_000
const PREFETCH = 100
const RATE = 2_000
const LATENCY_SECONDS = 4
const ROUNDS = Number(process.env["BENCH_BROKER_ROUNDS"] ?? 5)
const SINGLE_N = 20_000
const PUBLISHERS = 100

// ---------------------------------------------------------------------------------------------
// raw amqplib
// ---------------------------------------------------------------------------------------------

/**
 * `mandatory` sends what ours sends: through an exchange with the flag ours needs to detect
 * unroutable messages, and a UUID message id; the plain baseline sends straight to the queue
 * without them.
 */
const rawPublish = async (
  channel: Amqp.ConfirmChannel,
  queue: string,
  count: number,
  mandatory?: { readonly exchange: string }
): Promise<number> => {
  const started = performance.now()
  await publishConfirmedWindow(
    channel,
    {
      exchange: mandatory?.exchange ?? "",
      routingKey: queue,
      mandatory: mandatory !== undefined,
      oursProperties: mandatory !== undefined
    },
    count,
    WINDOW,
    (n) => Buffer.from(JSON.stringify(order(n)))
  )
  return count / ((performance.now() - started) / 1000)
}

const rawConsume = async (model: Amqp.ChannelModel, queue: string, count: number): Promise<number> => {
  const channel = await model.createChannel()
  await channel.prefetch(PREFETCH)
  const started = performance.now()
  let received = 0
  let tag = ""
  await new Promise<void>((resolve) => {
    void channel.consume(queue, (message) => {
      if (message === null) return
      JSON.parse(message.content.toString("utf8"))
      channel.ack(message)
      if (++received === count) resolve()
    }, { noAck: false }).then((reply) => {
      tag = reply.consumerTag
    })
  })
  const rate = count / ((performance.now() - started) / 1000)
  await channel.cancel(tag)
  await channel.close()
  return rate
}

const rawLatency = async (model: Amqp.ChannelModel, queue: string): Promise<Array<number>> => {
  const publish = await model.createConfirmChannel()
  const consume = await model.createChannel()
  await consume.prefetch(PREFETCH)
  const total = RATE * LATENCY_SECONDS
  const latencies: Array<number> = []
  await new Promise<void>((resolve) => {
    void consume.consume(queue, (message) => {
      if (message === null) return
      const body = JSON.parse(message.content.toString("utf8")) as Order
      latencies.push(performance.now() - body.sentAt)
      consume.ack(message)
      if (latencies.length === total) resolve()
    })
    let sent = 0
    const started = performance.now()
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * RATE))
      while (sent < due) {
        const n = sent++
        publish.sendToQueue(
          queue,
          Buffer.from(JSON.stringify(order(n, performance.now()))),
          { persistent: true },
          () => undefined
        )
      }
      if (sent < total) setTimeout(tick, 1)
    }
    tick()
  })
  await publish.close()
  await consume.close()
  return latencies.sort((a, b) => a - b)
}

// ---------------------------------------------------------------------------------------------
// ours
// ---------------------------------------------------------------------------------------------

const oursPublish = (broker: Broker.Service, topic: Broker.Topic<Order, Order>, count: number) =>
  Effect.gen(function*() {
    const started = performance.now()
    const entries = Array.from({ length: count }, (_, n) => Broker.entry(topic, order(n)))
    const outcomes = yield* broker.publishAll(entries, { window: WINDOW })
    const failed = outcomes.filter(Either.isLeft).length
    if (failed > 0) return yield* Effect.dieMessage(`${failed} publishes failed`)
    return count / ((performance.now() - started) / 1000)
  })

const oursConsume = (broker: Broker.Service, topic: Broker.Topic<Order, Order>, group: string, count: number) =>
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

const oursLatency = (broker: Broker.Service, topic: Broker.Topic<Order, Order>, group: string) =>
  publishLatency(broker, topic, {
    group,
    total: RATE * LATENCY_SECONDS,
    rate: RATE,
    window: WINDOW,
    concurrency: PREFETCH
  })

// ---------------------------------------------------------------------------------------------

const prefix = `bench${runId}`

const main = Effect.gen(function*() {
  const model = yield* Effect.acquireRelease(
    Effect.promise(() => Amqp.connect(rabbitmqUrl)),
    (m) => Effect.promise(() => m.close())
  )
  const admin = yield* Effect.promise(() => model.createChannel())
  const created: Array<string> = []
  yield* Effect.addFinalizer(() =>
    Effect.promise(async () => {
      for (const queue of created) await admin.deleteQueue(queue)
      await admin.deleteExchange(`${prefix}.topic`)
      await admin.deleteExchange(`${prefix}.delay`)
      await admin.close()
    })
  )
  const context = yield* Layer.build(RabbitMQBroker.layer({ url: Redacted.make(rabbitmqUrl), prefix }))
  const broker = Context.get(context, Broker.Broker)

  const cpu = () => {
    const usage = process.cpuUsage()
    return usage.user + usage.system
  }
  /** Runs one measurement, returning its rate and the process CPU µs spent per message. */
  const measured = <E>(effect: Effect.Effect<number, E>) =>
    Effect.gen(function*() {
      const before = cpu()
      const rate = yield* effect
      return { rate, cpuUs: (cpu() - before) / N }
    })
  type Sample = { readonly rate: number; readonly cpuUs: number }
  const publish = { raw: [] as Array<Sample>, rawMandatory: [] as Array<Sample>, ours: [] as Array<Sample> }
  const consume = { raw: [] as Array<Sample>, rawOwnMessages: [] as Array<Sample>, ours: [] as Array<Sample> }
  for (let round = 0; round < ROUNDS; round++) {
    const rawQueue = `${prefix}.raw.${round}`
    created.push(rawQueue)
    yield* Effect.promise(() => admin.assertQueue(rawQueue, { durable: true }))
    const topic = Broker.topic(`bench.orders.r${round}`, Order)
    const group = `bench-${round}`
    created.push(`${prefix}.group.${group}`, `${prefix}.dlq.${group}`)
    yield* broker.declare(topic, { group })

    const rawRound = Effect.gen(function*() {
      const confirm = yield* Effect.promise(() => model.createConfirmChannel())
      publish.raw.push(yield* measured(Effect.promise(() => rawPublish(confirm, rawQueue, N))))
      // Like for like: what ours sends (topic exchange, `mandatory`, UUID message id), into a
      // second queue.
      const mandatoryQueue = `${rawQueue}.mandatory`
      created.push(mandatoryQueue)
      yield* Effect.promise(async () => {
        await admin.assertQueue(mandatoryQueue, { durable: true })
        await admin.bindQueue(mandatoryQueue, `${prefix}.topic`, mandatoryQueue)
      })
      publish.rawMandatory.push(
        yield* measured(Effect.promise(() => rawPublish(confirm, mandatoryQueue, N, { exchange: `${prefix}.topic` })))
      )
      yield* Effect.promise(() => admin.purgeQueue(mandatoryQueue))
      yield* Effect.promise(() => confirm.close())
      consume.rawOwnMessages.push(yield* measured(Effect.promise(() => rawConsume(model, rawQueue, N))))
      // The baseline proper: the messages ours publishes, from ours' group queue.
      yield* oursPublish(broker, topic, N)
      consume.raw.push(yield* measured(Effect.promise(() => rawConsume(model, `${prefix}.group.${group}`, N))))
    })
    const oursRound = Effect.gen(function*() {
      publish.ours.push(yield* measured(oursPublish(broker, topic, N)))
      consume.ours.push(yield* measured(oursConsume(broker, topic, group, N)))
    })
    // Alternate which side goes first, so neither always meets a warmer broker.
    if (round % 2 === 0) yield* Effect.zipRight(rawRound, oursRound)
    else yield* Effect.zipRight(oursRound, rawRound)
    const show = (sample: Sample | undefined) => `${sample?.rate.toFixed(0)}/s (${sample?.cpuUs.toFixed(0)} µs cpu/msg)`
    process.stderr.write(
      `round ${round + 1}: publish raw ${show(publish.raw[round])} raw+mandatory ${
        show(publish.rawMandatory[round])
      } ours ${show(publish.ours[round])}; consume raw ${show(consume.raw[round])} (its own messages ${
        show(consume.rawOwnMessages[round])
      }) ours ${show(consume.ours[round])}\n`
    )
  }
  /** Median over rounds of the per-round ratio: both sides of a round met the same machine load. */
  const ratio = (ours: ReadonlyArray<Sample>, raw: ReadonlyArray<Sample>) =>
    median(ours.map((sample, i) => sample.rate / (raw[i]?.rate ?? Number.NaN)))
  const rates = (samples: ReadonlyArray<Sample>) => median(samples.map((sample) => sample.rate))
  const cpus = (samples: ReadonlyArray<Sample>) => median(samples.map((sample) => sample.cpuUs))
  print("broker.publish.amqplib_msgs_per_s", Math.round(rates(publish.raw)), "msg/s")
  print("broker.publish.ours_msgs_per_s", Math.round(rates(publish.ours)), "msg/s")
  print("broker.publish.ratio_vs_amqplib", ratio(publish.ours, publish.raw), "x")
  print("broker.publish_confirmed.ratio", ratio(publish.ours, publish.raw), "x")
  print("broker.publish.amqplib_mandatory_msgs_per_s", Math.round(rates(publish.rawMandatory)), "msg/s")
  print("broker.publish.ratio_vs_amqplib_mandatory", ratio(publish.ours, publish.rawMandatory), "x")
  print("broker.publish.amqplib_cpu_us_per_msg", cpus(publish.raw), "us")
  print("broker.publish.ours_cpu_us_per_msg", cpus(publish.ours), "us")
  print("broker.consume.amqplib_msgs_per_s", Math.round(rates(consume.raw)), "msg/s")
  print("broker.consume.ours_msgs_per_s", Math.round(rates(consume.ours)), "msg/s")
  print("broker.consume.ratio_vs_amqplib", ratio(consume.ours, consume.raw), "x")
  print("broker.consume.ratio", ratio(consume.ours, consume.raw), "x")
  print("broker.consume.amqplib_cpu_us_per_msg", cpus(consume.raw), "us")
  print("broker.consume.amqplib_own_messages_msgs_per_s", Math.round(rates(consume.rawOwnMessages)), "msg/s")
  print("broker.consume.ratio_vs_amqplib_own_messages", ratio(consume.ours, consume.rawOwnMessages), "x")
  print("broker.consume.ours_cpu_us_per_msg", cpus(consume.ours), "us")

  // Single publishes from 100 concurrent publishers, alternating sides over the rounds.
  const singleTopic = Broker.topic("bench.orders.single", Order)
  created.push(`${prefix}.group.single`, `${prefix}.dlq.single`)
  yield* broker.declare(singleTopic, { group: "single" })
  const single = { raw: [] as Array<number>, ours: [] as Array<number> }
  const oursSingle = Effect.gen(function*() {
    let next = 0
    const started = performance.now()
    yield* Effect.forEach(Array.from({ length: PUBLISHERS }), () =>
      Effect.gen(function*() {
        while (next < SINGLE_N) yield* broker.publish(singleTopic, order(next++))
      }), { concurrency: "unbounded", discard: true })
    return SINGLE_N / ((performance.now() - started) / 1000)
  })
  const rawSingle = Effect.promise(async () => {
    const confirm = await model.createConfirmChannel()
    let next = 0
    const started = performance.now()
    await Promise.all(Array.from({ length: PUBLISHERS }, async () => {
      while (next < SINGLE_N) {
        const body = Buffer.from(JSON.stringify(order(next++)))
        await new Promise<void>((resolve, reject) =>
          confirm.publish(`${prefix}.topic`, singleTopic.name, body, {
            persistent: true,
            mandatory: true,
            contentType: "application/json",
            messageId: crypto.randomUUID()
          }, (error) => (error === null || error === undefined ? resolve() : reject(error)))
        )
      }
    }))
    const rate = SINGLE_N / ((performance.now() - started) / 1000)
    await confirm.close()
    return rate
  })
  for (let round = 0; round < ROUNDS; round++) {
    const [first, second] = round % 2 === 0 ? [rawSingle, oursSingle] : [oursSingle, rawSingle]
    const a = yield* first
    const b = yield* second
    single.raw.push(round % 2 === 0 ? a : b)
    single.ours.push(round % 2 === 0 ? b : a)
    yield* Effect.promise(() => admin.purgeQueue(`${prefix}.group.single`))
  }
  const singleRatio = median(single.ours.map((rate, i) => rate / (single.raw[i] ?? Number.NaN)))
  print("broker.publish_single.amqplib_msgs_per_s", Math.round(median(single.raw)), "msg/s")
  print("broker.publish_single.ours_msgs_per_s", Math.round(median(single.ours)), "msg/s")
  print("broker.publish_single.ratio_vs_amqplib", singleRatio, "x")

  const latencyQueue = `${prefix}.raw.latency`
  created.push(latencyQueue)
  yield* Effect.promise(() => admin.assertQueue(latencyQueue, { durable: true }))
  const raw = yield* Effect.promise(() => rawLatency(model, latencyQueue))
  const latencyTopic = Broker.topic("bench.orders.latency", Order)
  created.push(`${prefix}.group.latency`, `${prefix}.dlq.latency`)
  const ours = yield* oursLatency(broker, latencyTopic, "latency")
  print("broker.latency.amqplib_p50_ms", percentile(raw, 50), "ms")
  print("broker.latency.amqplib_p99_ms", percentile(raw, 99), "ms")
  print("broker.latency.ours_p50_ms", percentile(ours, 50), "ms")
  print("broker.latency.ours_p99_ms", percentile(ours, 99), "ms")
  print("broker.latency_p50_ms", percentile(ours, 50), "ms")
  print("broker.latency_p99_ms", percentile(ours, 99), "ms")
})

await Effect.runPromise(Effect.scoped(main))
