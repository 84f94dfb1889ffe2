/**
 * `npm run bench -- tasks`: end-to-end no-op tasks/s and enqueue→start latency, in one run, with
 * the same ~200 B JSON payload and worker concurrency 50, producer and worker in this process:
 *
 * - ours: `TaskQueue.enqueueAll` (window 1,000; its default packing of 100 tasks per RabbitMQ
 *   message) + `TaskQueue.worker` on RabbitMQBroker — durable: classic durable queue, persistent
 *   messages, publisher confirms, manual ack once every task of a pack ran. "ours+results" adds
 *   the in-memory result store (one result write per task); "ours quorum" runs the same on quorum
 *   queues (`queueType: "quorum"`: replicated and fsync'd, the durable choice); "ours transient"
 *   runs a `delivery: "transient"` task: kept in RabbitMQ's memory, still confirmed and acked,
 *   lost if RabbitMQ restarts (BullMQ's durability here). "ours unpacked" (`pack: 1`, one RabbitMQ
 *   message per task) is the like-for-like run against the raw amqplib pipeline: our overhead.
 * - amqplib: the transport's ceiling doing the same work by hand — confirm channel (window 1,000)
 *   to the same kind of topic exchange + durable queue, consumer prefetch 50, JSON.parse, ack.
 *   Same durability as ours.
 * - BullMQ: `addBulk` (chunks of 1,000) + Worker concurrency 50 on the local Redis — durability
 *   is Redis's (no AOF/RDB here: lost on a Redis crash).
 * - graphile-worker: `addJobs` (chunks of 1,000) + runner concurrency 50 with its local queue
 *   (size 500) and batched completion (completeJobBatchDelay 0) — durable (PostgreSQL).
 *
 * Throughput = N / (first enqueue → last handler done), enqueue and processing overlapping; each
 * round runs ours unpacked and amqplib back to back (alternating which goes first), and every
 * ratio is the median of the per-round ratios.
 * Latency = enqueue call → handler start, single enqueues at a fixed rate.
 * Env: BENCH_TASKS_N (default 50,000), BENCH_TASKS_ROUNDS (default 3), BENCH_TASKS_RATE (1,000/s).
 * BullMQ 6 needs its `ioredis` peer installed (a devDependency).
 */
import * as Amqp from "amqplib"
import { Queue as BullQueue, Worker as BullWorker } from "bullmq"
import type { Context } from "effect"
import { Effect, Either, Layer, Redacted, Runtime } from "effect"
import { Logger as GraphileLogger, makeWorkerUtils, run as runGraphile } from "graphile-worker"
import { createRequire } from "node:module"
import pg from "pg"
import type * as Broker from "../src/Broker.js"
import * as RabbitMQBroker from "../src/layers/RabbitMQBroker.js"
import * as ResultStore from "../src/ResultStore.js"
import * as Task from "../src/Task.js"
import * as TaskQueue from "../src/TaskQueue.js"
import { databaseUrl, rabbitmqUrl, runId } from "../test/fixtures/env.js"
import { publishConfirmedWindow } from "./support/amqp.js"
import { counter, log, median, paced, Payload, payload, percentile, print, ratio } from "./support/report.js"

const N = Number(process.env["BENCH_TASKS_N"] ?? 50_000)
const ROUNDS = Number(process.env["BENCH_TASKS_ROUNDS"] ?? 3)
const RATE = Number(process.env["BENCH_TASKS_RATE"] ?? 1_000)
const LATENCY_SECONDS = 3
const CONCURRENCY = 50
const WINDOW = 1_000
const CHUNK = 1_000
/** graphile-worker's local queue of jobs fetched ahead of its slots. */
const GRAPHILE_LOCAL_QUEUE = 500
/** Tasks per RabbitMQ message in the packed runs (`enqueueAll`'s default). */
const PACK = 100

// ---------------------------------------------------------------------------------------------
// raw amqplib
// ---------------------------------------------------------------------------------------------

