import type * as Amqp from "amqplib"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { BrokerUnavailable } from "../../BrokerError.js"
import { headers as libraryHeaders } from "../wire.js"
import type { Manager } from "./connection.js"
import { copyOptions, expiresAtHeader } from "./consumer.js"
import type * as topology from "./topology.js"

/** Dead letters moved per confirm round trip. */
const batchSize = 100

/**
 * What a dead letter carries that a fresh delivery must not: why it died, how often it ran, and
 * its retries' deadline (a redriven message starts its expiration again).
 */
const deathHeaders = new Set<string>([
  libraryHeaders.deadReason,
  libraryHeaders.group,
  libraryHeaders.lastError,
  libraryHeaders.attempt,
  expiresAtHeader
])

/** The dead letter's copy in the group queue: fresh attempts, the original routing key kept. */
const revived = (message: Amqp.GetMessage): Amqp.Options.Publish => {
  const messageId: unknown = message.properties.messageId
  return copyOptions(message, {
    messageId: typeof messageId === "string" ? messageId : undefined,
    persistent: true,
    dropped: deathHeaders
  })
}

/**
 * Moves up to `max` dead letters from `from` to `to`, in batches: get, publish the copies, wait
 * for their confirms, then ack the originals — so a failure leaves every message in one queue
 * or, at worst, in both (never in neither). Bounded by the dead-letter count at the start, so
 * messages that die again meanwhile are not cycled.
 */
const move = async (model: Amqp.ChannelModel, from: string, to: string, max: number): Promise<number> => {
  const channel = await model.createConfirmChannel()
  let failed: unknown
  // A 404 or a channel error closes only this channel; the error is reported by the awaits.
  channel.on("error", (error: unknown) => {
    failed = error
  })
  let returned = 0
  channel.on("return", () => {
    returned++
  })
  try {
    const dead = await channel.checkQueue(from).catch((error: unknown) => {
      // No dead-letter queue: the group never dead-lettered anything (or was never declared).
      if (isNotFound(error)) return undefined
      throw error
    })
    if (dead === undefined) return 0
    const { messageCount } = dead
    await channel.checkQueue(to)
    const limit = Math.min(max, messageCount)
    let moved = 0
    while (moved < limit) {
      const batch: Array<Amqp.GetMessage> = []
      while (batch.length < Math.min(batchSize, limit - moved)) {
        const message = await channel.get(from, { noAck: false })
        if (message === false) break
        batch.push(message)
      }
      const last = batch[batch.length - 1]
      if (last === undefined) break
      for (const message of batch) channel.publish("", to, message.content, revived(message))
      try {
        await channel.waitForConfirms()
        if (returned > 0) throw new Error(`queue ${to} no longer routes (${returned} copies returned)`)
      } catch (error) {
        // Back to the dead-letter queue; copies already routed stay (duplicates, never losses). On a
        // closed channel the broker puts back every unacked get itself.
        try {
          channel.nack(last, true, true)
        } catch {
          // closed: see above
        }
        throw error
      }
      channel.ack(last, true)
      moved += batch.length
    }
    return moved
  } catch (error) {
    throw failed ?? error
  } finally {
    await channel.close().catch(() => undefined)
  }
}

const isNotFound = (error: unknown): boolean =>
  typeof error === "object" && error !== null && Reflect.get(error, "code") === 404

/** @internal */
export const make =
  (manager: Manager, names: topology.Names, timeout: Duration.Duration) =>
  (group: string, max: number): Effect.Effect<number, BrokerUnavailable> =>
    Effect.flatMap(manager.awaitOpen(timeout), (connection) =>
      Effect.tryPromise({
        try: () => move(connection.model, names.deadLetter(group), names.group(group), max),
        catch: (error) =>
          new BrokerUnavailable({
            reason: "closed",
            detail: `redriving the dead letters of group "${group}" failed: ${manager.describeError(error)}`
          })
      }))
