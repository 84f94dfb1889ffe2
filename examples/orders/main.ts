/**
 * The orders example: web, outbox dispatcher, workers and scheduler in one process.
 *
 *   npm run example              # embedded PostgreSQL (PGlite) + in-memory broker, port 3000
 *   DATABASE_URL=postgres://… RABBITMQ_URL=amqp://… npm run example
 *   npm run example -- --once    # run the start-up scenario, then exit (CI)
 *   npm run example -- --role=web     # production shape: HTTP + outbox dispatcher (needs both URLs)
 *   npm run example -- --role=worker  # task workers + scheduler, /health on PORT or 3001
 *
 * On start it places three orders through its own HTTP API and waits until all are confirmed:
 * POST /orders → order row + outbox event (one transaction) → dispatcher publishes
 * `orders.placed` → subscriber enqueues `send_confirmation` → worker marks the order confirmed.
 */
import { FetchHttpClient, HttpClient, HttpClientRequest, type HttpRouter, HttpServer } from "@effect/platform"
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import type { SqlClient } from "@effect/sql"
import { Console, Duration, Effect, Layer, Schema } from "effect"
import { type Broker, TaskQueue } from "effect-background"
import { Scheduler } from "effect-background"
import * as Health from "effect-background/Health"
import * as HealthHttp from "effect-background/HealthHttp"
import * as HealthSql from "effect-background/HealthSql"
import * as PgLease from "effect-background/layers/PgLease"
import * as PgOutbox from "effect-background/layers/PgOutbox"
import * as PgResultStore from "effect-background/layers/PgResultStore"
import { createServer } from "node:http"
import { router } from "./http.js"
import { Embedded, environment, Infrastructure } from "./infra.js"
import * as Orders from "./orders.js"
import { schedules } from "./schedules.js"
import { consumerCount, Workers } from "./workers.js"

const once = process.argv.includes("--once")

/**
 * `all` (default): everything in this process. In production run `web` (HTTP + outbox
 * dispatcher) and `worker` (task workers + scheduler) as separate processes, any number of
 * each; they share PostgreSQL and RabbitMQ, so both URLs are required.
 */
type Role = "all" | "web" | "worker"
const roleArg = process.argv.find((arg) => arg.startsWith("--role="))?.slice("--role=".length) ?? "all"

const Migrations = Layer.effectDiscard(Orders.migrate)

const Outbox = Layer.unwrapEffect(Effect.map(Embedded, (embedded) =>
  PgOutbox.layer({
    // PGlite runs in this process: the dispatcher is woken in-process, nothing to LISTEN on.
    listen: !embedded.database,
    notify: !embedded.database,
    pollInterval: "500 millis",
    // Retention runs as a scheduled task (schedules.ts), on one replica.
    retention: false
  })))

/** The outbox's store alone, for the worker role's retention task. */
const OutboxStore = Layer.unwrapEffect(
  Effect.map(Embedded, (embedded) => PgOutbox.layerStore({ notify: !embedded.database }))
)

const Tasks = TaskQueue.layer().pipe(Layer.provide(PgResultStore.layer()))

const Schedules = Scheduler.layerService(schedules).pipe(Layer.provide(PgLease.layer()))

const serve = <E, R>(app: HttpRouter.HttpRouter<E, R>, defaultPort: number) =>
  Layer.unwrapEffect(Effect.map(environment, (env) =>
    HttpServer.serve(app).pipe(
      Layer.provideMerge(NodeHttpServer.layer(() => createServer(), { port: once ? 0 : env.port ?? defaultPort }))
    )))

type Provided = Broker.Broker | SqlClient.SqlClient | Embedded

const appFor = (role: Role): Layer.Layer<HttpServer.HttpServer, unknown, Provided> => {
  switch (role) {
    case "all":
      return Layer.mergeAll(serve(router, 3000), Workers).pipe(
        Layer.provideMerge(Health.layer({
          broker: Health.broker,
          database: HealthSql.ping,
          outbox: Health.outbox({ maxLag: "30 seconds" }),
          scheduler: Health.scheduler,
          workers: Health.consumers(consumerCount)
        })),
        Layer.provideMerge(Schedules),
        Layer.provideMerge(Outbox),
        Layer.provideMerge(Tasks),
        Layer.provideMerge(Migrations)
      )
    case "web":
      return serve(router, 3000).pipe(
        Layer.provideMerge(
          Health.layer({
            broker: Health.broker,
            database: HealthSql.ping,
            outbox: Health.outbox({ maxLag: "30 seconds" })
          })
        ),
        Layer.provideMerge(Outbox),
        Layer.provideMerge(Migrations)
      )
    case "worker":
      return Layer.mergeAll(serve(HealthHttp.router, 3001), Workers).pipe(
        Layer.provideMerge(Health.layer({
          broker: Health.broker,
          database: HealthSql.ping,
          scheduler: Health.scheduler,
          workers: Health.consumers(consumerCount)
        })),
        Layer.provideMerge(Schedules),
        Layer.provideMerge(OutboxStore),
        Layer.provideMerge(Tasks),
        Layer.provideMerge(Migrations)
      )
  }
}

