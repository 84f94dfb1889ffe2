/**
 * Trace context under the real OpenTelemetry SDK (`@effect/opentelemetry`, an in-memory exporter,
 * a ParentBased sampler), as a team adopting the library runs it: a producer's sampling decision
 * reaches its consumers through the broker and through an outbox row.
 */
import * as OtelResource from "@effect/opentelemetry/Resource"
import * as OtelTracer from "@effect/opentelemetry/Tracer"
import { SqlClient } from "@effect/sql"
import { assert, describe, it } from "@effect/vitest"
import { TraceFlags } from "@opentelemetry/api"
import {
  AlwaysOnSampler,
  BasicTracerProvider,
  InMemorySpanExporter,
  ParentBasedSampler,
  SimpleSpanProcessor
} from "@opentelemetry/sdk-trace-base"
import { Deferred, Effect, Layer, Redacted, Schema } from "effect"
import { Broker, MemoryBroker, Outbox, ResultStore, Task, TaskQueue } from "../../src/index.js"
import * as PgOutbox from "../../src/layers/PgOutbox.js"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import { runId, uniqueName } from "../fixtures/env.js"
import { pg } from "../outbox/fixtures.js"
import { scopedVhost, urlFor } from "../support/rabbitmq.js"

const makeOtel = () => {
  const exporter = new InMemorySpanExporter()
  const provider = new BasicTracerProvider({
    sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
    spanProcessors: [new SimpleSpanProcessor(exporter)]
  })
  const layer = OtelTracer.layer.pipe(
    Layer.provide(Layer.succeed(OtelTracer.OtelTracerProvider, provider)),
    Layer.provide(OtelResource.layer({ serviceName: "eb-test" }))
  )
  return { exporter, layer }
}

const Ping = Schema.Struct({ n: Schema.Number })

/** Two producers in other processes: one sampled its trace, one dropped it. */
const sampledParent = {
  traceId: "0af7651916cd43dd8448eb211c80319c",
  spanId: "b7ad6b7169203331",
  traceFlags: TraceFlags.SAMPLED
}
const droppedParent = {
  traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  spanId: "00f067aa0ba902b7",
  traceFlags: TraceFlags.NONE
}

/** A handler, and a Deferred it completes on its second run. */
const secondRun = Effect.map(Deferred.make<void>(), (done) => {
  let runs = 0
  return { done, handler: () => Effect.suspend(() => ++runs === 2 ? Deferred.succeed(done, undefined) : Effect.void) }
})

/**
 * Sends message 1 under the sampled producer's context and message 2 under the dropped one's,
 * waits for both runs, and returns the span names each trace recorded.
 */
const sendUnderBoth = <E, R>(
  exporter: InMemorySpanExporter,
  send: (n: number) => Effect.Effect<unknown, E, R>,
  bothRan: Deferred.Deferred<void>
) =>
  Effect.gen(function*() {
    yield* OtelTracer.withSpanContext(send(1), sampledParent)
    yield* OtelTracer.withSpanContext(send(2), droppedParent)
    yield* Deferred.await(bothRan).pipe(Effect.timeout("20 seconds"))
    yield* Effect.sleep("50 millis")
    const names = (traceId: string) =>
      exporter.getFinishedSpans().filter((span) => span.spanContext().traceId === traceId).map((span) => span.name)
    return { sampled: names(sampledParent.traceId), dropped: names(droppedParent.traceId) }
  })

