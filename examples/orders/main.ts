/**
 * The orders example: web, outbox dispatcher, workers and scheduler in one process.
 *
 *   npm run example              # embedded PostgreSQL (PGlite) + in-memory broker, port 3000
 *   DATABASE_URL=postgres://… RABBITMQ_URL=amqp://… npm run example
 *   npm run example -- --once    # run the start-up scenario, then exit (CI)
 *
 * On start it places three orders through its own HTTP API and waits until all are confirmed:
 * POST /orders → order row + outbox event (one transaction) → dispatcher publishes
 * `orders.placed` → subscriber enqueues `send_confirmation` → worker marks the order confirmed.
 */
import { FetchHttpClient, HttpClient, HttpClientRequest, HttpServer } from "@effect/platform"
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Console, Duration, Effect, Layer, Schema } from "effect"
import { TaskQueue } from "effect-background"
import * as Health from "effect-background/Health"
import * as PgLease from "effect-background/layers/PgLease"
import * as PgOutbox from "effect-background/layers/PgOutbox"
import * as PgResultStore from "effect-background/layers/PgResultStore"
import { Scheduler } from "effect-background"
import { createServer } from "node:http"
import * as Checks from "./health.js"
import { router } from "./http.js"
import { Embedded, environment, Infrastructure } from "./infra.js"
import * as Orders from "./orders.js"
import { schedules } from "./schedules.js"
import { consumerCount, Workers } from "./workers.js"

const once = process.argv.includes("--once")

const Migrations = Layer.effectDiscard(Orders.migrate)

const Outbox = Layer.unwrapEffect(Effect.map(Embedded, (embedded) =>
  PgOutbox.layer({
    // PGlite runs in this process: the dispatcher is woken in-process, nothing to LISTEN on.
    listen: !embedded.database,
    notify: !embedded.database,
    pollInterval: "500 millis",
    retention: { maxAge: "1 hour", every: "5 minutes" }
  })))

const Tasks = TaskQueue.layer().pipe(Layer.provide(PgResultStore.layer()))

const Schedules = Scheduler.layerService(schedules).pipe(Layer.provide(PgLease.layer()))

const Http = Layer.unwrapEffect(Effect.map(environment, (env) =>
  HttpServer.serve(router).pipe(
    Layer.provideMerge(NodeHttpServer.layer(() => createServer(), { port: once ? 0 : env.port }))
  )))

export const App = Layer.mergeAll(Http, Workers).pipe(
  Layer.provideMerge(Health.layer(Checks.checks(consumerCount))),
  Layer.provideMerge(Schedules),
  Layer.provideMerge(Outbox),
  Layer.provideMerge(Tasks),
  Layer.provideMerge(Migrations),
  Layer.provideMerge(Infrastructure)
)

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

const program = Effect.gen(function*() {
  const server = yield* HttpServer.HttpServer
  const embedded = yield* Embedded
  const port = server.address._tag === "TcpAddress" ? server.address.port : 0
  const baseUrl = `http://localhost:${port}`
  yield* Console.log([
    `orders example listening on ${baseUrl} (database: ${embedded.database ? "embedded PGlite" : "DATABASE_URL"},`,
    ` broker: ${embedded.broker ? "in-memory" : "RABBITMQ_URL"})`
  ].join(""))
  yield* Console.log(
    `try: curl -s -XPOST ${baseUrl}/orders -H 'content-type: application/json' -d '{"email":"you@example.com","totalCents":4200}'`
  )
  const started = Date.now()
  yield* scenario(baseUrl)
  yield* Console.log(`scenario done in ${Duration.format(Duration.millis(Date.now() - started))}`)
  if (!once) {
    yield* Console.log(`also: curl -s ${baseUrl}/health ; curl -s ${baseUrl}/metrics`)
    return yield* Effect.never
  }
})

program.pipe(Effect.provide(App), NodeRuntime.runMain)
