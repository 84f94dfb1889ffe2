/**
 * `npm run bench -- redis`: RedisBroker against the raw client (node-redis 5) and BullMQ, in one
 * run, on the same Redis (the shared local instance: no AOF, no RDB — every figure here has the
 * durability of a server without persistence), ~200 B JSON payloads:
 *
 * - publish: `Broker.publishAll` (window 1,000) vs raw pipelined `XADD` (1,000 in flight, fields
 *   `b` body + `i` id), N messages each; messages/s, ratio = median of per-round ratios.
 * - consume: N messages already in the stream; `Broker.subscribe` (concurrency 50, prefetch 200,
 *   Schema decode) vs raw `XREADGROUP COUNT 200 BLOCK` + `JSON.parse` + one `XACK` per read.
 * - typed raw (publish and consume): the raw loops plus the least a typed Effect consumer or
 *   producer does per message: `Schema` encode / decode, and for consume the handler's `Effect`
 *   run (all of a read's in one `Effect.forEach`, one at a time). Its ratio to raw is the ceiling
 *   of any library that runs typed Effect handlers, printed next to ours.
 * - latency: single `Broker.publish` at BENCH_REDIS_RATE per second for 3 s; publish call →
 *   handler start, p50 / p99.
 * - tasks: no-op tasks end to end (`TaskQueue.enqueueAll` + `TaskQueue.worker`, concurrency 50,
 *   producer and worker in this process) vs BullMQ (`addBulk` chunks of 1,000 + Worker
 *   concurrency 50): `tasks.throughput.redis_ratio_vs_bullmq`.
 *
 * Each round runs ours and the baselines back to back, a different one first each round.
 * Env: BENCH_REDIS_N (default 50,000), BENCH_REDIS_ROUNDS (default 5), BENCH_REDIS_RATE (1,000/s).
 */
import { Queue as BullQueue, Worker as BullWorker } from "bullmq"
import { Context, Effect, Either, Layer, Redacted, Runtime, Schema } from "effect"
import { createClient } from "redis"
import * as Broker from "../src/Broker.js"
import * as RedisBroker from "../src/layers/RedisBroker.js"
import * as Task from "../src/Task.js"
import * as TaskQueue from "../src/TaskQueue.js"
import { runId } from "../test/fixtures/env.js"
import { counter, log, median, paced, Payload, payload, percentile, print, ratio } from "./support/report.js"

const N = Number(process.env["BENCH_REDIS_N"] ?? 50_000)
const ROUNDS = Number(process.env["BENCH_REDIS_ROUNDS"] ?? 5)
const RATE = Number(process.env["BENCH_REDIS_RATE"] ?? 1_000)
const LATENCY_SECONDS = 3
const WINDOW = 1_000
const CONCURRENCY = 50
const PREFETCH = 200
const url = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379"
const prefix = `bench${runId}`

type Raw = ReturnType<typeof createClient>

// ---------------------------------------------------------------------------------------------
// raw node-redis
// ---------------------------------------------------------------------------------------------

const encodePayload = Schema.encodeEither(Payload)
const decodePayload = Schema.decodeUnknownEither(Payload)

/** The body of message `n`: JSON of the payload, Schema-encoded first when `typed`. */
const rawBody = (n: number, typed: boolean): string => {
  if (!typed) return JSON.stringify(payload(n))
  const encoded = encodePayload(payload(n))
  if (Either.isLeft(encoded)) throw new Error(String(encoded.left))
  return JSON.stringify(encoded.right)
}

/** Pipelined `XADD`s, a window at a time. */
const rawPublish = async (client: Raw, stream: string, typed = false) => {
  const started = performance.now()
  for (let from = 0; from < N; from += WINDOW) {
    const sent: Array<Promise<unknown>> = []
    for (let n = from; n < Math.min(N, from + WINDOW); n++) {
      sent.push(client.sendCommand(["XADD", stream, "*", "b", rawBody(n, typed), "i", `id-${n}`]))
    }
    await Promise.all(sent)
  }
  return N / ((performance.now() - started) / 1000)
}

