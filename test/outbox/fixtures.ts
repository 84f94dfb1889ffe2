/** Shared pieces of the outbox suites: PostgreSQL layers, a recording broker, fault injection, ledgers. */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import type { Duration } from "effect"
import { Effect, Either, Layer, Redacted, Schema } from "effect"
import { Broker, BrokerTransport } from "../../src/index.js"
import { databaseUrl, runId } from "../fixtures/env.js"
import { plainCapabilities } from "../fixtures/transport.js"

export const pg = (applicationName?: string) =>
  PgClient.layer({
    url: Redacted.make(databaseUrl),
    ...(applicationName === undefined ? {} : { applicationName })
  })

let tables = 0
/** A run-unique table prefix whose table is dropped when the scope closes. */
export const uniquePrefix = Effect.gen(function*() {
  const prefix = `t_${runId}_ob${++tables}`
  const sql = yield* SqlClient.SqlClient
  yield* Effect.addFinalizer(() => Effect.orDie(sql`drop table if exists ${sql(`${prefix}_outbox`)}`))
  return prefix
})

export const OrderPlaced = Schema.Struct({ orderId: Schema.String, n: Schema.Number })
export type OrderPlaced = typeof OrderPlaced.Type
export const orderPlaced = Broker.topic("outbox.order.placed", OrderPlaced)

/** A message as it left the dispatcher, with the instant the broker confirmed it. */
export interface Sent {
  readonly routingKey: string
  readonly messageId: string
  readonly body: string
  readonly headers: Readonly<Record<string, string>>
  readonly confirmedAt: number
}

/** Decides the outcome of one publish; `undefined` lets it through. */
export type Inject = (
  message: BrokerTransport.TransportMessage
) => Broker.BrokerUnavailable | Broker.PublishRejected | undefined

/**
 * A byte-level transport that records confirmed messages in order (and nothing else): the
 * ledger for lost/duplicate/order checks. `inject` turns chosen publishes into failures.
 */
export const recordingBroker = (inject: { current: Inject | undefined } = { current: undefined }) => {
  const sent: Array<Sent> = []
  const record = (
    message: BrokerTransport.TransportMessage
  ): Either.Either<void, Broker.BrokerUnavailable | Broker.PublishRejected> => {
    const failure = inject.current?.(message)
    if (failure !== undefined) return Either.left(failure)
    sent.push({
      routingKey: message.routingKey,
      messageId: message.messageId,
      body: Buffer.from(message.body).toString("utf8"),
      // As on an AMQP wire: one header table (the outbox tests read the trace context there).
      headers: BrokerTransport.mergeHeaders(message.headers, message.metadata),
      confirmedAt: Date.now()
    })
    return Either.void
  }
  const transport: BrokerTransport.Transport = {
    publish: (message) => Either.match(record(message), { onLeft: Effect.fail, onRight: () => Effect.void }),
    publishAll: (batch) => Effect.sync(() => BrokerTransport.mapBatch(batch, record)),
    consume: () => Effect.die("the recording broker does not consume"),
    health: Effect.succeed({ status: "up", connection: "open", consumers: 0, detail: "recording" }),
    capabilities: plainCapabilities("recording")
  }
  return { sent, inject, layer: Layer.succeed(Broker.Broker, Broker.make(transport)) }
}

/**
 * Wraps a broker so that `publishAllEncoded` fails the entries `inject` picks (without sending
 * them) and passes the rest, in order, to the real broker.
 */
export const failingBroker = (
  inner: Broker.Service,
  inject: (entry: Broker.EncodedEntry) => Broker.PublishError | undefined
): Broker.Service => ({
  ...inner,
  publishAllEncoded: (entries, options) =>
    Effect.gen(function*() {
      const decisions = entries.map(inject)
      const passing = entries.filter((_, i) => decisions[i] === undefined)
      const results = passing.length === 0 ? [] : yield* inner.publishAllEncoded(passing, options)
      let next = 0
      return decisions.map((failure) => failure === undefined ? (results[next++] ?? Either.void) : Either.left(failure))
    })
})

/** Polls `check` until it holds or the deadline passes (the deadline is the assertion). */
export const waitUntil = <E, R>(
  what: string,
  check: Effect.Effect<boolean, E, R>,
  deadline: Duration.DurationInput = "20 seconds"
) =>
  Effect.gen(function*() {
    while (!(yield* check)) yield* Effect.sleep("10 millis")
  }).pipe(
    Effect.timeoutFail({ duration: deadline, onTimeout: () => new Error(`timed out waiting until ${what}`) })
  )

/** Counts how often each id occurs. */
export const tally = (ids: Iterable<string>) => {
  const counts = new Map<string, number>()
  for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1)
  let duplicates = 0
  for (const n of counts.values()) if (n > 1) duplicates += n - 1
  return { unique: counts.size, duplicates, counts }
}
