/**
 * `npm run bench -- scheduler`: the Scheduler's timer against the alternatives, in one run.
 *
 * - firing: 1,000 schedules (500 × `interval("1 second")`, 500 × cron `* * * * * *`) for
 *   BENCH_SCHEDULER_SECONDS (30) on the live clock, memory lease, a stand-in TaskQueue that only
 *   records (key, time): lateness (enqueue time − slot) p50/p99 and process CPU per 1,000 firings.
 *   Baselines over 10 s with the same 1,000 schedules: one Node `setInterval` each, and one Effect
 *   fiber each (`Effect.sleep` loop). The setInterval run also reports its own tick lateness: the
 *   floor this machine's load allows.
 * - the same run with the real TaskQueue on MemoryBroker + memory result store (10 s): what a
 *   firing costs end to end (encode, dedup-key claim, publish).
 * - next-fire rate: our cron path (`internal/cron`: cron-parser + seconds cache) vs cron-parser's
 *   raw `next()` and croner's `nextRun()`, in UTC and Europe/Berlin.
 */
import { CronExpressionParser } from "cron-parser"
import { Cron as Croner } from "croner"
import { Duration, Effect, Either, Fiber, Layer, Option, Schema } from "effect"
import * as cron from "../src/internal/cron.js"
import * as MemoryBroker from "../src/layers/MemoryBroker.js"
import * as ResultStore from "../src/ResultStore.js"
import * as Scheduler from "../src/Scheduler.js"
import * as SchedulerLease from "../src/SchedulerLease.js"
import * as Task from "../src/Task.js"
import * as TaskQueue from "../src/TaskQueue.js"
import * as Trigger from "../src/Trigger.js"
import { percentile, print } from "./support/report.js"

const SECONDS = Number(process.env["BENCH_SCHEDULER_SECONDS"] ?? 30)
const BASELINE_SECONDS = Number(process.env["BENCH_SCHEDULER_BASELINE_SECONDS"] ?? 10)
const SCHEDULES = 1_000
const WARMUP_MS = 2_000

const cpuMs = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Runs `start` for warm-up + `seconds`, returning CPU ms per 1,000 firings counted after warm-up. */
const measure = async (seconds: number, count: () => number, start: () => () => Promise<void>) => {
  const stop = start()
  await sleep(WARMUP_MS)
  const firings0 = count()
  const cpu0 = cpuMs()
  await sleep(seconds * 1000)
  const cpu = cpuMs() - cpu0
  const firings = count() - firings0
  await stop()
  return { cpuPer1000: (cpu / firings) * 1000, firings }
}

// ---------------------------------------------------------------------------------------------
// ours
// ---------------------------------------------------------------------------------------------

const tick = Task.make("bench_scheduler_tick", { payload: Schema.Struct({ n: Schema.Number }) })

const definitions = Array.from({ length: SCHEDULES }, (_, i) =>
  Scheduler.schedule(`s${i}`, tick, {
    trigger: i % 2 === 0 ? Trigger.interval("1 second") : Trigger.cron("* * * * * *"),
    payload: { n: i }
  }))

/** Records each enqueue's key and time into preallocated arrays; nothing else. */
const recordingQueue = () => {
  const capacity = SCHEDULES * (SECONDS + BASELINE_SECONDS + 10)
  const at = new Float64Array(capacity)
  const keys: Array<string> = []
  let n = 0
  const handle = TaskQueue.handle(tick, "id")
  const service: TaskQueue.Service = {
    enqueue: (_task, _payload, options) =>
      Effect.sync(() => {
        if (n < capacity) {
          at[n] = Date.now()
          keys.push(options?.key ?? "")
        }
        n++
        return handle as never
      }),
    enqueueAll: () => Effect.dieMessage("unused"),
    result: () => Effect.dieMessage("unused"),
    redrive: () => Effect.dieMessage("unused"),
    poll: () => Effect.succeed(Option.none())
  }
  return { service, count: () => n, at, keys }
}

const runOurs = async () => {
  const recorder = recordingQueue()
  const layer = Layer.merge(Layer.succeed(TaskQueue.TaskQueue, recorder.service), SchedulerLease.layerMemory)
  let startIndex = 0
  const result = await measure(SECONDS, recorder.count, () => {
    const fiber = Effect.runFork(Scheduler.run(definitions).pipe(Effect.provide(layer)))
    setTimeout(() => {
      startIndex = recorder.count()
    }, WARMUP_MS)
    return () => Effect.runPromise(Fiber.interrupt(fiber)).then(() => undefined)
  })
  const end = Math.min(recorder.count(), recorder.keys.length)
  const lateness = new Float64Array(end - startIndex)
  for (let i = startIndex; i < end; i++) {
    const key = recorder.keys[i] ?? ""
    lateness[i - startIndex] = (recorder.at[i] ?? 0) - new Date(key.slice(key.indexOf("@") + 1)).getTime()
  }
  lateness.sort()
  return {
    ...result,
    p50: percentile(lateness, 50),
    p99: percentile(lateness, 99),
    max: lateness[lateness.length - 1] ?? 0
  }
}

const runOursTaskQueue = async () => {
  // MemoryBroker declares a task's queue when its worker subscribes; the worker does nothing.
  const layer = Layer.merge(TaskQueue.layer(), TaskQueue.worker(tick, () => Effect.void)).pipe(
    Layer.provideMerge(Layer.merge(MemoryBroker.layer(), ResultStore.layerMemory)),
    Layer.merge(SchedulerLease.layerMemory)
  )
  let count = 0
  const counted = Layer.effect(
    TaskQueue.TaskQueue,
    Effect.map(TaskQueue.TaskQueue, (queue): TaskQueue.Service => ({
      ...queue,
      enqueue: (task, payload, options) => Effect.tap(queue.enqueue(task, payload, options), () => void count++)
    }))
  ).pipe(Layer.provideMerge(layer))
  return measure(BASELINE_SECONDS, () => count, () => {
    const fiber = Effect.runFork(Scheduler.run(definitions).pipe(Effect.provide(counted)))
    return () => Effect.runPromise(Fiber.interrupt(fiber)).then(() => undefined)
  })
}