describe("tracing under the OpenTelemetry SDK", () => {
  it.live("a consumer follows its producer's sampling decision: recorded when sampled, not when dropped", () => {
    const otel = makeOtel()
    return Effect.gen(function*() {
      const topic = Broker.topic(`${uniqueName("otel").replaceAll("_", "-")}.x`, Ping)
      const { done, handler } = yield* secondRun
      yield* Broker.subscribe(topic, handler, { group: uniqueName("g") })
      const traces = yield* sendUnderBoth(otel.exporter, (n) => Broker.publish(topic, { n }), done)
      assert.include(traces.sampled, `process ${topic.name}`, "the sampled trace is recorded")
      assert.deepStrictEqual(traces.dropped, [], "nothing is recorded for the dropped trace")
    }).pipe(Effect.provide(MemoryBroker.layer()), Effect.provide(otel.layer), Effect.scoped)
  }, 30_000)

  it.live("through an outbox row too: the dropped trace stays dropped at the consumer", () => {
    const otel = makeOtel()
    const prefix = `t_${runId}_otel`
    return Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const topic = Broker.topic(`${uniqueName("otel-ob").replaceAll("_", "-")}.x`, Ping)
      const { done, handler } = yield* secondRun
      yield* Broker.subscribe(topic, handler, { group: uniqueName("g") })
      const traces = yield* sendUnderBoth(otel.exporter, (n) => sql.withTransaction(Outbox.add(topic, { n })), done)
      assert.include(traces.sampled, `process ${topic.name}`)
      assert.deepStrictEqual(traces.dropped, [])
    }).pipe(
      Effect.provide(
        PgOutbox.layer({ prefix, listen: false, notify: false, pollInterval: "50 millis" }).pipe(
          Layer.provideMerge(MemoryBroker.layer()),
          Layer.provideMerge(
            Layer.scopedDiscard(
              Effect.addFinalizer(() =>
                Effect.flatMap(SqlClient.SqlClient, (sql) => sql`drop table if exists ${sql(`${prefix}_outbox`)}`).pipe(
                  Effect.orDie
                )
              )
            )
          ),
          Layer.provideMerge(pg())
        )
      ),
      Effect.provide(otel.layer),
      Effect.scoped
    )
  }, 30_000)

  it.live(
    "spans follow the messaging conventions: send / process <destination>, system, operation, RabbitMQ's exchange and routing key",
    () => {
      const otel = makeOtel()
      const prefix = `otel${runId}`
      return Effect.gen(function*() {
        const topic = Broker.topic(`${uniqueName("otel-sem").replaceAll("_", "-")}.x`, Ping)
        const group = uniqueName("g")
        const handled = yield* Deferred.make<void>()
        yield* Broker.subscribe(topic, () => Deferred.succeed(handled, undefined), { group })
        yield* Broker.publish(topic, { n: 1 })
        yield* Deferred.await(handled).pipe(Effect.timeout("10 seconds"))
        yield* Effect.sleep("50 millis")
        const spans = otel.exporter.getFinishedSpans()
        const send = spans.find((span) => span.name === `send ${prefix}.topic`)
        const process = spans.find((span) => span.name === `process ${prefix}.topic`)
        assert.isDefined(send, spans.map((span) => span.name).join(", "))
        assert.isDefined(process, spans.map((span) => span.name).join(", "))
        for (const [span, operation] of [[send, "send"], [process, "process"]] as const) {
          assert.strictEqual(span?.attributes["messaging.system"], "rabbitmq")
          assert.strictEqual(span?.attributes["messaging.operation.name"], operation)
          assert.strictEqual(span?.attributes["messaging.destination.name"], `${prefix}.topic`)
          assert.strictEqual(span?.attributes["messaging.rabbitmq.destination.routing_key"], topic.name)
        }
        assert.strictEqual(process?.attributes["messaging.consumer.group.name"], group)
        assert.strictEqual(process?.parentSpanContext?.spanId, send?.spanContext().spanId, "process is a child of send")
      }).pipe(
        Effect.provide(Layer.unwrapScoped(Effect.map(
          scopedVhost(`eb-otel-${runId}`),
          (vhost) => RabbitMQBroker.layer({ url: Redacted.make(urlFor(vhost)), prefix })
        ))),
        Effect.provide(otel.layer),
        Effect.scoped
      )
    },
    30_000
  )

  it.live("through a task too: a run of a task enqueued under a dropped trace records nothing", () => {
    const otel = makeOtel()
    const task = Task.make(uniqueName("otel_task"), { payload: Ping })
    return Effect.gen(function*() {
      const { done, handler } = yield* secondRun
      yield* Layer.launch(TaskQueue.worker(task, handler)).pipe(Effect.forkScoped)
      const traces = yield* sendUnderBoth(otel.exporter, (n) => TaskQueue.enqueue(task, { n }), done)
      assert.include(traces.sampled, `process ${task.topic.name}`)
      assert.deepStrictEqual(traces.dropped, [])
    }).pipe(
      Effect.provide(
        TaskQueue.layer().pipe(Layer.provideMerge(ResultStore.layerMemory), Layer.provideMerge(MemoryBroker.layer()))
      ),
      Effect.provide(otel.layer),
      Effect.scoped
    )
  }, 30_000)
})
