/**
 * Publish delays: a delayed message is stored in the `<stream>_DELAY` work-queue stream with its
 * due time (`x-eb-not-before`); a durable consumer shared by every broker on the stream naks it
 * with the time left until it is due, then publishes it to its topic (same `Nats-Msg-Id`, so a
 * move retried after a crash is dropped as a duplicate) and acks it. Waiting messages sit in the
 * delay stream, not in any group's consumer, so they never hold a group's ack-pending slots or
 * count as its deliveries. A message whose topic no longer has a group is dropped, logged (as
 * RabbitMQ drops a delayed message no queue is bound to).
 */
import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg
} from "@nats-io/jetstream"
import { headers as natsHeaders } from "@nats-io/transport-node"
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type { BrokerUnavailable } from "../../BrokerError.js"
import * as codec from "./codec.js"
import { unavailable } from "./connection.js"
import { isNoResponders } from "./publisher.js"
import type * as subjects from "./subjects.js"

/** Delayed messages moved at once by one broker. */
const parallel = 256

/** @internal */
export const start = (
  js: JetStreamClient,
  jsm: JetStreamManager,
  names: subjects.Names,
  timeout: number
): Effect.Effect<void, BrokerUnavailable, Scope.Scope> =>
  Effect.gen(function*() {
    yield* Effect.tryPromise({
      try: () =>
        jsm.consumers.add(names.delayStream, {
          durable_name: names.mover,
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.All,
          ack_wait: 30_000_000_000,
          // Every waiting message is pending on this consumer.
          max_ack_pending: -1,
          max_deliver: -1
        }),
      catch: (cause) => unavailable("connect", `cannot create the delay consumer on ${names.delayStream}`, cause)
    })
    const runtime = yield* Effect.runtime<never>()
    const warn = (message: string, cause: unknown) => Runtime.runFork(runtime)(Effect.logWarning(message, cause))

    const move = (msg: JsMsg): Promise<void> => {
      const raw = codec.table(msg.headers)
      const due = Number(raw[codec.header.notBefore] ?? "0")
      const left = due - Date.now()
      if (left > 0) {
        msg.nak(left)
        return Promise.resolve()
      }
      const h = natsHeaders()
      for (const key in raw) {
        const value = raw[key]
        if (value !== undefined && key !== codec.header.notBefore) h.set(key, value)
      }
      return js.publish(msg.subject.slice(names.delayPrefix.length), msg.data, { headers: h, timeout, retries: 1 })
        .then(() => msg.ack(), (cause: unknown) => {
          if (isNoResponders(cause)) {
            warn("a delayed message was dropped: no group is bound to its topic any more", msg.subject)
            msg.term()
          } else {
            msg.nak(1000)
          }
        })
    }

    const run = Effect.acquireUseRelease(
      Effect.tryPromise({
        try: async () => (await js.consumers.get(names.delayStream, names.mover)).consume({ max_messages: parallel }),
        catch: (cause) => unavailable("connect", "cannot read the delay stream", cause)
      }),
      (messages: ConsumerMessages) =>
        Effect.promise(async () => {
          let running = 0
          let wake: (() => void) | undefined
          for await (const msg of messages) {
            running++
            void move(msg).finally(() => {
              running--
              wake?.()
            })
            while (running >= parallel) await new Promise<void>((resolve) => (wake = resolve))
          }
        }),
      (messages) =>
        Effect.interruptible(Effect.promise(() => messages.close().then(() => undefined, () => undefined))).pipe(
          Effect.timeout("5 seconds"),
          Effect.ignore
        )
    )
    yield* Effect.forkScoped(
      run.pipe(
        Effect.catchAllCause((cause) => Effect.logWarning("the delay mover stopped; restarting", cause)),
        Effect.repeat(Schedule.spaced("1 second"))
      )
    )
  })
