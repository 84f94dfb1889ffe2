/**
 * Trace context across the wire: a request's span is the ancestor of the consumer span of the
 * event it wrote to the outbox, and of the task run that consumer enqueued — through the outbox
 * row, the broker headers and the task message.
 */
import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Layer, Option, Redacted, Schedule, Schema, Tracer } from "effect"
import * as Broker from "../../src/Broker.js"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import * as PgOutbox from "../../src/layers/PgOutbox.js"
import * as Outbox from "../../src/Outbox.js"
import * as ResultStore from "../../src/ResultStore.js"
import * as Task from "../../src/Task.js"
import * as TaskQueue from "../../src/TaskQueue.js"
import { databaseUrl, runId } from "../fixtures/env.js"

interface Recorded {
  readonly name: string
  readonly spanId: string
  readonly traceId: string
  readonly parentSpanId: string | undefined
  readonly kind: Tracer.SpanKind
  readonly links: ReadonlyArray<Tracer.SpanLink>
}

/** A tracer that keeps every span it starts (an in-memory exporter). */
const makeRecordingTracer = () => {
  const spans: Array<Recorded> = []
  let next = 0
  const id = (length: number) => (++next).toString(16).padStart(length, "0")
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const parentSpan = Option.getOrUndefined(parent)
      const traceId = parentSpan?.traceId ?? id(32)
      const spanId = id(16)
      spans.push({ name, spanId, traceId, parentSpanId: parentSpan?.spanId, kind, links: [...links] })
      const attributes = new Map<string, unknown>()
      const span: Tracer.Span = {
        _tag: "Span",
        name,
        spanId,
        traceId,
        parent,
        context,
        status: { _tag: "Started", startTime },
        attributes,
        links: [...links],
        sampled: true,
        kind,
        end: () => undefined,
        attribute: (key, value) => {
          attributes.set(key, value)
        },
        event: () => undefined,
        addLinks: () => undefined
      }
      return span
    },
    context: (f) => f()
  })
  const ancestry = (span: Recorded): Array<string> => {
    const chain: Array<string> = []
    let current: Recorded | undefined = span
    while (current !== undefined) {
      chain.push(current.name)
      const parentId: string | undefined = current.parentSpanId
      current = parentId === undefined ? undefined : spans.find((s) => s.spanId === parentId)
    }
    return chain
  }
  return { tracer, spans, ancestry }
}

const OrderPlaced = Broker.topic("trace.orders.placed", Schema.Struct({ orderId: Schema.String }))
const confirm = Task.make("trace_confirm", { payload: Schema.Struct({ orderId: Schema.String }) })

const prefix = `eb_trace_${runId}`

const Database = PgClient.layer({ url: Redacted.make(databaseUrl), applicationName: "eb-trace-test" })

const dropTable = Layer.scopedDiscard(
  Effect.addFinalizer(() =>
    Effect.flatMap(SqlClient.SqlClient, (sql) => sql`DROP TABLE IF EXISTS ${sql(`${prefix}_outbox`)}`).pipe(
      Effect.orDie
    )
  )
)

const services = PgOutbox.layer({ prefix, listen: false, notify: false, pollInterval: "100 millis" }).pipe(
  Layer.provideMerge(MemoryBroker.layer()),
  Layer.provideMerge(dropTable),
  Layer.provideMerge(Database)
)

