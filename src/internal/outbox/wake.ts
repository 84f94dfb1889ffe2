import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"

/**
 * In-process wake-ups: `add` signals dispatchers living in the same process directly, without a
 * round trip. Each dispatcher owns a sliding queue of capacity 1, so signals coalesce.
 *
 * @internal
 */
export interface LocalWake {
  readonly signal: () => void
  readonly register: (queue: Queue.Queue<void>) => Effect.Effect<void, never, Scope.Scope>
}

/** @internal */
export const make = (): LocalWake => {
  const queues = new Set<Queue.Queue<void>>()
  return {
    signal: () => {
      for (const queue of queues) Queue.unsafeOffer(queue, undefined)
    },
    register: (queue) =>
      Effect.acquireRelease(
        Effect.sync(() => queues.add(queue)),
        () => Effect.sync(() => queues.delete(queue))
      )
  }
}
