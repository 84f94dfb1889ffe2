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
 * - cost: for every side, this process's CPU (`process.cpuUsage`) and the Redis server's
 *   (`INFO cpu`) per message over the same interval as its rate (`…_node_us_per_msg`,
 *   `…_redis_us_per_msg`), and `…cpu_ratio_vs_raw` / `…cpu_ratio_vs_bullmq`: messages per CPU
 *   second, both processes together, ours over the baseline (median of per-round ratios). A
 *   side slowed by another process's load does not cost more CPU per message, so these move
 *   far less from run to run than rates on this machine.
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
import { deleteKeys } from "./support/redis.js"
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

type Side =
  | "oursPublish"
  | "rawPublish"
  | "typedRawPublish"
  | "oursConsume"
  | "rawConsume"
  | "typedRawConsume"
  | "oursTasks"
  | "bullmq"

/** A side's rate and what each message cost: this process's CPU and the Redis server's (µs). */
interface Measured {
  readonly rate: number
  readonly nodeUs: number
  readonly redisUs: number
}

/** CPU seconds the Redis server has used (`INFO cpu`: user + sys of the server process). */
const redisCpuSeconds = async (client: Raw): Promise<number> => {
  const info = String(await client.sendCommand(["INFO", "cpu"]))
  let total = 0
  for (const match of info.matchAll(/^used_cpu_(?:sys|user):([\d.]+)/gm)) total += Number(match[1])
  return total
}

/**
 * Starts measuring a side; the function it returns ends it after `count` messages. CPU per
 * message is steadier than a rate on this noisy machine (another process's load slows a side
 * without making its messages cost more), and it counts the server's share too.
 */
const meter = async (client: Raw) => {
  const redisBefore = await redisCpuSeconds(client)
  const nodeBefore = process.cpuUsage()
  const started = performance.now()
  return async (count: number): Promise<Measured> => {
    const seconds = (performance.now() - started) / 1000
    const node = process.cpuUsage(nodeBefore)
    const redis = await redisCpuSeconds(client) - redisBefore
    return { rate: count / seconds, nodeUs: (node.user + node.system) / count, redisUs: (redis * 1e6) / count }
  }
}

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
const rawPublish = async (client: Raw, stream: string, typed = false): Promise<Measured> => {
  const end = await meter(client)
  for (let from = 0; from < N; from += WINDOW) {
    const sent: Array<Promise<unknown>> = []
    for (let n = from; n < Math.min(N, from + WINDOW); n++) {
      sent.push(client.sendCommand(["XADD", stream, "*", "b", rawBody(n, typed), "i", `id-${n}`]))
    }
    await Promise.all(sent)
  }
  return end(N)
}

const rawConsume = async (client: Raw, reader: Raw, stream: string, typed = false): Promise<Measured> => {
  await client.sendCommand(["XGROUP", "CREATE", stream, "g", "0", "MKSTREAM"])
  await rawPublish(client, stream)
  const end = await meter(client)
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
  return end(N)
}

const noop = () => undefined

// ---------------------------------------------------------------------------------------------
// ours
// ---------------------------------------------------------------------------------------------

/** `publishAll` of N payloads to `topic`, a window at a time. */
const publishN = (client: Raw, broker: Broker.Service, topic: Broker.Topic<Payload, Payload>) =>
  Effect.gen(function*() {
    const end = yield* Effect.promise(() => meter(client))
    for (let from = 0; from < N; from += WINDOW) {
      const entries = Array.from(
        { length: Math.min(WINDOW, N - from) },
        (_, i) => Broker.entry(topic, payload(from + i))
      )
      const results = yield* broker.publishAll(entries, { window: WINDOW })
      const failed = results.filter(Either.isLeft).length
      if (failed > 0) return yield* Effect.dieMessage(`${failed} publishes failed`)
    }
    return yield* Effect.promise(() => end(N))
  })

const oursPublish = (client: Raw, broker: Broker.Service, round: string) =>
  Effect.gen(function*() {
    const topic = Broker.topic(`pub-${round}`, Payload)
    yield* broker.declare(topic, { group: `g-${round}` })
    return yield* publishN(client, broker, topic)
  })

