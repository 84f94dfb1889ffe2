import * as Effect from "effect/Effect"

/**
 * Resumes on the event loop's next check phase: I/O callbacks queued meanwhile (confirms,
 * replies) run, and writes the client scheduled for this turn go out (amqplib and node-redis
 * both write on a later turn). Transports yield here between slices of a batch, so the server
 * works on one slice while the next is encoded.
 *
 * @internal
 */
export const yieldToEventLoop: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})