const rawConsume = async (client: Raw, reader: Raw, stream: string, typed = false) => {
  await client.sendCommand(["XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"])
  await rawPublish(client, stream)
  const started = performance.now()
  let seen = 0
  while (seen < N) {
    const reply = await reader.sendCommand([
      "XREADGROUP",
      "GROUP",
      "g",
      "c",
      "COUNT",
      String(PREFETCH),
      "BLOCK",
      "1000",
      "STREAMS",
      stream,
      ">"
    ])
    if (!Array.isArray(reply)) continue
    const ids: Array<string> = []
    const values: Array<Payload> = []
    for (const item of reply) {
      const entries: unknown = Array.isArray(item) ? item[1] : undefined
      if (!Array.isArray(entries)) continue
      for (const entry of entries) {
        if (!Array.isArray(entry)) continue
        const fields: unknown = entry[1]
        const json: unknown = Array.isArray(fields) ? JSON.parse(String(fields[1])) : undefined
        if (typed) {
          const decoded = decodePayload(json)
          if (Either.isLeft(decoded)) throw new Error(String(decoded.left))
          values.push(decoded.right)
        }
        ids.push(String(entry[0]))
      }
    }
    if (typed) await Effect.runPromise(Effect.forEach(values, () => Effect.sync(noop), { discard: true }))
    seen += ids.length
    void client.sendCommand(["XACK", stream, "g", ...ids])
  }
  return N / ((performance.now() - started) / 1000)
}

const noop = () => undefined

// ---------------------------------------------------------------------------------------------
// ours
// ---------------------------------------------------------------------------------------------

/** `publishAll` of N payloads to `topic`, a window at a time; messages/s. */
const publishN = (broker: Broker.Service, topic: Broker.Topic<Payload, Payload>) =>
  Effect.gen(function*() {
    const started = performance.now()
    for (let from = 0; from < N; from += WINDOW) {
      const entries = Array.from(
        { length: Math.min(WINDOW, N - from) },
        (_, i) => Broker.entry(topic, payload(from + i))
      )
      const results = yield* broker.publishAll(entries, { window: WINDOW })
      const failed = results.filter(Either.isLeft).length
      if (failed > 0) return yield* Effect.dieMessage(`${failed} publishes failed`)
    }
    return N / ((performance.now() - started) / 1000)
  })

const oursPublish = (broker: Broker.Service, round: string) =>
  Effect.gen(function*() {
    const topic = Broker.topic(`pub-${round}`, Payload)
    yield* broker.declare(topic, { group: `g-${round}` })
    return yield* publishN(broker, topic)
  })

const oursConsume = (broker: Broker.Service, round: string) =>
  Effect.scoped(Effect.gen(function*() {
    const topic = Broker.topic(`con-${round}`, Payload)
    const group = `g-${round}`
    yield* broker.declare(topic, { group })
    yield* publishN(broker, topic)
    const done = counter(N)
    const started = performance.now()
    yield* broker.subscribe(topic, () => Effect.sync(done.hit), {
      group,
      concurrency: CONCURRENCY,
      prefetch: PREFETCH
    })
    yield* Effect.promise(() => done.done)
    return N / ((performance.now() - started) / 1000)
  }))

const oursLatency = (broker: Broker.Service) =>
  Effect.scoped(Effect.gen(function*() {
    const topic = Broker.topic("latency", Payload)
    const total = RATE * LATENCY_SECONDS
    const done = counter(total)
    const latencies: Array<number> = []
    yield* broker.subscribe(topic, (p) =>
      Effect.sync(() => {
        latencies.push(performance.now() - p.sentAt)
        done.hit()
      }), { group: "latency", concurrency: CONCURRENCY })
    const runtime = yield* Effect.runtime<never>()
    const run = Runtime.runFork(runtime)
    yield* Effect.promise(() =>
      paced((n) => void run(broker.publish(topic, payload(n, performance.now()))), total, RATE)
    )
    yield* Effect.promise(() => done.done)
    return latencies.sort((a, b) => a - b)
  }))

