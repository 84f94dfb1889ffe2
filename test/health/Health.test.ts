import { HttpClient, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, Metric, MetricBoundaries, Scope, TestClock } from "effect"
import * as Health from "../../src/Health.js"
import * as HealthHttp from "../../src/HealthHttp.js"
import { uniqueName } from "../fixtures/env.js"

class Probe extends Context.Tag("test/Probe")<Probe, { readonly up: boolean }>() {}

class StoreDown {
  readonly _tag = "StoreDown"
  readonly message = "store unreachable"
}

describe("Health", () => {
  it.effect("is up when every check is up, keeping each check's own fields", () =>
    Effect.gen(function*() {
      const health = yield* Health.make({
        broker: Effect.succeed({ status: "up", detail: "connected", connection: "open", consumers: 2 } as const),
        outbox: Effect.succeed({ status: "up", pending: 0 } as const)
      })
      const report = yield* health.check
      assert.strictEqual(report.status, "up")
      assert.deepStrictEqual(Object.keys(report.checks).sort(), ["broker", "outbox"])
      assert.strictEqual(report.checks["broker"]?.["connection"], "open")
      assert.strictEqual(report.checks["broker"]?.["consumers"], 2)
      assert.strictEqual(report.checks["outbox"]?.["pending"], 0)
      assert.isNumber(report.checks["outbox"]?.durationMs)
    }))

  it.effect("is down when any check is down, fails, dies or times out, with the reason as detail", () =>
    Effect.gen(function*() {
      const health = yield* Health.make({
        fine: Effect.succeed({ status: "up" } as const),
        standby: Effect.succeed({ status: "down", detail: "lease lost" } as const),
        failing: Effect.fail(new StoreDown()),
        dying: Effect.die(new Error("bug in probe")),
        hanging: Effect.never
      }, { timeout: "2 seconds" })
      const fiber = yield* Effect.fork(health.check)
      yield* TestClock.adjust("2 seconds")
      const report = yield* Fiber.join(fiber)
      assert.strictEqual(report.status, "down")
      assert.strictEqual(report.checks["fine"]?.status, "up")
      assert.deepInclude(report.checks["standby"], { status: "down", detail: "lease lost" })
      assert.deepInclude(report.checks["failing"], { status: "down", detail: "store unreachable" })
      assert.strictEqual(report.checks["dying"]?.status, "down")
      assert.include(report.checks["dying"]?.detail ?? "", "bug in probe")
      assert.deepInclude(report.checks["hanging"], { status: "down", detail: "timed out after 2s" })
    }))

  it.effect("a check's requirements are captured when the service is built", () =>
    Effect.gen(function*() {
      const probe = Effect.map(Probe, ({ up }) => ({ status: up ? "up" : "down" } as const))
      const report = yield* Health.check.pipe(
        Effect.provide(Health.layer({ probe }).pipe(Layer.provide(Layer.succeed(Probe, { up: false }))))
      )
      assert.strictEqual(report.status, "down")
    }))

  it.effect("a registered check takes part until its Scope closes", () =>
    Effect.gen(function*() {
      const health = yield* Health.make({ base: Effect.succeed({ status: "up" } as const) })
      yield* Effect.scoped(Effect.gen(function*() {
        yield* health.register("worker", Effect.succeed({ status: "down", detail: "no consumers" }))
        const during = yield* health.check
        assert.strictEqual(during.status, "down")
        assert.strictEqual(during.checks["worker"]?.detail, "no consumers")
      }))
      const after = yield* health.check
      assert.strictEqual(after.status, "up")
      assert.deepStrictEqual(Object.keys(after.checks), ["base"])
    }))

  it.effect("a check registered again under the same name stays when the first registration's Scope closes", () =>
    Effect.gen(function*() {
      const health = yield* Health.make()
      const first = yield* Scope.make()
      yield* health.register("worker", Effect.succeed({ status: "down", detail: "first" })).pipe(Scope.extend(first))
      yield* Effect.scoped(Effect.gen(function*() {
        yield* health.register("worker", Effect.succeed({ status: "up", detail: "second" }))
        yield* Scope.close(first, Exit.void)
        const report = yield* health.check
        assert.strictEqual(report.checks["worker"]?.detail, "second")
      }))
      assert.deepStrictEqual(Object.keys((yield* health.check).checks), [])
    }))

  it.effect("renders counters, gauges, histograms and frequencies in the Prometheus text format", () =>
    Effect.gen(function*() {
      const prefix = uniqueName("eb")
      const published = Metric.counter(`${prefix}.published`, { description: "messages published", incremental: true })
        .pipe(
          Metric.tagged("topic", "orders.placed")
        )
      const pending = Metric.gauge(`${prefix}_pending`)
      const latency = Metric.histogram(`${prefix}_latency_ms`, MetricBoundaries.fromIterable([1, 10]))
      const outcomes = Metric.frequency(`${prefix}_outcome`)
      yield* Metric.incrementBy(published, 3)
      yield* Metric.set(pending, 7)
      yield* Metric.update(latency, 0.5)
      yield* Metric.update(latency, 5)
      yield* Metric.update(latency, 50)
      yield* Metric.update(outcomes, "ack \"ok\"")
      const text = yield* Health.prometheusText
      const name = prefix.replace(/[^a-zA-Z0-9_]/g, "_")
      const lines = text.split("\n")
      assert.include(lines, `# HELP ${name}_published messages published`)
      assert.include(lines, `# TYPE ${name}_published counter`)
      assert.include(lines, `${name}_published{topic="orders.placed"} 3`)
      assert.include(lines, `# TYPE ${name}_pending gauge`)
      assert.include(lines, `${name}_pending 7`)
      assert.include(lines, `# TYPE ${name}_latency_ms histogram`)
      assert.include(lines, `${name}_latency_ms_bucket{le="1"} 1`)
      assert.include(lines, `${name}_latency_ms_bucket{le="10"} 2`)
      assert.include(lines, `${name}_latency_ms_bucket{le="+Inf"} 3`)
      assert.include(lines, `${name}_latency_ms_sum 55.5`)
      assert.include(lines, `${name}_latency_ms_count 3`)
      assert.include(lines, `${name}_outcome{key="ack \\"ok\\""} 1`)
      assert.isTrue(text.endsWith("\n"))
    }))
})