// ---------------------------------------------------------------------------------------------
// baselines
// ---------------------------------------------------------------------------------------------

/** One Node timer per schedule; lateness = callback time − (previous callback + 1 s): the machine's floor. */
const runSetInterval = async () => {
  let n = 0
  const lateness: Array<number> = []
  const result = await measure(BASELINE_SECONDS, () => n, () => {
    const started = Date.now()
    const timers = Array.from({ length: SCHEDULES }, () => {
      let last = started
      return setInterval(() => {
        const now = Date.now()
        if (now - started > WARMUP_MS) lateness.push(now - last - 1000)
        last = now
        n++
      }, 1000)
    })
    return async () => timers.forEach(clearInterval)
  })
  lateness.sort((a, b) => a - b)
  return { ...result, p50: percentile(lateness, 50), p99: percentile(lateness, 99) }
}

const runFiberPerSchedule = () => {
  let n = 0
  return measure(BASELINE_SECONDS, () => n, () => {
    const loop = Effect.sleep(Duration.seconds(1)).pipe(Effect.zipRight(Effect.sync(() => void n++)), Effect.forever)
    const fiber = Effect.runFork(Effect.forEach(Array.from({ length: SCHEDULES }), () => loop, {
      concurrency: "unbounded",
      discard: true
    }))
    return () => Effect.runPromise(Fiber.interrupt(fiber)).then(() => undefined)
  })
}

// ---------------------------------------------------------------------------------------------
// next-fire rate
// ---------------------------------------------------------------------------------------------

const RATE_MS = 500

/** Calls `next` in batches of 1,000 for RATE_MS of wall time; returns calls per second. */
const rate = (label: string, next: (t: number) => number) => {
  let t = Date.UTC(2026, 0, 1)
  for (let i = 0; i < 2_000; i++) t = next(t) // warm-up
  t = Date.UTC(2026, 0, 1)
  let calls = 0
  const started = performance.now()
  while (performance.now() - started < RATE_MS) {
    for (let i = 0; i < 1_000; i++) t = next(t)
    calls += 1_000
  }
  const perSecond = calls / ((performance.now() - started) / 1000)
  print(`scheduler.next_fire_rate.${label}`, Math.round(perSecond), "per_s")
  return perSecond
}

const nextFireRates = () => {
  const cases = [
    ["every_second_utc", "* * * * * *", "UTC"],
    ["every_second_berlin", "* * * * * *", "Europe/Berlin"],
    ["every_5min_berlin", "0 */5 * * * *", "Europe/Berlin"]
  ] as const
  for (const [label, expression, tz] of cases) {
    const ours = cron.parse(expression, { tz }, Date.UTC(2026, 0, 1))
    if (Either.isLeft(ours)) throw new Error(ours.left.reason)
    const spec = ours.right
    const a = rate(`${label}.ours`, (t) => spec.next(t) ?? t)
    const parser = CronExpressionParser.parse(expression, { tz, currentDate: new Date(Date.UTC(2026, 0, 1)) })
    const b = rate(`${label}.cron_parser_raw`, () => parser.next().getTime())
    const croner = new Croner(expression, { timezone: tz })
    const c = rate(`${label}.croner`, (t) => croner.nextRun(new Date(t))?.getTime() ?? t)
    print(`scheduler.next_fire_rate.${label}.ratio_vs_cron_parser`, a / b, "x")
    print(`scheduler.next_fire_rate.${label}.ratio_vs_croner`, a / c, "x")
  }
}

// ---------------------------------------------------------------------------------------------

nextFireRates()

// This process's own CPU while idle (timers, the runtime): at 1,000 firings/s, ms/s ≈ ms per 1,000
// firings, so read every cpu figure below against it.
{
  const cpu0 = cpuMs()
  await sleep(3_000)
  print("bench.process_idle_cpu_ms_per_s", (cpuMs() - cpu0) / 3, "ms")
}

const ours = await runOurs()
print("scheduler.firings", ours.firings, "firings")
print("scheduler.lateness_p50_ms", ours.p50, "ms")
print("scheduler.lateness_p99_ms", ours.p99, "ms")
print("scheduler.lateness_max_ms", ours.max, "ms")
print("scheduler.cpu_ms_per_1000_firings", ours.cpuPer1000, "ms")

const withQueue = await runOursTaskQueue()
print("scheduler.taskqueue_memorybroker_worker.cpu_ms_per_1000_firings", withQueue.cpuPer1000, "ms")

const interval = await runSetInterval()
print("baseline.set_interval.cpu_ms_per_1000_firings", interval.cpuPer1000, "ms")
print("baseline.set_interval.lateness_p50_ms", interval.p50, "ms")
print("baseline.set_interval.lateness_p99_ms", interval.p99, "ms")
const fibers = await runFiberPerSchedule()
print("baseline.fiber_per_schedule.cpu_ms_per_1000_firings", fibers.cpuPer1000, "ms")
print("scheduler.cpu_ratio_vs_fiber_per_schedule", ours.cpuPer1000 / fibers.cpuPer1000, "x")
print("scheduler.cpu_ratio_vs_set_interval", ours.cpuPer1000 / interval.cpuPer1000, "x")