const prefix = `bench${runId}`
const rawExchange = `${prefix}.raw`

const rawPublishAll = (channel: Amqp.ConfirmChannel, routingKey: string, count: number) =>
  publishConfirmedWindow(
    channel,
    { exchange: rawExchange, routingKey, mandatory: true },
    count,
    WINDOW,
    (n) => Buffer.from(JSON.stringify(payload(n)))
  )

const rawRun = async (model: Amqp.ChannelModel, round: string, mode: "throughput" | "latency") => {
  const queue = `${prefix}.rawq.${round}`
  const admin = await model.createChannel()
  await admin.assertExchange(rawExchange, "topic", { durable: true })
  await admin.assertQueue(queue, { durable: true })
  await admin.bindQueue(queue, rawExchange, `raw.${round}`)
  const consume = await model.createChannel()
  await consume.prefetch(CONCURRENCY)
  const publish = await model.createConfirmChannel()
  const total = mode === "throughput" ? N : RATE * LATENCY_SECONDS
  const done = counter(total)
  const latencies: Array<number> = []
  await consume.consume(queue, (message) => {
    if (message === null) return
    const body = JSON.parse(message.content.toString("utf8")) as Payload
    if (mode === "latency") latencies.push(performance.now() - body.sentAt)
    consume.ack(message)
    done.hit()
  })
  const started = performance.now()
  if (mode === "throughput") {
    await rawPublishAll(publish, `raw.${round}`, N)
  } else {
    await paced(
      (n) =>
        publish.publish(rawExchange, `raw.${round}`, Buffer.from(JSON.stringify(payload(n, performance.now()))), {
          persistent: true
        }, () => undefined),
      total,
      RATE
    )
  }
  await done.done
  const seconds = (performance.now() - started) / 1000
  await publish.close()
  await consume.close()
  await admin.deleteQueue(queue)
  await admin.close()
  return { rate: total / seconds, latencies: latencies.sort((a, b) => a - b) }
}

// ---------------------------------------------------------------------------------------------
// ours
// ---------------------------------------------------------------------------------------------

const oursRun = (
  brokerContext: Context.Context<Broker.Broker>,
  round: string,
  mode: "throughput" | "latency",
  results: boolean,
  delivery: Task.Delivery = "persistent",
  pack: number = PACK
) =>
  Effect.gen(function*() {
    const task = Task.make(`bench.${round}`, { payload: Payload, delivery })
    const total = mode === "throughput" ? N : RATE * LATENCY_SECONDS
    const done = counter(total)
    const latencies: Array<number> = []
    const worker = TaskQueue.worker(task, (p) =>
      Effect.sync(() => {
        if (mode === "latency") latencies.push(performance.now() - p.sentAt)
        done.hit()
      }), { concurrency: CONCURRENCY })
    const services = Layer.mergeAll(TaskQueue.layer(), worker).pipe(
      Layer.provide(ResultStore.layerMemory),
      Layer.provide(Layer.succeedContext(brokerContext))
    )
    const servicesWithout = Layer.mergeAll(TaskQueue.layerWithoutResults(), worker).pipe(
      Layer.provide(Layer.succeedContext(brokerContext))
    )
    return yield* Effect.gen(function*() {
      const started = performance.now()
      if (mode === "throughput") {
        const outcomes = yield* TaskQueue.enqueueAll(task, Array.from({ length: N }, (_, n) => payload(n)), {
          window: WINDOW,
          pack
        })
        const failed = outcomes.filter(Either.isLeft).length
        if (failed > 0) return yield* Effect.dieMessage(`${failed} enqueues failed`)
      } else {
        const queue = yield* TaskQueue.TaskQueue
        const runtime = yield* Effect.runtime<never>()
        const run = Runtime.runFork(runtime)
        yield* Effect.promise(() =>
          paced((n) => void run(queue.enqueue(task, payload(n, performance.now()))), total, RATE)
        )
      }
      yield* Effect.promise(() => done.done)
      const seconds = (performance.now() - started) / 1000
      return { rate: total / seconds, latencies: latencies.sort((a, b) => a - b), group: task.group }
    }).pipe(Effect.provide(results ? services : servicesWithout), Effect.provide(brokerContext))
  })

