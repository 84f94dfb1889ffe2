import type * as Amqp from "amqplib"

/**
 * Closes a channel and settles once it is closed: by the broker's close-ok, or by the 'close'
 * event amqplib emits when the connection goes. amqplib's own `close()` promise never settles
 * when the connection drops while the close is under way, which held the release of a layer
 * for the whole timeout around it.
 *
 * @internal
 */
export const closeChannel = (channel: Amqp.Channel): Promise<void> =>
  new Promise<void>((resolve, reject) => {
    const closed = () => resolve()
    channel.once("close", closed)
    // Already closed (or closing), amqplib throws at once: a rejection like any other.
    Promise.resolve().then(() => channel.close()).then(
      () => {
        channel.off("close", closed)
        resolve()
      },
      (error: unknown) => {
        channel.off("close", closed)
        reject(error)
      }
    )
  })
