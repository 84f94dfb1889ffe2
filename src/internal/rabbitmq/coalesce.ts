import type * as Amqp from "amqplib"

/**
 * amqplib writes every frame (a publish, an ack) to the socket on its own: one `write` syscall
 * each, which on loopback also carries the packet through the kernel to RabbitMQ. Its muxer moves
 * frames from the channels to the socket in bursts; corking the socket for one burst sends the
 * burst as a single `writev`. Measured here: confirmed publishing went from 17–19 to 11–13 µs of
 * CPU per message.
 *
 * The muxer is not public API, so its shape is checked and nothing is changed when it differs
 * (a later amqplib): frames then go out one by one as before.
 *
 * @internal
 */
export const coalesceWrites = (model: Amqp.ChannelModel): boolean => {
  const connection: unknown = Reflect.get(model, "connection")
  if (typeof connection !== "object" || connection === null) return false
  const muxer: unknown = Reflect.get(connection, "muxer")
  const stream: unknown = Reflect.get(connection, "stream")
  if (typeof muxer !== "object" || muxer === null || !isCorkable(stream)) return false
  const flush: unknown = Reflect.get(muxer, "_readIncoming")
  if (typeof flush !== "function") return false
  Reflect.set(muxer, "_readIncoming", function(this: unknown) {
    stream.cork()
    try {
      Reflect.apply(flush, this, [])
    } finally {
      stream.uncork()
    }
  })
  return true
}

interface Corkable {
  cork(): void
  uncork(): void
}

const isCorkable = (stream: unknown): stream is Corkable =>
  typeof stream === "object" && stream !== null &&
  typeof Reflect.get(stream, "cork") === "function" && typeof Reflect.get(stream, "uncork") === "function"
