/**
 * Publishing: a message succeeds on its PubAck (JetStream stored it per the stream's storage);
 * `publishAll` keeps up to `window` PubAcks in flight on the one connection, so the stream stores
 * them in publish order. A delayed message goes to the delay stream instead (see `mover.ts`).
 *
 * Failures: no stream captures the subject (NATS has no responder) → `unroutable`, definite; no
 * PubAck in time → `timeout`, ambiguous (it may be stored: publish again, the duplicate window
 * drops the copy); a JetStream refusal (limits, size) → `nacked`, definite; the connection
 * closed → `BrokerUnavailable`.
 */
import { JetStreamApiError, type JetStreamClient } from "@nats-io/jetstream"
import { ClosedConnectionError, DrainingConnectionError, RequestError, TimeoutError } from "@nats-io/transport-node"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { BrokerUnavailable, PublishRejected } from "../../BrokerError.js"
import type * as BrokerTransport from "../../BrokerTransport.js"
import * as codec from "./codec.js"
import type * as subjects from "./subjects.js"

type Failure = BrokerUnavailable | PublishRejected

/**
 * No stream captures the subject: the client wraps NATS's "no responders" (as "jetstream is not
 * enabled", which cannot be the case: it was checked at connect).
 *
 * @internal
 */
export const isNoResponders = (cause: unknown): boolean =>
  cause instanceof Error && cause.cause instanceof RequestError && cause.cause.isNoResponders()

/** @internal */
export const failure = (message: BrokerTransport.TransportMessage, cause: unknown): Failure => {
  const detail = cause instanceof Error ? cause.message : String(cause)
  const rejected = (reason: PublishRejected["reason"], ambiguous: boolean) =>
    new PublishRejected({ topic: message.routingKey, messageId: message.messageId, reason, ambiguous, detail })
  if (isNoResponders(cause)) {
    return new PublishRejected({
      topic: message.routingKey,
      messageId: message.messageId,
      reason: "unroutable",
      ambiguous: false,
      detail: "no stream captures this subject: no group is bound to the topic"
    })
  }
  if (cause instanceof TimeoutError) return rejected("timeout", true)
  if (cause instanceof JetStreamApiError) return rejected("nacked", false)
  if (cause instanceof ClosedConnectionError || cause instanceof DrainingConnectionError) {
    return new BrokerUnavailable({ reason: "closed", detail, cause })
  }
  return rejected("channel-closed", true)
}

/** @internal */
export interface Publisher {
  readonly send: (message: BrokerTransport.TransportMessage) => Promise<unknown>
  readonly publish: (message: BrokerTransport.TransportMessage) => Effect.Effect<void, Failure>
  readonly publishAll: (
    batch: BrokerTransport.TransportBatch,
    window: number
  ) => Effect.Effect<ReadonlyArray<Either.Either<void, Failure>>>
}

/** @internal */
export const make = (js: JetStreamClient, names: subjects.Names, timeout: number, now: () => number): Publisher => {
  const send = (message: BrokerTransport.TransportMessage): Promise<unknown> => {
    const delayed = message.delay !== undefined && message.delay > 0
    const headers = codec.encode(message, delayed ? now() + (message.delay ?? 0) : undefined)
    return js.publish(delayed ? names.delaySubject(message.routingKey) : message.routingKey, message.body, {
      headers,
      timeout,
      // Fail at once on "no responders" instead of the client's backoff-and-retry.
      retries: 1
    })
  }

  const publish = (message: BrokerTransport.TransportMessage): Effect.Effect<void, Failure> =>
    Effect.async<void, Failure>((resume) => {
      send(message).then(
        () => resume(Effect.void),
        (cause: unknown) => resume(Effect.fail(failure(message, cause)))
      )
    })

  // Plain promises inside: an Effect per in-flight message costs more than the PubAck round trip.
  // Freed slots are refilled once per macrotask rather than per PubAck: the client writes to the
  // socket once per microtask in which something was sent, so refilling per PubAck costs a write
  // per message.
  const publishAll = (batch: BrokerTransport.TransportBatch, window: number) =>
    Effect.async<ReadonlyArray<Either.Either<void, Failure>>>((resume) => {
      const results = new Array<Either.Either<void, Failure>>(batch.size)
      let next = 0
      let inFlight = 0
      let finished = false
      let scheduled = false
      const refill = (): void => {
        scheduled = false
        pump()
      }
      const settled = (): void => {
        inFlight--
        if (!scheduled) {
          scheduled = true
          setImmediate(refill)
        }
      }
      const pump = (): void => {
        while (inFlight < window && next < batch.size) {
          const index = next++
          const message = batch.prepare(index)
          if (message === undefined) {
            results[index] = Either.void
            continue
          }
          inFlight++
          send(message).then(
            () => {
              results[index] = Either.void
              settled()
            },
            (cause: unknown) => {
              results[index] = Either.left(failure(message, cause))
              settled()
            }
          )
        }
        if (!finished && next >= batch.size && inFlight === 0) {
          finished = true
          resume(Effect.succeed(results))
        }
      }
      pump()
    })

  return { send, publish, publishAll }
}