// ---------------------------------------------------------------------------------------------
// BullMQ
// ---------------------------------------------------------------------------------------------

const redis = { host: "127.0.0.1", port: 6379, maxRetriesPerRequest: null }

/** BullMQ 6 loads `ioredis` (an optional peer) at run time and loops on errors without it. */
const bullmqUsable = (() => {
  try {
    createRequire(import.meta.url).resolve("ioredis")
    return true
  } catch {
    log("BullMQ baseline skipped: its peer `ioredis` is not installed (npm i -D ioredis)")
    return false
  }
})()
const skipped = { rate: Number.NaN, latencies: [] as Array<number> }

const bullRun = async (round: string, mode: "throughput" | "latency") => {
  const name = `${prefix}-bull-${round}`
  const queue = new BullQueue(name, {
    connection: redis,
    defaultJobOptions: { removeOnComplete: true, removeOnFail: true }
  })
  const total = mode === "throughput" ? N : RATE * LATENCY_SECONDS
  const done = counter(total)
  const latencies: Array<number> = []
  const worker = new BullWorker(name, async (job) => {
    if (mode === "latency") latencies.push(performance.now() - (job.data as Payload).sentAt)
    done.hit()
  }, { connection: redis, concurrency: CONCURRENCY })
  await worker.waitUntilReady()
  const started = performance.now()
  if (mode === "throughput") {
    for (let from = 0; from < N; from += CHUNK) {
      await queue.addBulk(
        Array.from({ length: Math.min(CHUNK, N - from) }, (_, i) => ({ name: "noop", data: payload(from + i) }))
      )
    }
  } else {
    await paced((n) => void queue.add("noop", payload(n, performance.now())), total, RATE)
  }
  await done.done
  const seconds = (performance.now() - started) / 1000
  await worker.close()
  await queue.obliterate({ force: true })
  await queue.close()
  return { rate: total / seconds, latencies: latencies.sort((a, b) => a - b) }
}

// ---------------------------------------------------------------------------------------------
// graphile-worker
// ---------------------------------------------------------------------------------------------

const graphileSchema = `bench_gw_${runId}`
const quiet = new GraphileLogger(() => () => undefined)

