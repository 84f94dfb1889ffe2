import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as Intervals from "effect/ScheduleIntervals"

/**
 * The delay a retry `Schedule` asks for before attempt `attempt + 1`, or None when it is
 * exhausted. Deliveries carry no schedule state across the wire, so the schedule is replayed
 * from its initial state `attempt` times with the failure as input (cheap: schedules are pure
 * step functions, and attempts are few).
 *
 * @internal
 */
export const nextRetryDelay = <E, R>(
  schedule: Schedule.Schedule<unknown, E, R>,
  attempt: number,
  error: E
): Effect.Effect<Option.Option<Duration.Duration>, never, R> =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    let state: unknown = schedule.initial
    let delay = Option.none<Duration.Duration>()
    for (let i = 0; i < attempt; i++) {
      const [next, , decision] = yield* schedule.step(now, error, state)
      if (ScheduleDecision.isDone(decision)) return Option.none()
      state = next
      delay = Option.some(Duration.millis(Math.max(0, Intervals.start(decision.intervals) - now)))
    }
    return delay
  })
