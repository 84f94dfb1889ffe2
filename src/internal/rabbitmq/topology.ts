import type * as Amqp from "amqplib"

/**
 * Names and declarations of everything the RabbitMQ transport creates. Every name starts with
 * the layer's prefix and its second word names the kind (retry and delay queues then carry a
 * number), so no group name can collide with another kind:
 *
 * - `<prefix>.topic`            durable topic exchange every message is published to
 * - `<prefix>.delay`            durable headers exchange for delayed publishes (`x-eb-delay`)
 * - `<prefix>.delay.<ms>`       per-delay queue: TTL `<ms>`, dead-letters to `<prefix>.topic`
 *                               keeping the routing key; expires when unused
 * - `<prefix>.group.<group>`    a subscription group's durable queue, bound to its pattern
 * - `<prefix>.retry.<ms>.<group>` per-delay retry queue of a group: TTL `<ms>`, dead-letters
 *                               to the group queue through the default exchange; expires when unused
 * - `<prefix>.dlq.<group>`      the group's dead-letter queue (`x-eb-dead-reason` header)
 *
 * @internal
 */
export interface Names {
  readonly exchange: string
  readonly delayExchange: string
  readonly group: (group: string) => string
  readonly deadLetter: (group: string) => string
  readonly retry: (group: string, ms: number) => string
  readonly delay: (ms: number) => string
}

/** @internal */
export const names = (prefix: string): Names => ({
  exchange: `${prefix}.topic`,
  delayExchange: `${prefix}.delay`,
  group: (group) => `${prefix}.group.${group}`,
  deadLetter: (group) => `${prefix}.dlq.${group}`,
  retry: (group, ms) => `${prefix}.retry.${ms}.${group}`,
  delay: (ms) => `${prefix}.delay.${ms}`
})

/** RabbitMQ's `x-message-ttl` is an unsigned 32-bit number of milliseconds. @internal */
export const maxDelayMs = 0xffff_ffff - 1

/**
 * Rounds a delay up to two significant digits (1234 → 1300 ms): a queue exists per distinct
 * delay, so jittered schedules would otherwise create one queue per message. Never earlier than
 * asked, at most ~10 % later.
 *
 * @internal
 */
export const bucketDelay = (ms: number): number => {
  const whole = Math.ceil(ms)
  if (whole < 100) return Math.max(1, whole)
  const step = 10 ** (Math.floor(Math.log10(whole)) - 1)
  return Math.min(maxDelayMs, Math.ceil(whole / step) * step)
}

/**
 * A TTL queue expires when nobody declared it for `expires` ms; messages inside do not keep it
 * alive. So the lease is long (2 × TTL + 1 min) and `isFresh` says when to declare it again so
 * that a message published now always outlives its TTL in the queue.
 *
 * @internal
 */
export const expiresFor = (ttl: number): number => Math.min(0x7fff_ffff, 2 * ttl + 60_000)

/** @internal */
export const isFresh = (ttl: number, declaredAt: number, now: number): boolean => now - declaredAt < ttl + 30_000

/** @internal */
export type QueueType = "classic" | "quorum"

/** @internal */
export const declareExchanges = async (channel: Amqp.Channel, n: Names): Promise<void> => {
  await channel.assertExchange(n.exchange, "topic", { durable: true })
  await channel.assertExchange(n.delayExchange, "headers", { durable: true })
}

/** @internal */
export const declareGroup = async (
  channel: Amqp.Channel,
  n: Names,
  options: {
    readonly group: string
    readonly pattern: string
    readonly queueType: QueueType
    readonly maxPriority: number | undefined
  }
): Promise<void> => {
  const args: Record<string, unknown> = { "x-queue-type": options.queueType }
  if (options.maxPriority !== undefined) args["x-max-priority"] = options.maxPriority
  await channel.assertQueue(n.group(options.group), { durable: true, arguments: args })
  await channel.bindQueue(n.group(options.group), n.exchange, options.pattern)
  await channel.assertQueue(n.deadLetter(options.group), {
    durable: true,
    arguments: { "x-queue-type": options.queueType }
  })
}

/** @internal */
export const declareRetry = async (channel: Amqp.Channel, n: Names, group: string, ms: number): Promise<void> => {
  await channel.assertQueue(n.retry(group, ms), {
    durable: true,
    arguments: {
      "x-queue-type": "classic",
      "x-message-ttl": ms,
      "x-dead-letter-exchange": "",
      "x-dead-letter-routing-key": n.group(group),
      "x-expires": expiresFor(ms)
    }
  })
}

/** @internal */
export const delayHeader = "x-eb-delay"

/** @internal */
export const declareDelay = async (channel: Amqp.Channel, n: Names, ms: number): Promise<void> => {
  await channel.assertQueue(n.delay(ms), {
    durable: true,
    arguments: {
      "x-queue-type": "classic",
      "x-message-ttl": ms,
      "x-dead-letter-exchange": n.exchange,
      "x-expires": expiresFor(ms)
    }
  })
  // A headers exchange leaves `x-` headers out of matching unless told otherwise (RabbitMQ 3.10+):
  // with plain "all", this binding would match every delayed message, whatever its delay.
  await channel.bindQueue(n.delay(ms), n.delayExchange, "", { "x-match": "all-with-x", [delayHeader]: String(ms) })
  // The match-everything binding earlier builds declared: removed (a no-op when absent).
  await channel.unbindQueue(n.delay(ms), n.delayExchange, "", { "x-match": "all", [delayHeader]: String(ms) })
}

/** RabbitMQ refused to redeclare a queue with other arguments (406 PRECONDITION_FAILED). @internal */
export const isPreconditionFailed = (error: unknown): boolean =>
  typeof error === "object" && error !== null && "code" in error && error.code === 406
