/**
 * Background work: a subscriber turns each `orders.placed` event into a `send_confirmation` task;
 * workers run the tasks. Runs beside the web server by default, or in its own process with
 * `--role=worker` (`npm run example:worker`).
 */
import { Effect, Layer, Metric, Option } from "effect"
import { Broker, Inbox, Outbox, TaskQueue } from "effect-background"
import * as PgInbox from "effect-background/layers/PgInbox"
import {
  dailyDigest,
  heartbeat,
  MailboxUnavailable,
  ordersPlaced,
  outboxRetention,
  sendConfirmation
} from "./contracts.js"
import * as Orders from "./orders.js"

/**
 * Each placed order gets one confirmation task: the order id is the dedup key, so a redelivered
 * event finds the key taken and gets the first task's handle back.
 */
const confirmations = Layer.scopedDiscard(
  Broker.subscribe(
    ordersPlaced,
    (event) =>
      TaskQueue.enqueue(sendConfirmation, { orderId: event.orderId, email: event.email }, { key: event.orderId }),
    { group: "orders.confirmations", concurrency: 20 }
  )
)

const confirmationsSent = Metric.counter("orders_confirmations_sent", { description: "confirmation mails sent" })

/**
 * Through the inbox: each task id runs once, in one transaction with the order's update, so a
 * redelivered task (a worker killed after its commit, a connection cut before the ack) neither
 * confirms nor mails twice, and gets the first run's result back.
 */
const sendConfirmationWorker = TaskQueue.worker(
  sendConfirmation,
  Inbox.worker(sendConfirmation, (payload, context) =>
    Effect.gen(function*() {
      // A real app would call its mail provider here; a typed failure is retried by the task's policy.
      if (payload.email.endsWith("@unreachable.invalid")) {
        return yield* new MailboxUnavailable({ email: payload.email })
      }
      const confirmedAt = yield* Orders.confirm(payload.orderId).pipe(Effect.orDie)
      yield* Metric.increment(confirmationsSent)
      yield* Effect.logInfo(`order ${payload.orderId} confirmed (attempt ${context.attempt})`)
      return { confirmedAt: Option.getOrElse(confirmedAt, () => new Date()).toISOString() }
    })),
  { concurrency: 10 }
).pipe(Layer.provide(PgInbox.layer({ prefix: "eb_orders" })))

const digestWorker = TaskQueue.worker(dailyDigest, (payload) =>
  Orders.counts.pipe(
    Effect.orDie,
    Effect.flatMap((counts) => Effect.logInfo(`daily digest (${payload.reason}): ${JSON.stringify(counts)}`))
  ))

const heartbeats = Metric.counter("orders_heartbeats", { description: "heartbeat tasks run" })

const heartbeatWorker = TaskQueue.worker(
  heartbeat,
  (payload) => Metric.increment(heartbeats).pipe(Effect.zipRight(Effect.logDebug(`heartbeat from ${payload.from}`)))
)

const retentionWorker = TaskQueue.worker(
  outboxRetention,
  (payload) =>
    Outbox.prune({ maxAge: `${payload.maxAgeMinutes} minutes` }).pipe(
      Effect.orDie,
      Effect.flatMap((deleted) =>
        Effect.logInfo(`outbox retention: ${deleted} dispatched events older than ${payload.maxAgeMinutes} min deleted`)
      )
    )
)

export const Workers = Layer.mergeAll(
  confirmations,
  sendConfirmationWorker,
  digestWorker,
  heartbeatWorker,
  retentionWorker
)

/** Subscriptions this process runs, for its health check. */
export const consumerCount = 5
