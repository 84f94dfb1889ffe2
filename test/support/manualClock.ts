/**
 * A `Clock` that moves only when told to, for stress tests that advance time thousands of times:
 * `TestClock.adjust` waits for the test's fibers to suspend with real timers on every due sleep,
 * which costs milliseconds per step. Here a due sleep is resumed at its own instant, in order,
 * and the caller's fiber yields a few times so the woken fibers run before time moves on.
 */
import { Clock, Duration, Effect } from "effect"

interface Sleeper {
  readonly at: number
  readonly seq: number
  readonly wake: () => void
}

export interface ManualClock extends Clock.Clock {
  /** Moves time forward by `millis`, waking every sleep due on the way at its own instant. */
  readonly advance: (millis: number) => Effect.Effect<void>
  /** Sleeps not yet due. */
  readonly pending: () => number
}

export const makeManualClock = (turnsPerWake = 4): ManualClock => {
  let now = 0
  let seq = 0
  const sleepers: Array<Sleeper> = []
  const earliest = (): Sleeper | undefined => {
    let first: Sleeper | undefined
    for (const sleeper of sleepers) {
      if (first === undefined || sleeper.at < first.at || (sleeper.at === first.at && sleeper.seq < first.seq)) {
        first = sleeper
      }
    }
    return first
  }
  const yieldTurns = Effect.forEach(Array.from({ length: turnsPerWake }), () => Effect.yieldNow(), { discard: true })
  const advance = (millis: number): Effect.Effect<void> =>
    Effect.suspend(() => {
      const target = now + millis
      const loop: Effect.Effect<void> = Effect.suspend(() => {
        const next = earliest()
        if (next === undefined || next.at > target) {
          now = target
          return yieldTurns
        }
        sleepers.splice(sleepers.indexOf(next), 1)
        now = Math.max(now, next.at)
        next.wake()
        return Effect.zipRight(yieldTurns, loop)
      })
      // Fibers that are about to sleep register first.
      return Effect.zipRight(yieldTurns, loop)
    })
  return {
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: () => now,
    currentTimeMillis: Effect.sync(() => now),
    unsafeCurrentTimeNanos: () => BigInt(now) * 1_000_000n,
    currentTimeNanos: Effect.sync(() => BigInt(now) * 1_000_000n),
    sleep: (duration: Duration.Duration) =>
      Effect.async<void>((resume) => {
        const sleeper: Sleeper = { at: now + Duration.toMillis(duration), seq: seq++, wake: () => resume(Effect.void) }
        sleepers.push(sleeper)
        return Effect.sync(() => {
          const index = sleepers.indexOf(sleeper)
          if (index >= 0) sleepers.splice(index, 1)
        })
      }),
    advance,
    pending: () => sleepers.length
  }
}
