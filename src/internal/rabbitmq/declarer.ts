import type * as Amqp from "amqplib"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { BrokerUnavailable } from "../../BrokerError.js"
import { closeChannel } from "./closeChannel.js"
import type { Manager } from "./connection.js"
import { isFresh } from "./topology.js"

/**
 * Declares retry and delay queues on first use, on a channel of its own (a failed declaration
 * closes only that channel), and again after a reconnect or when the queue's `x-expires` lease
 * needs renewing.
 *
 * @internal
 */
export interface Declarer {
  readonly ensure: (
    name: string,
    ttl: number,
    declare: (channel: Amqp.Channel) => Promise<void>
  ) => Effect.Effect<void, BrokerUnavailable>
  /** Closes the topology channel (layer release), waiting at most `timeout`. */
  readonly close: (timeout: Duration.Duration) => Effect.Effect<void>
}

/** @internal */
export const make = (manager: Manager, timeout: Duration.Duration): Effect.Effect<Declarer> =>
  Effect.sync(() => {
    const declared = new Map<string, { readonly generation: number; readonly at: number }>()
    let current: { readonly channel: Amqp.Channel; readonly generation: number; closed: boolean } | undefined
    const lock = Effect.unsafeMakeSemaphore(1)

    const channel = Effect.gen(function*() {
      if (current !== undefined && !current.closed) return current
      const connection = yield* manager.awaitOpen(timeout)
      const created = yield* Effect.tryPromise({
        try: () => connection.model.createChannel(),
        catch: (error) => new BrokerUnavailable({ reason: "closed", detail: manager.describeError(error) })
      }).pipe(
        Effect.catchAll((error) =>
          Effect.flatMap(Deferred.isDone(connection.closed), (gone) =>
            gone
              ? Effect.flatMap(manager.awaitOpen(timeout, connection.generation), (next) =>
                Effect.tryPromise({
                  try: () => next.model.createChannel(),
                  catch: (e) => new BrokerUnavailable({ reason: "closed", detail: manager.describeError(e) })
                }))
              : Effect.fail(error))
        )
      )
      const entry = { channel: created, generation: connection.generation, closed: false }
      created.on("error", (error: unknown) =>
        manager.log({ level: "warning", message: `topology channel error: ${manager.describeError(error)}` }))
      created.on("close", () => {
        entry.closed = true
      })
      current = entry
      return entry
    })

    const ensure: Declarer["ensure"] = (name, ttl, declare) =>
      Effect.clockWith((clock) => {
        const known = declared.get(name)
        const open = current
        if (
          known !== undefined && open !== undefined && !open.closed && known.generation === open.generation &&
          isFresh(ttl, known.at, clock.unsafeCurrentTimeMillis())
        ) {
          return Effect.void
        }
        return lock.withPermits(1)(
          Effect.gen(function*() {
            const target = yield* channel
            yield* Effect.tryPromise({
              try: () =>
                declare(target.channel),
              catch: (error) =>
                new BrokerUnavailable({
                  reason: "closed",
                  detail: `declaring ${name} failed: ${manager.describeError(error)}`
                })
            })
            declared.set(name, { generation: target.generation, at: clock.unsafeCurrentTimeMillis() })
          })
        )
      })

    const close = (closeTimeout: Duration.Duration) =>
      Effect.suspend(() => {
        const open = current
        current = undefined
        if (open === undefined || open.closed) {
          return Effect.void
        }
        return closeChannel(open.channel, closeTimeout, manager, "the topology channel")
      })

    return { ensure, close } satisfies Declarer
  })
