/**
 * What every benchmark suite shares: the `name: value unit` lines on stdout, progress on stderr,
 * medians of per-round ratios, percentiles, a completion counter, a paced sender, and the
 * ~200 B JSON messages the broker, NATS, Redis and tasks suites send.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Broker from "../../src/Broker.js"

export const print = (name: string, value: number, unit: string): void => {
  process.stdout.write(`${name}: ${Number.isInteger(value) ? value : value.toFixed(2)} ${unit}\n`)
}

export const log = (line: string): void => {
  process.stderr.write(`${line}\n`)
}

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
}

/** Median over rounds of the per-round ratio (each round runs both sides under the same load). */
export const ratio = (ours: ReadonlyArray<number>, baseline: ReadonlyArray<number>): number =>
  median(ours.map((rate, i) => rate / (baseline[i] ?? Number.NaN)))

/** `p` in 0-100 of an ascending array; NaN when empty. */
export const percentile = (sorted: ArrayLike<number>, p: number): number =>
  sorted.length === 0
    ? Number.NaN
    : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN

/** A completion counter a no-op handler bumps; `done` resolves when `total` handlers ran. */
export const counter = (total: number) => {
  let count = 0
  let resolve: () => void = () => undefined
  const done = new Promise<void>((r) => (resolve = r))
  return { hit: () => (++count === total ? resolve() : undefined), done }
}

/** Calls `send(n)` for n = 0 … total - 1 at `rate` per second. */
export const paced = async (send: (n: number) => void, total: number, rate: number): Promise<void> => {
  let sent = 0
  const started = performance.now()
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - started) / 1000) * rate))
    while (sent < due) send(sent++)
    await new Promise((r) => setTimeout(r, 1))
  }
}

const note = "x".repeat(100)

/** An order event (broker and NATS suites). */
export const Order = Schema.Struct({
  id: Schema.String,
  customer: Schema.String,
  amount: Schema.Number,
  currency: Schema.String,
  sentAt: Schema.Number,
  note: Schema.String
})
export type Order = typeof Order.Type
export const order = (n: number, sentAt = 0): Order => ({
  id: `order-${n}`,
  customer: `customer-${n % 977}`,
  amount: n % 10_000,
  currency: "EUR",
  sentAt,
  note
})

/** A task payload (tasks and Redis suites). */
export const Payload = Schema.Struct({
  id: Schema.String,
  user: Schema.String,
  amount: Schema.Number,
  currency: Schema.String,
  sentAt: Schema.Number,
  note: Schema.String
})
export type Payload = typeof Payload.Type
export const payload = (n: number, sentAt = 0): Payload => ({
  id: `task-${n}`,
  user: `user-${n % 977}`,
  amount: n % 10_000,
  currency: "EUR",
  sentAt,
  note
})

/**
 * Publish → handler latency (ms, ascending) of `total` orders published at `rate` per second,
 * each pacing tick's orders in one `publishAll` that runs concurrently with the pacing loop, as
 * independent producers would.
 */
export const publishLatency = (
  broker: Broker.Service,
  topic: Broker.Topic<Order, Order>,
  options: {
    readonly group: string
    readonly total: number
    readonly rate: number
    readonly window: number
    readonly concurrency: number
  }
) =>
  Effect.gen(function*() {
    const latencies: Array<number> = []
    const done = yield* Deferred.make<void>()
    yield* broker.subscribe(topic, (message) =>
      Effect.sync(() => {
        latencies.push(performance.now() - message.sentAt)
        if (latencies.length === options.total) Deferred.unsafeDone(done, Effect.void)
      }), { group: options.group, concurrency: options.concurrency })
    let sent = 0
    const started = performance.now()
    while (sent < options.total) {
      const due = Math.min(options.total, Math.floor(((performance.now() - started) / 1000) * options.rate))
      const batch: Array<Broker.PublishEntry> = []
      while (sent < due) batch.push(Broker.entry(topic, order(sent++, performance.now())))
      if (batch.length > 0) yield* Effect.forkScoped(broker.publishAll(batch, { window: options.window }))
      yield* Effect.sleep("1 millis")
    }
    yield* Deferred.await(done)
    return latencies.sort((a, b) => a - b)
  }).pipe(Effect.scoped)