const oursTasks = (brokerContext: Context.Context<Broker.Broker>, round: string) =>
  Effect.gen(function*() {
    const task = Task.make(`bench.${round}`, { payload: Payload })
    const done = counter(N)
    const worker = TaskQueue.worker(task, () => Effect.sync(done.hit), { concurrency: CONCURRENCY })
    const services = Layer.mergeAll(TaskQueue.layerWithoutResults(), worker).pipe(
      Layer.provide(Layer.succeedContext(brokerContext))
    )
    return yield* Effect.gen(function*() {
      const started = performance.now()
      const outcomes = yield* TaskQueue.enqueueAll(task, Array.from({ length: N }, (_, n) => payload(n)), {
        window: WINDOW
      })
      const failed = outcomes.filter(Either.isLeft).length
      if (failed > 0) return yield* Effect.dieMessage(`${failed} enqueues failed`)
      yield* Effect.promise(() => done.done)
      return N / ((performance.now() - started) / 1000)
    }).pipe(Effect.provide(services), Effect.scoped)
  })

// ---------------------------------------------------------------------------------------------
// BullMQ (same Redis)
// ---------------------------------------------------------------------------------------------

const bullRun = async (round: string) => {
  const parsed = new URL(url)
  const connection = { host: parsed.hostname, port: Number(parsed.port || 6379), maxRetriesPerRequest: null }
  const name = `${prefix}-bull-${round}`
  const queue = new BullQueue(name, { connection, defaultJobOptions: { removeOnComplete: true, removeOnFail: true } })
  const done = counter(N)
  const worker = new BullWorker(name, async () => {
    done.hit()
  }, { connection, concurrency: CONCURRENCY })
  await worker.waitUntilReady()
  const started = performance.now()
  for (let from = 0; from < N; from += WINDOW) {
    await queue.addBulk(
      Array.from({ length: Math.min(WINDOW, N - from) }, (_, i) => ({ name: "noop", data: payload(from + i) }))
    )
  }
  await done.done
  const rate = N / ((performance.now() - started) / 1000)
  await worker.close()
  await queue.obliterate({ force: true })
  await queue.close()
  return rate
}

// ---------------------------------------------------------------------------------------------

const deleteKeys = async (client: Raw, match: string) => {
  for await (const keys of client.scanIterator({ MATCH: match, COUNT: 1000 })) {
    if (keys.length > 0) await client.del(keys)
  }
}