describe("Health over HTTP", () => {
  const serve = (checks: Record<string, Health.Check>) =>
    HttpServer.serve(HealthHttp.router).pipe(
      Layer.provide(Health.layer(checks)),
      Layer.provideMerge(NodeHttpServer.layerTest)
    )

  it.scoped("GET /health answers 200 with the report when up", () =>
    Effect.gen(function*() {
      const response = yield* HttpClient.get("/health")
      assert.strictEqual(response.status, 200)
      const body = yield* response.json
      assert.deepInclude(body, { status: "up" })
    }).pipe(Effect.provide(serve({ db: Effect.succeed({ status: "up" }) }))))

  it.scoped("GET /health answers 503 when a check is down", () =>
    Effect.gen(function*() {
      const response = yield* HttpClient.get("/health")
      assert.strictEqual(response.status, 503)
      const body = yield* response.json
      assert.deepInclude(body, { status: "down" })
    }).pipe(Effect.provide(serve({ db: Effect.succeed({ status: "down", detail: "refused" }) }))))

  it.scoped("GET /metrics answers Prometheus text", () =>
    Effect.gen(function*() {
      const name = uniqueName("http_hits")
      yield* Metric.increment(Metric.counter(name))
      const response = yield* HttpClient.get("/metrics")
      assert.strictEqual(response.status, 200)
      assert.include(response.headers["content-type"] ?? "", "text/plain")
      const text = yield* response.text
      assert.include(text.split("\n"), `${name} 1`)
    }).pipe(Effect.provide(serve({}))))
})
