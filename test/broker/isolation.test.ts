/**
 * The typed front isolates each delivery itself: a deliberately naive transport (one long-lived
 * fiber, deliveries one after another, nothing reset between them) must see no context, log
 * annotation, span or scope leak from one delivery into the next, nor into its own fiber.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Either, FiberRef, HashMap, Layer, Option, Queue, Schema, Scope } from "effect"
import * as Broker from "../../src/Broker.js"
import type * as BrokerTransport from "../../src/BrokerTransport.js"
import * as Task from "../../src/Task.js"
import * as TaskQueue from "../../src/TaskQueue.js"
import { plainCapabilities } from "../fixtures/transport.js"

class Marker extends Context.Tag("test/isolation/Marker")<Marker, number>() {}

const traceId = "0af7651916cd43dd8448eb211c80319c"
const producerSpan = `00-${traceId}-b7ad6b7169203331-01`

const message = (id: string, traceparent: string | undefined): BrokerTransport.TransportMessage => ({
  routingKey: "isolation.checked",
  body: Buffer.from(JSON.stringify({ id }), "utf8"),
  headers: {},
  metadata: traceparent === undefined ? {} : { traceparent },
  messageId: id,
  correlationId: undefined,
  publishedAt: 0,
  priority: undefined,
  expiration: undefined,
  delay: undefined,
  persistent: true
})

/** What the naive transport's own fiber looked like before and after each delivery. */
interface TransportView {
  readonly context: Context.Context<never>
  readonly annotations: HashMap.HashMap<string, unknown>
}

const view = Effect.all({
  context: FiberRef.get(FiberRef.currentContext),
  annotations: FiberRef.get(FiberRef.currentLogAnnotations)
})

/**
 * Consumes a fixed list of messages on the fiber that calls `consume`, one after another, and
 * records the dispositions and its own fiber's locals around each delivery.
 */
const naiveTransport = (messages: ReadonlyArray<BrokerTransport.TransportMessage>) => {
  const dispositions: Array<BrokerTransport.Disposition["_tag"]> = []
  const around: Array<{ readonly before: TransportView; readonly after: TransportView }> = []
  const transport: BrokerTransport.Transport = {
    capabilities: plainCapabilities("naive"),
    publish: () => Effect.void,
    publishAll: (batch) => Effect.succeed(Array.from({ length: batch.size }, () => Either.void)),
    consume: (_subscription, handle) =>
      Effect.gen(function*() {
        for (const received of messages) {
          const before = yield* view
          const disposition = yield* handle({ message: received, attempt: 1, redelivered: false })
          dispositions.push(disposition._tag)
          around.push({ before, after: yield* view })
        }
      }),
    health: Effect.succeed({ status: "up", connection: "open", consumers: 0, detail: "naive" })
  }
  return { transport, dispositions, around }
}

const Checked = Schema.Struct({ id: Schema.String })
const checked = Broker.topic("isolation.checked", Checked)

/** What a handler saw of its fiber when it started. */
interface Seen {
  readonly id: string
  readonly marker: Option.Option<number>
  readonly leaked: Option.Option<unknown>
  readonly parentTraceId: string | undefined
}

describe("per-delivery isolation by the typed front", () => {
  it.scoped("a handler's context, annotations and parent span do not leak into the next delivery or the transport", () =>
    Effect.gen(function*() {
      const naive = naiveTransport([
        message("first", producerSpan),
        message("second", undefined),
        message("third", undefined)
      ])
      const broker = Broker.make(naive.transport)
      const seen: Array<Seen> = []
      yield* broker.subscribe(checked, (payload) =>
        Effect.gen(function*() {
          const parent = yield* Effect.option(Effect.currentParentSpan)
          seen.push({
            id: payload.id,
            marker: yield* Effect.serviceOption(Marker),
            leaked: HashMap.get(yield* FiberRef.get(FiberRef.currentLogAnnotations), "leaked"),
            parentTraceId: Option.getOrUndefined(Option.map(parent, (span) => span.traceId))
          })
          // What a careless handler (or a fast-path library) may do: set locals for the rest of the fiber.
          yield* FiberRef.update(FiberRef.currentContext, (context) => Context.add(context, Marker, seen.length))
          yield* FiberRef.update(FiberRef.currentLogAnnotations, HashMap.set<string, unknown>("leaked", payload.id))
          yield* FiberRef.update(FiberRef.currentLogSpan, (spans) => spans)
        }), { group: "isolation" })

      assert.deepStrictEqual(naive.dispositions, ["Ack", "Ack", "Ack"])
      assert.deepStrictEqual(seen.map((s) => s.id), ["first", "second", "third"])
      for (const s of seen) {
        assert.isTrue(Option.isNone(s.marker), `${s.id} saw the Marker a previous delivery set`)
        assert.isTrue(Option.isNone(s.leaked), `${s.id} saw the annotation a previous delivery set`)
      }
      assert.strictEqual(seen[0]?.parentTraceId, traceId, "the first delivery runs under its producer's span")
      assert.strictEqual(seen[1]?.parentTraceId, undefined, "the second has no producer span, and not the first one's")
      for (const { after, before } of naive.around) {
        assert.strictEqual(after.context, before.context, "the transport fiber's context is put back")
        assert.strictEqual(after.annotations, before.annotations, "the transport fiber's annotations are put back")
      }
    }))

  it.scoped("each task run gets its own Scope, closed when the run ends, on a transport that resets nothing", () =>
    Effect.gen(function*() {
      const work = Task.make("isolation_scoped", { payload: Schema.Struct({ id: Schema.String }) })
      const ids = ["a", "b", "c"]
      const naive = naiveTransport(ids.map((id) => ({ ...message(id, undefined), routingKey: work.topic.name })))
      const closed = yield* Queue.unbounded<string>()
      const scopes: Array<Scope.Scope> = []
      const annotations: Array<Option.Option<unknown>> = []
      const layer = TaskQueue.worker(work, (payload) =>
        Effect.gen(function*() {
          const scope = yield* Scope.Scope
          scopes.push(scope)
          annotations.push(HashMap.get(yield* FiberRef.get(FiberRef.currentLogAnnotations), "taskId"))
          yield* Scope.addFinalizer(scope, Queue.offer(closed, payload.id))
        }))
      yield* Effect.provideService(Layer.build(layer), Broker.Broker, Broker.make(naive.transport))
      assert.deepStrictEqual(naive.dispositions, ["Ack", "Ack", "Ack"])
      assert.deepStrictEqual(yield* Queue.takeAll(closed).pipe(Effect.map((chunk) => Array.from(chunk))), ids)
      assert.strictEqual(new Set(scopes).size, 3, "a distinct Scope per run")
      assert.deepStrictEqual(
        annotations,
        ids.map((id) => Option.some(id)),
        "each run is annotated with its own task id only"
      )
      for (const { after, before } of naive.around) {
        assert.strictEqual(after.context, before.context)
        assert.strictEqual(after.annotations, before.annotations)
      }
    }))
})