const oursConsume = (client: Raw, broker: Broker.Service, round: string) =>
  Effect.scoped(Effect.gen(function*() {
    const topic = Broker.topic(`con-${round}`, Payload)
    const group = `g-${round}`
    yield* broker.declare(topic, { group })
    yield* publishN(client, broker, topic)
    const done = counter(N)
    const end = yield* Effect.promise(() => meter(client))
    yield* broker.subscribe(topic, () => Effect.sync(done.hit), {
      group,
      concurrency: CONCURRENCY,
      prefetch: PREFETCH
    })
    yield* Effect.promise(() => done.done)
    return yield* Effect.promise(() => end(N))
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

const oursTasks = (client: Raw, brokerContext: Context.Context<Broker.Broker>, round: string) =>
  Effect.gen(function*() {
    const task = Task.make(`bench.${round}`, { payload: Payload })
    const done = counter(N)
    const worker = TaskQueue.worker(task, () => Effect.sync(done.hit), { concurrency: CONCURRENCY })
    const services = Layer.mergeAll(TaskQueue.layerWithoutResults(), worker).pipe(
      Layer.provide(Layer.succeedContext(brokerContext))
    )
    return yield* Effect.gen(function*() {
      const end = yield* Effect.promise(() => meter(client))
      const outcomes = yield* TaskQueue.enqueueAll(task, Array.from({ length: N }, (_, n) => payload(n)), {
        window: WINDOW
      })
      const failed = outcomes.filter(Either.isLeft).length
      if (failed > 0) return yield* Effect.dieMessage(`${failed} enqueues failed`)
      yield* Effect.promise(() => done.done)
      return yield* Effect.promise(() => end(N))
    }).pipe(Effect.provide(services), Effect.scoped)
  })

// ---------------------------------------------------------------------------------------------
// BullMQ (same Redis)
// ---------------------------------------------------------------------------------------------

const bullRun = async (client: Raw, round: string): Promise<Measured> => {
  const parsed = new URL(url)
  const connection = { host: parsed.hostname, port: Number(parsed.port || 6379), maxRetriesPerRequest: null }
  const name = `${prefix}-bull-${round}`
  const queue = new BullQueue(name, { connection, defaultJobOptions: { removeOnComplete: true, removeOnFail: true } })
  const done = counter(N)
  const worker = new BullWorker(name, async () => {
    done.hit()
  }, { connection, concurrency: CONCURRENCY })
  await worker.waitUntilReady()
  const end = await meter(client)
  for (let from = 0; from < N; from += WINDOW) {
    await queue.addBulk(
      Array.from({ length: Math.min(WINDOW, N - from) }, (_, i) => ({ name: "noop", data: payload(from + i) }))
    )
  }
  await done.done
  const measured = await end(N)
  await worker.close()
  await queue.obliterate({ force: true })
  await queue.close()
  return measured
}

// ---------------------------------------------------------------------------------------------

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
  const measured: Record<Side, Array<Measured>> = {
    oursPublish: [],
    rawPublish: [],
    typedRawPublish: [],
    oursConsume: [],
    rawConsume: [],
    typedRawConsume: [],
    oursTasks: [],
    bullmq: []
  }
  for (let round = 0; round < ROUNDS; round++) {
    const r = `r${round}`
    // The sides run one after another, a different one first each round (so none always meets
    // a warmer Redis).
    const inTurn = function*<E>(sides: ReadonlyArray<readonly [Side, Effect.Effect<Measured, E>]>) {
      for (let k = 0; k < sides.length; k++) {
        const side = sides[(k + round) % sides.length]
        if (side !== undefined) measured[side[0]].push(yield* side[1])
      }
    }
    yield* inTurn([
      ["oursPublish", oursPublish(client, broker, r)],
      ["rawPublish", Effect.promise(() => rawPublish(client, `${prefix}-raw-pub-${r}`))],
      ["typedRawPublish", Effect.promise(() => rawPublish(client, `${prefix}-typed-pub-${r}`, true))]
    ])
    yield* Effect.promise(() => deleteKeys(client, `${prefix}*pub*`))
    yield* inTurn([
      ["oursConsume", oursConsume(client, broker, r)],
      ["rawConsume", Effect.promise(() => rawConsume(client, reader, `${prefix}-raw-con-${r}`))],
      ["typedRawConsume", Effect.promise(() => rawConsume(client, reader, `${prefix}-typed-con-${r}`, true))]
    ])
    yield* Effect.promise(() => deleteKeys(client, `${prefix}*con*`))
    yield* inTurn([["oursTasks", oursTasks(client, brokerContext, r)], [
      "bullmq",
      Effect.promise(() => bullRun(client, r))
    ]])
    const last = (side: Side) => {
      const m = measured[side][round]
      return m === undefined ? "?" : `${m.rate.toFixed(0)}/s ${m.nodeUs.toFixed(1)}+${m.redisUs.toFixed(1)} µs`
    }
    log(
      `round ${round}: publish ours ${last("oursPublish")}, raw ${last("rawPublish")}, typed raw ${
        last("typedRawPublish")
      }; consume ours ${last("oursConsume")}, raw ${last("rawConsume")}, typed raw ${
        last("typedRawConsume")
      }; tasks ours ${last("oursTasks")}, bullmq ${last("bullmq")}`
    )
  }
  const rates = (side: Side) => measured[side].map((m) => m.rate)
  /** Messages per CPU second (this process and the server together), per round. */
  const perCpu = (side: Side) => measured[side].map((m) => 1 / (m.nodeUs + m.redisUs))
  const cost = (name: string, side: Side) => {
    print(`${name}_node_us_per_msg`, median(measured[side].map((m) => m.nodeUs)), "µs")
    print(`${name}_redis_us_per_msg`, median(measured[side].map((m) => m.redisUs)), "µs")
  }
  for (const op of ["publish", "consume"] as const) {
    const ours = op === "publish" ? "oursPublish" : "oursConsume"
    const raw = op === "publish" ? "rawPublish" : "rawConsume"
    const typed = op === "publish" ? "typedRawPublish" : "typedRawConsume"
    print(`redis.${op}.ours_msgs_per_s`, Math.round(median(rates(ours))), "msg/s")
    print(`redis.${op}.raw_msgs_per_s`, Math.round(median(rates(raw))), "msg/s")
    print(`redis.${op}.ratio_vs_raw`, ratio(rates(ours), rates(raw)), "x")
    print(`redis.${op}.typed_raw_ratio_vs_raw`, ratio(rates(typed), rates(raw)), "x")
    cost(`redis.${op}.ours`, ours)
    cost(`redis.${op}.raw`, raw)
    cost(`redis.${op}.typed_raw`, typed)
    print(`redis.${op}.cpu_ratio_vs_raw`, ratio(perCpu(ours), perCpu(raw)), "x")
    print(`redis.${op}.typed_raw_cpu_ratio_vs_raw`, ratio(perCpu(typed), perCpu(raw)), "x")
  }
  print("tasks.throughput.redis_tasks_per_s", Math.round(median(rates("oursTasks"))), "tasks/s")
  print("tasks.throughput.bullmq_tasks_per_s", Math.round(median(rates("bullmq"))), "tasks/s")
  print("tasks.throughput.redis_ratio_vs_bullmq", ratio(rates("oursTasks"), rates("bullmq")), "x")
  cost("tasks.redis.ours", "oursTasks")
  cost("tasks.redis.bullmq", "bullmq")
  print("tasks.redis.cpu_ratio_vs_bullmq", ratio(perCpu("oursTasks"), perCpu("bullmq")), "x")
  const latencies = yield* oursLatency(broker)
  print("redis.latency.p50_ms", percentile(latencies, 50), "ms")
  print("redis.latency.p99_ms", percentile(latencies, 99), "ms")
  log(
    `bench took ${((performance.now() - benchStarted) / 1000).toFixed(1)} s (N=${N}, rounds=${ROUNDS}, rate=${RATE}/s)`
  )
})

await Effect.runPromise(Effect.scoped(main).pipe(Effect.orDie))
