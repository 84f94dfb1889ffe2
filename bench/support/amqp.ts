import type * as Amqp from "amqplib"

/**
 * The raw amqplib baseline every bench compares against: `count` persistent messages with up to
 * `window` confirms in flight, pausing on write backpressure ('drain'). Resolves once all are
 * confirmed; rejects on the first nack.
 */
export const publishConfirmedWindow = (
  channel: Amqp.ConfirmChannel,
  target: {
    readonly exchange: string
    readonly routingKey: string
    readonly mandatory: boolean
    /** The properties RabbitMQBroker puts on every message: a UUID message id. */
    readonly oursProperties?: boolean
  },
  count: number,
  window: number,
  body: (n: number) => Buffer
): Promise<void> =>
  new Promise<void>((resolve, reject) => {
    let sent = 0
    let confirmed = 0
    let inFlight = 0
    let blocked = false
    const pump = () => {
      while (!blocked && inFlight < window && sent < count) {
        const n = sent++
        inFlight++
        const options: Amqp.Options.Publish = {
          persistent: true,
          contentType: "application/json",
          messageId: `raw-${n}`
        }
        if (target.mandatory) options.mandatory = true
        if (target.oursProperties === true) options.messageId = crypto.randomUUID()
        const ok = channel.publish(target.exchange, target.routingKey, body(n), options, (error) => {
          if (error !== null && error !== undefined) return reject(error)
          inFlight--
          if (++confirmed === count) resolve()
          else pump()
        })
        if (!ok) blocked = true
      }
    }
    const onDrain = () => {
      blocked = false
      pump()
    }
    channel.on("drain", onDrain)
    pump()
  }).finally(() => channel.removeAllListeners("drain"))