describe("tracing across the wire", () => {
  it.live("HTTP span -> outbox row -> dispatch -> consume -> enqueue -> task run stay one trace", () => {
    const recording = makeRecordingTracer()
    const taskSpans: Array<string> = []
    return Effect.gen(function*() {
      yield* Broker.subscribe(
        OrderPlaced,
        (event) => TaskQueue.enqueue(confirm, { orderId: event.orderId }),
        { group: `trace_${runId}` }
      )
      const sql = yield* SqlClient.SqlClient
      yield* Outbox.add(OrderPlaced, { orderId: "o-1" }).pipe(
        sql.withTransaction,
        Effect.withSpan("http.request", { kind: "server" })
      )
      // Wait (bounded) for the worker to run the task the consumer enqueued.
      yield* Effect.sync(() => taskSpans.length > 0).pipe(
        Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (found) => found }),
        Effect.timeout("20 seconds")
      )

      const root = recording.spans.find((span) => span.name === "http.request")
      const run = recording.spans.find((span) => span.spanId === taskSpans[0])
      assert.isDefined(root)
      assert.isDefined(run)
      if (root === undefined || run === undefined) return
      const chain = recording.ancestry(run)
      assert.strictEqual(run.traceId, root.traceId, `the task run is in the request's trace: ${chain.join(" <- ")}`)
      assert.strictEqual(chain.at(-1), "http.request", chain.join(" <- "))
      // The consumer of the outbox event, and the consumer of the task message, are on the path.
      assert.isAtLeast(chain.filter((name) => name === "broker.process").length, 2, chain.join(" <- "))
      assert.include(chain, "task.enqueue", chain.join(" <- "))
      // HTTP -> outbox.add -> (dispatch, carried in the row) -> consume -> enqueue -> consume -> task run
      assert.include(chain, "outbox.add", chain.join(" <- "))
      const dispatch = recording.spans.find((span) => span.name === "outbox.dispatch")
      assert.isDefined(dispatch, "the dispatcher traced its batch")
    }).pipe(
      Effect.provide(
        TaskQueue.worker(confirm, () =>
          // The span the task body runs in (whatever the worker names it).
          Effect.flatMap(Effect.currentSpan, (span) => Effect.sync(() => taskSpans.push(span.spanId))).pipe(
            Effect.orDie
          )).pipe(
            Layer.provideMerge(TaskQueue.layer()),
            Layer.provideMerge(ResultStore.layerMemory),
            Layer.provideMerge(services)
          )
      ),
      Effect.withTracer(recording.tracer),
      Effect.scoped
    )
  }, 60_000)

  it.live(
    "an event stored without trace context starts a trace at its consumer, not under the dispatcher's span",
    () => {
      const recording = makeRecordingTracer()
      return Effect.gen(function*() {
        const consumed = yield* Deferred.make<string>()
        yield* Broker.subscribe(
          OrderPlaced,
          () =>
            Effect.flatMap(Effect.currentSpan, (span) => Deferred.succeed(consumed, span.spanId)).pipe(Effect.orDie),
          { group: `trace_plain_${runId}` }
        )
        // As a writer without tracing (or a database trigger) stores it: no traceparent.
        const sql = yield* SqlClient.SqlClient
        yield* sql`insert into ${sql(`${prefix}_outbox`)} (message_id, topic, body)
        values (${crypto.randomUUID()}, ${OrderPlaced.name}, ${JSON.stringify({ orderId: "o-2" })})`
        const spanId = yield* Deferred.await(consumed).pipe(Effect.timeout("20 seconds"))
        const process = recording.spans.find((span) => span.spanId === spanId)
        assert.strictEqual(process?.name, "broker.process")
        assert.isUndefined(process?.parentSpanId, process === undefined ? "" : recording.ancestry(process).join(" <- "))
      }).pipe(Effect.provide(services), Effect.withTracer(recording.tracer), Effect.scoped)
    },
    60_000
  )

  it.live("an idle dispatcher records no span; a batch is one root span linked to its events' traces", () => {
    const recording = makeRecordingTracer()
    return Effect.gen(function*() {
      // Several polls (every 100 ms) find nothing: no span at all, not even the SQL client's (the
      // table's creation at Layer build, before, is traced).
      yield* Effect.sleep("300 millis")
      const before = recording.spans.length
      yield* Effect.sleep("600 millis")
      assert.deepStrictEqual(recording.spans.slice(before).map((span) => span.name), [])
      const consumed = yield* Deferred.make<void>()
      yield* Broker.subscribe(OrderPlaced, () => Deferred.succeed(consumed, undefined), {
        group: `trace_idle_${runId}`
      })
      const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
      const sql = yield* SqlClient.SqlClient
      yield* sql`insert into ${sql(`${prefix}_outbox`)} (message_id, topic, body, traceparent)
        values (${crypto.randomUUID()}, ${OrderPlaced.name}, ${JSON.stringify({ orderId: "o-3" })},
        ${`00-${traceId}-00f067aa0ba902b7-01`})`.pipe(Effect.withTracerEnabled(false))
      yield* Deferred.await(consumed).pipe(Effect.timeout("20 seconds"))
      const dispatches = recording.spans.filter((span) => span.name === "outbox.dispatch")
      assert.strictEqual(dispatches.length, 1)
      const dispatch = dispatches[0]
      assert.isUndefined(dispatch?.parentSpanId, "a root")
      assert.deepStrictEqual(dispatch?.links.map((link) => link.span.traceId), [traceId])
    }).pipe(Effect.provide(services), Effect.withTracer(recording.tracer), Effect.scoped)
  }, 60_000)
})