const App = Layer.unwrapEffect(Effect.gen(function*() {
  const role = roleArg
  if (role !== "all" && role !== "web" && role !== "worker") {
    return yield* Effect.fail(new Error(`--role must be all, web or worker (got ${role})`))
  }
  const embedded = yield* Embedded
  if (role !== "all" && (embedded.database || embedded.broker)) {
    return yield* Effect.fail(
      new Error(
        "--role=web|worker needs DATABASE_URL and a broker URL: RABBITMQ_URL, NATS_URL or REDIS_URL (processes share them)"
      )
    )
  }
  return appFor(role)
})).pipe(Layer.provideMerge(Infrastructure))

const OrderJson = Schema.Struct({ id: Schema.String, status: Schema.String, email: Schema.String })

/** Places three orders over HTTP and waits (bounded) until each is confirmed. */
const scenario = (baseUrl: string) =>
  Effect.gen(function*() {
    const client = (yield* HttpClient.HttpClient).pipe(
      HttpClient.mapRequest(HttpClientRequest.prependUrl(baseUrl)),
      HttpClient.filterStatusOk
    )
    const placed = yield* Effect.forEach(["ada", "grace", "barbara"], (name, i) =>
      client.execute(
        HttpClientRequest.post("/orders").pipe(
          HttpClientRequest.bodyUnsafeJson({ email: `${name}@example.com`, totalCents: 1000 * (i + 1) })
        )
      ).pipe(
        Effect.flatMap((response) => response.json),
        Effect.flatMap(Schema.decodeUnknown(OrderJson))
      ))
    for (const order of placed) yield* Console.log(`placed    ${order.id} for ${order.email} (${order.status})`)
    const confirmed = yield* Effect.forEach(placed, (order) =>
      client.get(`/orders/${order.id}`).pipe(
        Effect.flatMap((response) => response.json),
        Effect.flatMap(Schema.decodeUnknown(OrderJson)),
        Effect.tap((o) => o.status === "confirmed" ? Effect.void : Effect.sleep("100 millis")),
        Effect.repeat({ until: (o) => o.status === "confirmed" }),
        Effect.timeoutFail({
          duration: "30 seconds",
          onTimeout: () => new Error(`order ${order.id} was not confirmed within 30 s`)
        })
      ), { concurrency: "unbounded" })
    for (const order of confirmed) yield* Console.log(`confirmed ${order.id} for ${order.email}`)
    const health = yield* client.get("/health").pipe(
      Effect.flatMap((response) => response.json),
      Effect.flatMap(Schema.decodeUnknown(Schema.Struct({ status: Schema.String })))
    )
    yield* Console.log(`health    ${health.status}`)
  }).pipe(Effect.provide(FetchHttpClient.layer))

/** The broker URL the example runs on (the precedence of `infra.ts`). */
const brokerVariable = (): string =>
  ["NATS_URL", "RABBITMQ_URL", "REDIS_URL"].find((name) => process.env[name] !== undefined) ?? "none"

const program = Effect.gen(function*() {
  const server = yield* HttpServer.HttpServer
  const embedded = yield* Embedded
  const port = server.address._tag === "TcpAddress" ? server.address.port : 0
  const baseUrl = `http://localhost:${port}`
  yield* Console.log([
    `orders example (${roleArg}) listening on ${baseUrl} (database: ${
      embedded.database ? "embedded PGlite" : "DATABASE_URL"
    },`,
    ` broker: ${embedded.broker ? "in-memory" : brokerVariable()})`
  ].join(""))
  if (roleArg !== "worker") {
    yield* Console.log(
      `try: curl -s -XPOST ${baseUrl}/orders -H 'content-type: application/json' -d '{"email":"you@example.com","totalCents":4200}'`
    )
  }
  // The worker role has no orders API; the scenario needs a worker somewhere (this or another process).
  if (roleArg !== "worker") {
    const started = Date.now()
    yield* scenario(baseUrl)
    yield* Console.log(`scenario done in ${Duration.format(Duration.millis(Date.now() - started))}`)
  }
  if (!once) {
    yield* Console.log(`also: curl -s ${baseUrl}/health ; curl -s ${baseUrl}/metrics`)
    return yield* Effect.never
  }
})

program.pipe(Effect.provide(App), NodeRuntime.runMain)
