/**
 * The message contracts of the orders example: what producers and consumers share. No handler
 * code here, so any process (web, worker, scheduler) can import it, and
 * `npm run asyncapi -- examples/orders/contracts.ts` documents it.
 */
import { Schedule, Schema } from "effect"
import { Broker, Task } from "effect-background"

export const asyncapiInfo = {
  title: "Orders example",
  version: "0.1.0",
  description: "Orders placed over HTTP, published through the transactional outbox, confirmed by a task worker."
}

export const OrderPlaced = Schema.Struct({
  orderId: Schema.UUID,
  email: Schema.String,
  totalCents: Schema.Int.pipe(Schema.nonNegative()),
  placedAt: Schema.String.annotations({ description: "ISO 8601 instant" })
}).annotations({ identifier: "OrderPlaced", description: "An order was stored; emitted through the outbox" })

/** Emitted in the same transaction as the order row. */
export const ordersPlaced = Broker.topic("orders.placed", OrderPlaced)

export class MailboxUnavailable extends Schema.TaggedError<MailboxUnavailable>()("MailboxUnavailable", {
  email: Schema.String
}) {}

/** Sends the confirmation and marks the order confirmed; retried on transient mail failures. */
export const sendConfirmation = Task.make("send_confirmation", {
  payload: Schema.Struct({ orderId: Schema.UUID, email: Schema.String }),
  success: Schema.Struct({ confirmedAt: Schema.String }),
  failure: MailboxUnavailable,
  retry: Schedule.exponential("100 millis").pipe(Schedule.intersect(Schedule.recurs(3))),
  timeout: "10 seconds"
})

/** Weekday-morning digest of the previous day's orders. */
export const dailyDigest = Task.make("daily_digest", {
  payload: Schema.Struct({ reason: Schema.Literal("cron", "manual") })
})

/** Deletes outbox events dispatched more than an hour ago (run by the scheduler, one replica at a time). */
export const outboxRetention = Task.make("outbox_retention", {
  payload: Schema.Struct({ maxAgeMinutes: Schema.Number })
})

/** A liveness ping on an interval. */
export const heartbeat = Task.make("heartbeat", {
  payload: Schema.Struct({ from: Schema.String })
})