const main = Effect.gen(function*() {
  const benchStarted = performance.now()
  const client = yield* Effect.acquireRelease(
    Effect.promise(() => createClient({ url }).on("error", (e: unknown) => log(`raw client: ${String(e)}`)).connect()),
    (c) =>
      Effect.promise(async () => {
        await deleteKeys(c, `${prefix}*`)
        c.destroy()
      })
  )
  const reader = yield* Effect.acquireRelease(
    Effect.promise(() => client.duplicate().on("error", (e: unknown) => log(`raw reader: ${String(e)}`)).connect()),
    (c) => Effect.sync(() => c.destroy())
  )
  const brokerContext = yield* Layer.build(
    RedisBroker.layer({ url: Redacted.make(url), prefix, trimInterval: "1 second" })
  )
  const broker = Context.get(brokerContext, Broker.Broker)
  const rates = {
    rawPublish: [] as Array<number>,
    oursPublish: [] as Array<number>,
    rawConsume: [] as Array<number>,
    typedRawPublish: [] as Array<number>,
    typedRawConsume: [] as Array<number>,
    oursConsume: [] as Array<number>,
    oursTasks: [] as Array<number>,
    bullmq: [] as Array<number>
  }
  for (let round = 0; round < ROUNDS; round++) {
    const r = `r${round}`
    // The sides run one after another, a different one first each round (so none always meets
    // a warmer Redis); results come back in the order given.
    const inTurn = function*<E>(sides: ReadonlyArray<Effect.Effect<number, E>>) {
      const results = sides.map(() => Number.NaN)
      for (let k = 0; k < sides.length; k++) {
        const at = (k + round) % sides.length
        const side = sides[at]
        if (side !== undefined) results[at] = yield* side
      }
      return results
    }
    const [op = 0, rp = 0, tp = 0] = yield* inTurn([
      oursPublish(broker, r),
      Effect.promise(() => rawPublish(client, `${prefix}-raw-pub-${r}`)),
      Effect.promise(() => rawPublish(client, `${prefix}-typed-pub-${r}`, true))
    ])
    rates.oursPublish.push(op)
    rates.rawPublish.push(rp)
    rates.typedRawPublish.push(tp)
    yield* Effect.promise(() => deleteKeys(client, `${prefix}*pub*`))
    const [oc = 0, rc = 0, tc = 0] = yield* inTurn([
      oursConsume(broker, r),
      Effect.promise(() => rawConsume(client, reader, `${prefix}-raw-con-${r}`)),
      Effect.promise(() => rawConsume(client, reader, `${prefix}-typed-con-${r}`, true))
    ])
    rates.oursConsume.push(oc)
    rates.rawConsume.push(rc)
    rates.typedRawConsume.push(tc)
    yield* Effect.promise(() => deleteKeys(client, `${prefix}*con*`))
    const [ot = 0, bt = 0] = yield* inTurn([oursTasks(brokerContext, r), Effect.promise(() => bullRun(r))])
    rates.oursTasks.push(ot)
    rates.bullmq.push(bt)
    log(
      `round ${round}: publish ours ${op.toFixed(0)} raw ${rp.toFixed(0)} typed raw ${tp.toFixed(0)}; consume ours ${
        oc.toFixed(0)
      } raw ${rc.toFixed(0)} typed raw ${tc.toFixed(0)}; tasks ours ${ot.toFixed(0)} bullmq ${bt.toFixed(0)}`
    )
  }
  print("redis.publish.ours_msgs_per_s", Math.round(median(rates.oursPublish)), "msg/s")
  print("redis.publish.raw_msgs_per_s", Math.round(median(rates.rawPublish)), "msg/s")
  print("redis.publish.ratio_vs_raw", ratio(rates.oursPublish, rates.rawPublish), "x")
  print("redis.publish.typed_raw_ratio_vs_raw", ratio(rates.typedRawPublish, rates.rawPublish), "x")
  print("redis.consume.ours_msgs_per_s", Math.round(median(rates.oursConsume)), "msg/s")
  print("redis.consume.raw_msgs_per_s", Math.round(median(rates.rawConsume)), "msg/s")
  print("redis.consume.ratio_vs_raw", ratio(rates.oursConsume, rates.rawConsume), "x")
  print("redis.consume.typed_raw_ratio_vs_raw", ratio(rates.typedRawConsume, rates.rawConsume), "x")
  print("tasks.throughput.redis_tasks_per_s", Math.round(median(rates.oursTasks)), "tasks/s")
  print("tasks.throughput.bullmq_tasks_per_s", Math.round(median(rates.bullmq)), "tasks/s")
  print("tasks.throughput.redis_ratio_vs_bullmq", ratio(rates.oursTasks, rates.bullmq), "x")
  const latencies = yield* oursLatency(broker)
  print("redis.latency.p50_ms", percentile(latencies, 50), "ms")
  print("redis.latency.p99_ms", percentile(latencies, 99), "ms")
  log(
    `bench took ${((performance.now() - benchStarted) / 1000).toFixed(1)} s (N=${N}, rounds=${ROUNDS}, rate=${RATE}/s)`
  )
})

await Effect.runPromise(Effect.scoped(main).pipe(Effect.orDie))