const graphileRun = async (round: string, mode: "throughput" | "latency") => {
  const total = mode === "throughput" ? N : RATE * LATENCY_SECONDS
  const done = counter(total)
  const latencies: Array<number> = []
  const identifier = `noop_${round.replaceAll(".", "_")}`
  const utils = await makeWorkerUtils({ connectionString: databaseUrl, schema: graphileSchema, logger: quiet })
  await utils.migrate()
  const runner = await runGraphile({
    connectionString: databaseUrl,
    schema: graphileSchema,
    concurrency: CONCURRENCY,
    noHandleSignals: true,
    pollInterval: 1000,
    logger: quiet,
    taskList: {
      [identifier]: async (p) => {
        if (mode === "latency") latencies.push(performance.now() - (p as Payload).sentAt)
        done.hit()
      }
    },
    preset: { worker: { localQueue: { size: GRAPHILE_LOCAL_QUEUE }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }
  })
  const started = performance.now()
  if (mode === "throughput") {
    for (let from = 0; from < N; from += CHUNK) {
      await utils.addJobs(
        Array.from({ length: Math.min(CHUNK, N - from) }, (_, i) => ({ identifier, payload: payload(from + i) }))
      )
    }
  } else {
    await paced((n) => void utils.addJob(identifier, payload(n, performance.now())), total, RATE)
  }
  await done.done
  const seconds = (performance.now() - started) / 1000
  await runner.stop()
  await utils.release()
  return { rate: total / seconds, latencies: latencies.sort((a, b) => a - b) }
}

// ---------------------------------------------------------------------------------------------

const main = Effect.gen(function*() {
  const benchStarted = performance.now()
  const model = yield* Effect.acquireRelease(
    Effect.promise(() => Amqp.connect(rabbitmqUrl)),
    (m) => Effect.promise(() => m.close())
  )
  const admin = yield* Effect.promise(() => model.createChannel())
  const groups: Array<string> = []
  yield* Effect.addFinalizer(() =>
    Effect.promise(async () => {
      for (const group of groups) {
        await admin.deleteQueue(`${prefix}.group.${group}`)
        await admin.deleteQueue(`${prefix}.dlq.${group}`)
      }
      for (const exchange of [`${prefix}.topic`, `${prefix}.delay`, rawExchange]) await admin.deleteExchange(exchange)
      await admin.close()
      const client = new pg.Client({ connectionString: databaseUrl })
      await client.connect()
      await client.query(`drop schema if exists "${graphileSchema}" cascade`)
      await client.end()
    })
  )
  const brokerContext = yield* Layer.build(RabbitMQBroker.layer({ url: Redacted.make(rabbitmqUrl), prefix }))
  const quorumContext = yield* Layer.build(
    RabbitMQBroker.layer({ url: Redacted.make(rabbitmqUrl), prefix: `${prefix}q`, queueType: "quorum" })
  )
  const quorumGroups: Array<string> = []
  yield* Effect.addFinalizer(() =>
    Effect.promise(async () => {
      const channel = await model.createChannel()
      for (const group of quorumGroups) {
        await channel.deleteQueue(`${prefix}q.group.${group}`)
        await channel.deleteQueue(`${prefix}q.dlq.${group}`)
      }
      for (const exchange of [`${prefix}q.topic`, `${prefix}q.delay`]) await channel.deleteExchange(exchange)
      await channel.close()
    })
  )

  const rates = {
    ours: [] as Array<number>,
    oursUnpacked: [] as Array<number>,
    oursResults: [] as Array<number>,
    oursQuorum: [] as Array<number>,
    oursTransient: [] as Array<number>,
    amqplib: [] as Array<number>,
    bullmq: [] as Array<number>,
    graphile: [] as Array<number>
  }
  for (let round = 0; round < ROUNDS; round++) {
    const r = `r${round}`
    // ours and its amqplib baseline back to back, in alternating order, so both meet the same
    // machine (its speed drifts over a run); ratios are medians of the per-round ratios.
    const raw = Effect.promise(() => rawRun(model, r, "throughput"))
    const unpacked = oursRun(brokerContext, `${r}u`, "throughput", false, "persistent", 1)
    const [oursUnpacked, amqplib] = round % 2 === 1
      ? yield* Effect.all([unpacked, raw])
      : yield* Effect.map(Effect.all([raw, unpacked]), ([a, o]) => [o, a] as const)
    rates.amqplib.push(amqplib.rate)
    groups.push(oursUnpacked.group)
    rates.oursUnpacked.push(oursUnpacked.rate)
    const ours = yield* oursRun(brokerContext, r, "throughput", false)
    groups.push(ours.group)
    rates.ours.push(ours.rate)
    const oursResults = yield* oursRun(brokerContext, `${r}res`, "throughput", true)
    groups.push(oursResults.group)
    rates.oursResults.push(oursResults.rate)
    const quorum = yield* oursRun(quorumContext, `${r}q`, "throughput", false)
    quorumGroups.push(quorum.group)
    rates.oursQuorum.push(quorum.rate)
    const transient = yield* oursRun(brokerContext, `${r}t`, "throughput", false, "transient")
    groups.push(transient.group)
    rates.oursTransient.push(transient.rate)
    rates.bullmq.push(bullmqUsable ? (yield* Effect.promise(() => bullRun(r, "throughput"))).rate : Number.NaN)
    rates.graphile.push((yield* Effect.promise(() => graphileRun(r, "throughput"))).rate)
    log(
      `round ${round + 1}: ours ${rates.ours[round]?.toFixed(0)} (+results ${
        rates.oursResults[round]?.toFixed(0)
      }, quorum ${rates.oursQuorum[round]?.toFixed(0)}, transient ${rates.oursTransient[round]?.toFixed(0)}, unpacked ${
        rates.oursUnpacked[round]?.toFixed(0)
      }), amqplib ${rates.amqplib[round]?.toFixed(0)}, bullmq ${rates.bullmq[round]?.toFixed(0)}, graphile ${
        rates.graphile[round]?.toFixed(0)
      } tasks/s`
    )
  }
  const ours = median(rates.ours)
  print("tasks.throughput.ours_tasks_per_s", Math.round(ours), "tasks/s")
  print("tasks.throughput.ours_with_results_tasks_per_s", Math.round(median(rates.oursResults)), "tasks/s")
  print("tasks.throughput.ours_quorum_tasks_per_s", Math.round(median(rates.oursQuorum)), "tasks/s")
  print("tasks.throughput.amqplib_tasks_per_s", Math.round(median(rates.amqplib)), "tasks/s")
  print("tasks.throughput.bullmq_tasks_per_s", Math.round(median(rates.bullmq)), "tasks/s")
  print("tasks.throughput.graphile_tasks_per_s", Math.round(median(rates.graphile)), "tasks/s")
  // Like for like on the wire (one RabbitMQ message per task): our overhead over the transport.
  print("tasks.throughput.ours_unpacked_tasks_per_s", Math.round(median(rates.oursUnpacked)), "tasks/s")
  print("tasks.throughput.ratio_vs_amqplib", ratio(rates.oursUnpacked, rates.amqplib), "x")
  print("tasks.throughput.packed_ratio_vs_amqplib", ratio(rates.ours, rates.amqplib), "x")
  print("tasks.throughput.ratio_vs_bullmq", ratio(rates.ours, rates.bullmq), "x")
  print("tasks.throughput.ratio_vs_graphile", ratio(rates.ours, rates.graphile), "x")
  // Like for like in durability: transient tasks and BullMQ on a Redis without persistence are
  // both lost if their server restarts; quorum queues and graphile-worker both survive it.
  print("tasks.throughput.ours_transient_tasks_per_s", Math.round(median(rates.oursTransient)), "tasks/s")
  print("tasks.throughput.transient_ratio_vs_bullmq", ratio(rates.oursTransient, rates.bullmq), "x")
  print("tasks.throughput.quorum_ratio_vs_graphile", ratio(rates.oursQuorum, rates.graphile), "x")

  const latOurs = yield* oursRun(brokerContext, "lat", "latency", false)
  groups.push(latOurs.group)
  const latRaw = yield* Effect.promise(() => rawRun(model, "lat", "latency"))
  const latBull = bullmqUsable ? yield* Effect.promise(() => bullRun("lat", "latency")) : skipped
  const latGraphile = yield* Effect.promise(() => graphileRun("lat", "latency"))
  print("tasks.latency_p50_ms", percentile(latOurs.latencies, 50), "ms")
  print("tasks.latency_p99_ms", percentile(latOurs.latencies, 99), "ms")
  print("tasks.latency.amqplib_p50_ms", percentile(latRaw.latencies, 50), "ms")
  print("tasks.latency.amqplib_p99_ms", percentile(latRaw.latencies, 99), "ms")
  print("tasks.latency.bullmq_p50_ms", percentile(latBull.latencies, 50), "ms")
  print("tasks.latency.bullmq_p99_ms", percentile(latBull.latencies, 99), "ms")
  print("tasks.latency.graphile_p50_ms", percentile(latGraphile.latencies, 50), "ms")
  print("tasks.latency.graphile_p99_ms", percentile(latGraphile.latencies, 99), "ms")
  log(
    `bench took ${((performance.now() - benchStarted) / 1000).toFixed(1)} s (N=${N}, rounds=${ROUNDS}, rate=${RATE}/s)`
  )
})

await Effect.runPromise(Effect.scoped(main))
