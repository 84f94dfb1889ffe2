/**
 * Acknowledgements of one consumer channel, part of the consumer kernel (see `consumer.ts`).
 * What it guarantees, given that the consumer settles each delivery tag at most once:
 *
 * - Each tag reaches the broker settled exactly once: an ack on its own, an ack `multiple`
 *   covering it, or a nack (requeue).
 * - A `multiple` ack never covers a tag the consumer has not settled: it is sent for the last tag
 *   of the contiguous run of settled tags from the lowest unsettled one (tags on a channel are
 *   consecutive from 1, and tags already settled at the broker inside the run are skipped by
 *   RabbitMQ's own rule).
 * - Acks are coalesced once per microtask: the contiguous run goes out as one frame; acks above
 *   a gap (a slow handler) go out one by one in the same flush, so a slow message never holds
 *   the prefetch window. Nacks go out at once.
 * - Memory does not grow with the messages that pass a slow one: tags above the lowest unsettled
 *   one that were already sent are kept as ranges, so what the acker holds is bounded by the
 *   unsettled tags (each one separates two ranges) plus the acks of the current microtask, and
 *   no message is kept once its ack was sent.
 * - A channel that is gone makes amqplib throw: reported to `onError` and dropped; the broker
 *   redelivers whatever it had not seen settled.
 *
 * Checked by `test/broker/acker.stress.test.ts` (a fake channel with RabbitMQ's rules) and
 * `test/broker/consumer.stress.test.ts`.
 *
 * @internal
 */
import type * as Amqp from "amqplib"

/**
 * Settles the deliveries of one consumer channel (see the module comment). Each ack or nack
 * frame is a socket write in amqplib, so coalescing saves most of them under load.
 *
 * @internal
 */
export class Acker {
  /** The lowest tag not yet known to be settled. */
  private low = 1
  /** Acks asked for since the last flush, by tag. */
  private readonly pending = new Map<number, Amqp.Message>()
  /** Tags above `low` already settled at the broker, as sorted, disjoint, non-adjacent [from, to]. */
  private readonly sent: Array<{ from: number; to: number }> = []
  private scheduled = false
  /** Set once the channel closed: what it delivered and is not settled, the broker redelivers. */
  closed = false

  constructor(
    readonly channel: Amqp.Channel,
    private readonly onError: (operation: string, error: unknown) => void
  ) {}

  ack(message: Amqp.Message): void {
    this.pending.set(message.fields.deliveryTag, message)
    this.schedule()
  }

  /** Requeues at once (the message goes back to the queue for another consumer). */
  nack(message: Amqp.Message): void {
    try {
      this.channel.nack(message, false, true)
    } catch (error) {
      this.onError("nack", error)
    }
    this.markSent(message.fields.deliveryTag)
    this.schedule()
  }

  /** Entries held (pending acks and ranges of sent tags); for tests. */
  retained(): number {
    return this.pending.size + this.sent.length
  }

  private schedule(): void {
    if (this.scheduled) return
    this.scheduled = true
    queueMicrotask(() => this.flush())
  }

  /** Records `tag` as settled at the broker, merging it into its neighbouring ranges. */
  private markSent(tag: number): void {
    const ranges = this.sent
    // Usually the newest tag: past every range.
    let at = ranges.length
    const last = ranges[at - 1]
    if (last !== undefined && tag <= last.to) {
      let lo = 0
      let hi = ranges.length
      while (lo < hi) {
        const mid = (lo + hi) >>> 1
        const range = ranges[mid]
        if (range !== undefined && range.from <= tag) lo = mid + 1
        else hi = mid
      }
      at = lo
    }
    const before = ranges[at - 1]
    const after = ranges[at]
    if (before !== undefined && tag <= before.to) return
    const joinsBefore = before !== undefined && before.to === tag - 1
    const joinsAfter = after !== undefined && after.from === tag + 1
    if (joinsBefore && joinsAfter) {
      before.to = after.to
      ranges.splice(at, 1)
    } else if (joinsBefore) before.to = tag
    else if (joinsAfter) after.from = tag
    else ranges.splice(at, 0, { from: tag, to: tag })
  }

  /** Sends what is pending now (also called before the channel closes). */
  flush(): void {
    this.scheduled = false
    let tag = this.low
    let last: Amqp.Message | undefined
    while (true) {
      const message = this.pending.get(tag)
      if (message !== undefined) {
        last = message
        this.pending.delete(tag)
        tag++
        continue
      }
      const range = this.sent[0]
      if (range === undefined || range.from !== tag) break
      tag = range.to + 1
      this.sent.shift()
    }
    this.low = tag
    try {
      if (last !== undefined) this.channel.ack(last, true)
      for (const [above, message] of this.pending) {
        this.channel.ack(message, false)
        this.markSent(above)
      }
    } catch (error) {
      // The channel is gone; the broker requeues whatever it had not seen acked.
      this.onError("ack", error)
    } finally {
      this.pending.clear()
    }
  }
}
