import type * as Amqp from "amqplib"

const Pending = 0
const Sent = 1

/**
 * Settles the deliveries of one consumer channel. Acks are coalesced once per microtask: the
 * contiguous run of settled delivery tags from the lowest unsettled one goes out as a single
 * `basic.ack multiple`, and acks above a gap (a slow handler) go out one by one right away, so a
 * slow message never holds the prefetch window. Nacks are sent at once. Each ack or nack frame
 * is a socket write in amqplib, so this saves most of them under load.
 *
 * Safe because delivery tags on a channel are consecutive from 1, and a multiple ack only ever
 * covers tags this channel has already settled.
 *
 * @internal
 */
export class Acker {
  private low = 1
  private readonly settled = new Map<number, { state: typeof Pending | typeof Sent; message: Amqp.Message }>()
  private scheduled = false
  /** Set once the channel closed: what it delivered and is not settled, the broker redelivers. */
  closed = false

  constructor(
    readonly channel: Amqp.Channel,
    private readonly onError: (operation: string, error: unknown) => void
  ) {}

  ack(message: Amqp.Message): void {
    this.settled.set(message.fields.deliveryTag, { state: Pending, message })
    this.schedule()
  }

  /** Requeues at once (the message goes back to the queue for another consumer). */
  nack(message: Amqp.Message): void {
    try {
      this.channel.nack(message, false, true)
    } catch (error) {
      this.onError("nack", error)
    }
    this.settled.set(message.fields.deliveryTag, { state: Sent, message })
    this.schedule()
  }

  private schedule(): void {
    if (this.scheduled) return
    this.scheduled = true
    queueMicrotask(() => this.flush())
  }

  /** Sends what is pending now (also called before the channel closes). */
  flush(): void {
    this.scheduled = false
    let tag = this.low
    let last: Amqp.Message | undefined
    for (let entry = this.settled.get(tag); entry !== undefined; entry = this.settled.get(tag)) {
      if (entry.state === Pending) last = entry.message
      this.settled.delete(tag)
      tag++
    }
    this.low = tag
    try {
      if (last !== undefined) this.channel.ack(last, true)
      for (const entry of this.settled.values()) {
        if (entry.state === Pending) {
          this.channel.ack(entry.message, false)
          entry.state = Sent
        }
      }
    } catch (error) {
      // The channel is gone; the broker requeues whatever it had not seen acked.
      this.onError("ack", error)
    }
  }
}
