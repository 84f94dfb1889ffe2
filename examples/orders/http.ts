/**
 * HTTP: `POST /orders`, `GET /orders/:id`, plus `GET /health` and `GET /metrics` from HealthHttp.
 */
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect, Option, Schema } from "effect"
import * as HealthHttp from "effect-background/HealthHttp"
import * as Orders from "./orders.js"

const problem = (status: number, detail: string) => HttpServerResponse.unsafeJson({ error: detail }, { status })

const placeOrder = Effect.gen(function*() {
  const input = yield* HttpServerRequest.schemaBodyJson(Orders.PlaceOrder)
  const order = yield* Orders.place(input)
  return HttpServerResponse.unsafeJson(order, { status: 201, headers: { location: `/orders/${order.id}` } })
}).pipe(
  Effect.catchTags({
    ParseError: (error) => Effect.succeed(problem(400, error.message)),
    RequestError: (error) => Effect.succeed(problem(400, error.message))
  })
)

const getOrder = Effect.gen(function*() {
  const { id } = yield* HttpRouter.schemaPathParams(Schema.Struct({ id: Schema.UUID }))
  const order = yield* Orders.find(id)
  return Option.match(order, {
    onNone: () => problem(404, `no order ${id}`),
    onSome: (order) => HttpServerResponse.unsafeJson(order)
  })
}).pipe(Effect.catchTag("ParseError", () => Effect.succeed(problem(404, "no such order"))))

export const router = HttpRouter.empty.pipe(
  HttpRouter.post("/orders", placeOrder),
  HttpRouter.get("/orders/:id", getOrder),
  HttpRouter.concat(HealthHttp.router)
)
