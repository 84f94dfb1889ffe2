import type * as Amqp from "amqplib"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { Manager } from "./connection.js"

/**
 * Settles once the channel is closed: by the broker's close-ok, or by the 'close' event amqplib
 * emits when the connection goes. amqplib's own `close()` promise never settles when the
 * connection drops while the close is under way, which held the release of a layer for the
 * whole timeout around it.
 */
const closed = (channel: Amqp.Channel): Promise<void> =>
  new Promise<void>((resolve, reject) => {
    const onClose = () => resolve()
    channel.once("close", onClose)
    // Already closed (or closing), amqplib throws at once: a rejection like any other.
    Promise.resolve().then(() => channel.close()).then(
      () => {
        channel.off("close", onClose)
        resolve()
      },
      (error: unknown) => {
        channel.off("close", onClose)
        reject(error)
      }
    )
  })

/**
 * Closes `channel` (named `what` in the debug line a failure leaves), waiting at most `timeout`:
 * a channel not closed by then goes with its connection. Interruptible, though run by finalizers.
 *
 * @internal
 */
export const closeChannel = (
  channel: Amqp.Channel,
  timeout: Duration.Duration,
  manager: Manager,
  what: string
): Effect.Effect<void> =>
  Effect.tryPromise(() => closed(channel)).pipe(
    Effect.interruptible,
    Effect.timeout(timeout),
    Effect.catchAll((error) => Effect.logDebug(`closing ${what}: ${manager.describeError(error)}`))
  )
