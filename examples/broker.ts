/**
 * `npm run example`: typed pub/sub with two consumer groups, a retried handler and a poison
 * message. Runs on the in-memory broker, or on RabbitMQ when RABBITMQ_URL is set.
 */
import { Console, Deferred, Effect, Layer, Option, Schedule, Schema } from "effect"
import { Broker } from "effect-background"
import * as MemoryBroker from "effect-background/layers/MemoryBroker"
import * as RabbitMQBroker from "effect-background/layers/RabbitMQBroker"

class OrderPlaced extends Schema.Class<OrderPlaced>("OrderPlaced")({
  orderId: Schema.String,
  amountCents: Schema.Int.pipe(Schema.positive()),
  placedAt: Schema.DateFromString
}) {}

const orderPlaced = Broker.topic("orders.placed", OrderPlaced)
const anyOrderEvent = Broker.pattern("orders.#", Schema.Unknown)

class PaymentGatewayDown extends Schema.TaggedError<PaymentGatewayDown>()("PaymentGatewayDown", {}) {}

const program = Effect.gen(function*() {
  const broker = yield* Broker.Broker
  const billed = yield* Deferred.make<void>()
  const audited = yield* Deferred.make<void>()
  let billingAttempts = 0

  // Group "billing": fails twice (gateway down), succeeds on the third attempt.
  yield* Broker.subscribe(orderPlaced, (order, envelope) =>
    Effect.gen(function*() {
      billingAttempts++
      if (envelope.attempt < 3) {
        yield* Console.log(`billing: attempt ${envelope.attempt} for ${order.orderId} failed, will retry`)
        return yield* new PaymentGatewayDown()
      }
      yield* Console.log(
        `billing: charged ${order.amountCents} cents for ${order.orderId} on attempt ${envelope.attempt}`
      )
      yield* Deferred.succeed(billed, undefined)
    }), {
    group: "example.billing",
    retry: Schedule.spaced("100 millis").pipe(Schedule.intersect(Schedule.recurs(5)))
  })

  // Group "audit": every orders.* event, whatever its shape.
  yield* Broker.subscribe(
    anyOrderEvent,
    (event, envelope) =>
      Console.log(`audit: ${envelope.topic} ${envelope.id} ${JSON.stringify(event)}`).pipe(
        Effect.zipRight(Deferred.succeed(audited, undefined))
      ),
    { group: "example.audit" }
  )

  yield* Broker.publish(orderPlaced, new OrderPlaced({ orderId: "o-1", amountCents: 4200, placedAt: new Date() }), {
    correlationId: "checkout-17"
  })
  yield* Console.log("published orders.placed (confirmed by the broker)")

  // A producer with a bug: not JSON. Billing dead-letters it at once; audit's pattern also rejects it.
  yield* broker.publishAllEncoded([{ topic: "orders.placed", body: "{not json", messageId: "poison-1" }])

  // The Schema refuses a bad message before anything is sent.
  const refused = yield* Effect.flip(
    Broker.publish(orderPlaced, new OrderPlaced({ orderId: "o-2", amountCents: 1, placedAt: new Date() }), {
      priority: 999
    })
  )
  yield* Console.log(`refused before sending: ${refused.message}`)

  yield* Deferred.await(billed)
  yield* Deferred.await(audited)
  yield* Console.log(`done: billing ran ${billingAttempts} attempts; health: ${JSON.stringify(yield* Broker.health)}`)
})

const brokerLayer = Layer.unwrapEffect(
  Effect.map(Effect.sync(() => Option.fromNullable(process.env["RABBITMQ_URL"])), (url) =>
    Option.isSome(url)
      ? RabbitMQBroker.layerConfig(RabbitMQBroker.config)
      : MemoryBroker.layer())
)

Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(brokerLayer), Effect.timeout("30 seconds"))).then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`${error}\n`)
    process.exit(1)
  }
)
