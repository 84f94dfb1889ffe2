import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Option, Schedule } from "effect"
import { nextRetryDelay } from "../../src/internal/retry.js"

const delays = (schedule: Schedule.Schedule<unknown, unknown>, attempts: number) =>
  Effect.forEach(
    Array.from({ length: attempts }, (_, i) => i + 1),
    (attempt) => Effect.map(nextRetryDelay(schedule, attempt, "boom"), Option.map(Duration.toMillis))
  )

describe("nextRetryDelay", () => {
  it.effect("recurs(3) allows exactly three retries, so four attempts", () =>
    Effect.gen(function*() {
      const result = yield* delays(Schedule.spaced("1 second").pipe(Schedule.intersect(Schedule.recurs(3))), 5)
      assert.deepStrictEqual(result, [
        Option.some(1000),
        Option.some(1000),
        Option.some(1000),
        Option.none(),
        Option.none()
      ])
    }))

  it.effect("exponential delays grow per attempt", () =>
    Effect.gen(function*() {
      const result = yield* delays(Schedule.exponential("100 millis"), 4)
      assert.deepStrictEqual(result, [Option.some(100), Option.some(200), Option.some(400), Option.some(800)])
    }))

  it.effect("a schedule filtered on the error stops at once for a non-retryable error", () =>
    Effect.gen(function*() {
      const schedule = Schedule.recurs(5).pipe(Schedule.whileInput((error: string) => error !== "fatal"))
      assert.isTrue(Option.isNone(yield* nextRetryDelay(schedule, 1, "fatal")))
      assert.isTrue(Option.isSome(yield* nextRetryDelay(schedule, 1, "transient")))
    }))
})
