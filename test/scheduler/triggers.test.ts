import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Either, Fiber, Schedule, TestClock } from "effect"
import { InvalidOptions } from "../../src/InvalidOptions.js"
import * as SchedulerError from "../../src/SchedulerError.js"
import * as Trigger from "../../src/Trigger.js"

const ms = (iso: string) => new Date(iso).getTime()
const iso = (t: number) => new Date(t).toISOString()

/**
 * Drives the trigger's Effect Schedule on the TestClock from `from` and returns the first `count`
 * slots, checking each fired exactly at its slot instant.
 */
const slots = (trigger: Trigger.Trigger, from: string, count: number) =>
  Effect.gen(function*() {
    yield* TestClock.setTime(ms(from))
    const schedule = yield* Trigger.toSchedule(trigger)
    const driver = yield* Schedule.driver(schedule)
    const fiber = yield* Effect.fork(Effect.gen(function*() {
      const out: Array<string> = []
      for (let i = 0; i < count; i++) {
        const slot = yield* driver.next(undefined).pipe(Effect.option)
        if (slot._tag === "None") break
        const now = yield* Clock.currentTimeMillis
        assert.strictEqual(iso(now), iso(slot.value), "fired exactly at its slot")
        out.push(iso(slot.value))
      }
      return out
    }))
    yield* TestClock.adjust("3650 days")
    return yield* Fiber.join(fiber)
  })

const invalid = (trigger: Trigger.Trigger, from = "2026-01-01T00:00:00Z") =>
  Effect.gen(function*() {
    yield* TestClock.setTime(ms(from))
    const result = yield* Effect.either(Trigger.toSchedule(trigger, "job"))
    assert.isTrue(Either.isLeft(result), "expected InvalidSchedule")
    if (Either.isRight(result)) throw new Error("unreachable")
    assert.strictEqual(result.left._tag, "InvalidSchedule")
    return result.left
  })

describe("Scheduler triggers (TestClock)", () => {
  describe("cron", () => {
    it.effect("5 fields, UTC by default", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* slots(Trigger.cron("0 12 * * *"), "2026-01-01T00:00:00Z", 2), [
          "2026-01-01T12:00:00.000Z",
          "2026-01-02T12:00:00.000Z"
        ])
      }))

    it.effect("6 fields with seconds", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* slots(Trigger.cron("*/15 * * * * *"), "2026-01-01T00:00:00Z", 5), [
          "2026-01-01T00:00:15.000Z",
          "2026-01-01T00:00:30.000Z",
          "2026-01-01T00:00:45.000Z",
          "2026-01-01T00:01:00.000Z",
          "2026-01-01T00:01:15.000Z"
        ])
      }))

    it.effect("every second crosses minute and hour boundaries", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* slots(Trigger.cron("* * * * * *"), "2026-01-01T00:59:58.500Z", 3), [
          "2026-01-01T00:59:59.000Z",
          "2026-01-01T01:00:00.000Z",
          "2026-01-01T01:00:01.000Z"
        ])
      }))

    it.effect("ranges, steps, lists and names (MON-FRI, JAN)", () =>
      Effect.gen(function*() {
        // 2026-01-01 is a Thursday.
        assert.deepStrictEqual(yield* slots(Trigger.cron("0 9 * JAN MON-FRI"), "2026-01-01T00:00:00Z", 3), [
          "2026-01-01T09:00:00.000Z",
          "2026-01-02T09:00:00.000Z",
          "2026-01-05T09:00:00.000Z"
        ])
        assert.deepStrictEqual(yield* slots(Trigger.cron("0 8-16/4,23 * * *"), "2026-01-01T00:00:00Z", 5), [
          "2026-01-01T08:00:00.000Z",
          "2026-01-01T12:00:00.000Z",
          "2026-01-01T16:00:00.000Z",
          "2026-01-01T23:00:00.000Z",
          "2026-01-02T08:00:00.000Z"
        ])
      }))

    it.effect("L: last day of month, last Friday", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* slots(Trigger.cron("0 12 L * *"), "2026-01-01T00:00:00Z", 3), [
          "2026-01-31T12:00:00.000Z",
          "2026-02-28T12:00:00.000Z",
          "2026-03-31T12:00:00.000Z"
        ])
        assert.deepStrictEqual(yield* slots(Trigger.cron("0 12 * * 5L"), "2026-01-01T00:00:00Z", 2), [
          "2026-01-30T12:00:00.000Z",
          "2026-02-27T12:00:00.000Z"
        ])
      }))

    it.effect("#: the second Friday", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* slots(Trigger.cron("0 12 * * 5#2"), "2026-01-01T00:00:00Z", 3), [
          "2026-01-09T12:00:00.000Z",
          "2026-02-13T12:00:00.000Z",
          "2026-03-13T12:00:00.000Z"
        ])
      }))

    it.effect("nicknames", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* slots(Trigger.cron("@daily"), "2026-01-01T10:00:00Z", 2), [
          "2026-01-02T00:00:00.000Z",
          "2026-01-03T00:00:00.000Z"
        ])
        assert.deepStrictEqual(yield* slots(Trigger.cron("@hourly"), "2026-01-01T10:30:00Z", 1), [
          "2026-01-01T11:00:00.000Z"
        ])
        assert.deepStrictEqual(yield* slots(Trigger.cron("@weekly"), "2026-01-01T00:00:00Z", 1), [
          "2026-01-04T00:00:00.000Z"
        ])
      }))

    it.effect("IANA zone", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(
          yield* slots(Trigger.cron("0 12 * * *", { tz: "Europe/Berlin" }), "2026-01-01T00:00:00Z", 1),
          ["2026-01-01T11:00:00.000Z"]
        )
      }))

    it.effect("fixed offsets as \"-03:00\", \"+05:30\", a Duration and \"-3 hours\"", () =>
      Effect.gen(function*() {
        const from = "2026-01-01T00:00:00Z"
        assert.deepStrictEqual(yield* slots(Trigger.cron("0 12 * * *", { offset: "-03:00" }), from, 1), [
          "2026-01-01T15:00:00.000Z"
        ])
        assert.deepStrictEqual(yield* slots(Trigger.cron("0 12 * * *", { offset: "+05:30" }), from, 1), [
          "2026-01-01T06:30:00.000Z"
        ])
        assert.deepStrictEqual(yield* slots(Trigger.cron("0 12 * * *", { offset: "5 hours" }), from, 1), [
          "2026-01-01T07:00:00.000Z"
        ])
        assert.deepStrictEqual(yield* slots(Trigger.cron("0 12 * * *", { offset: "-3 hours" }), from, 1), [
          "2026-01-01T15:00:00.000Z"
        ])
        // A fixed offset has no DST: 12:00 at -03:00 stays 15:00Z in summer.
        assert.deepStrictEqual(
          yield* slots(Trigger.cron("0 12 * * *", { offset: "-03:00" }), "2026-07-01T00:00:00Z", 1),
          [
            "2026-07-01T15:00:00.000Z"
          ]
        )
      }))
  })

  describe("DST (2026): a daily job fires once per day, never twice, never skipped", () => {
    it.effect("Europe/Berlin spring-forward: 02:30 does not exist on 29 March, fires at 03:30 CEST", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(
          yield* slots(Trigger.cron("30 2 * * *", { tz: "Europe/Berlin" }), "2026-03-27T23:00:00Z", 3),
          ["2026-03-28T01:30:00.000Z", "2026-03-29T01:30:00.000Z", "2026-03-30T00:30:00.000Z"]
        )
      }))

    it.effect("Europe/Berlin fall-back: 02:30 happens twice on 25 October, fires once (CEST)", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(
          yield* slots(Trigger.cron("30 2 * * *", { tz: "Europe/Berlin" }), "2026-10-23T23:00:00Z", 3),
          ["2026-10-24T00:30:00.000Z", "2026-10-25T00:30:00.000Z", "2026-10-26T01:30:00.000Z"]
        )
      }))

    it.effect("America/New_York spring-forward: 02:30 on 8 March fires at 03:30 EDT", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(
          yield* slots(Trigger.cron("30 2 * * *", { tz: "America/New_York" }), "2026-03-07T05:00:00Z", 3),
          ["2026-03-07T07:30:00.000Z", "2026-03-08T07:30:00.000Z", "2026-03-09T06:30:00.000Z"]
        )
      }))

    it.effect("America/New_York fall-back: 01:30 repeats on 1 November and fires once (EDT); 02:30 once (EST)", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(
          yield* slots(Trigger.cron("30 1 * * *", { tz: "America/New_York" }), "2026-10-31T04:00:00Z", 3),
          ["2026-10-31T05:30:00.000Z", "2026-11-01T05:30:00.000Z", "2026-11-02T06:30:00.000Z"]
        )
        assert.deepStrictEqual(
          yield* slots(Trigger.cron("30 2 * * *", { tz: "America/New_York" }), "2026-10-31T04:00:00Z", 3),
          ["2026-10-31T06:30:00.000Z", "2026-11-01T07:30:00.000Z", "2026-11-02T07:30:00.000Z"]
        )
      }))
  })

  describe("interval, one-shot, combined", () => {
    it.effect("interval slots are aligned to the epoch (or an anchor), so replicas agree", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* slots(Trigger.interval("1 second"), "2026-01-01T00:00:12.300Z", 3), [
          "2026-01-01T00:00:13.000Z",
          "2026-01-01T00:00:14.000Z",
          "2026-01-01T00:00:15.000Z"
        ])
        const anchor = new Date("2026-01-01T00:00:00.250Z")
        assert.deepStrictEqual(yield* slots(Trigger.interval("10 seconds", { anchor }), "2026-01-01T00:00:05Z", 2), [
          "2026-01-01T00:00:10.250Z",
          "2026-01-01T00:00:20.250Z"
        ])
      }))

    it.effect("at fires once and the schedule is then done", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(
          yield* slots(Trigger.at(new Date("2026-02-01T08:00:00Z")), "2026-01-01T00:00:00Z", 5),
          ["2026-02-01T08:00:00.000Z"]
        )
      }))

    it.effect("combine fires at every instant of any trigger; a shared instant fires once", () =>
      Effect.gen(function*() {
        const trigger = Trigger.combine(
          Trigger.interval("6 hours"),
          Trigger.cron("0 12 * * *"),
          Trigger.cron("30 7 * * *"),
          Trigger.at(new Date("2026-01-01T05:00:00Z"))
        )
        assert.deepStrictEqual(yield* slots(trigger, "2026-01-01T00:00:00Z", 6), [
          "2026-01-01T05:00:00.000Z",
          "2026-01-01T06:00:00.000Z",
          "2026-01-01T07:30:00.000Z",
          "2026-01-01T12:00:00.000Z",
          "2026-01-01T18:00:00.000Z",
          "2026-01-02T00:00:00.000Z"
        ])
      }))
  })

  describe("invalid input fails with InvalidSchedule naming the field", () => {
    const cases: ReadonlyArray<readonly [string, Trigger.Trigger, string, RegExp]> = [
      ["empty cron", Trigger.cron(""), "cron", /is empty/],
      ["4 fields", Trigger.cron("* * * *"), "cron", /has 4 fields; expected 5/],
      ["7 fields", Trigger.cron("* * * * * * *"), "cron", /has 7 fields/],
      ["minute 61", Trigger.cron("61 * * * *"), "cron.minute", /61.*0-59/],
      ["step 0", Trigger.cron("*/0 * * * *"), "cron.minute", /every 0/],
      ["second 60", Trigger.cron("60 * * * * *"), "cron.second", /60/],
      ["hour 24", Trigger.cron("0 24 * * *"), "cron.hour", /24/],
      ["month 13", Trigger.cron("0 0 1 13 *"), "cron.month", /13/],
      ["weekday 8", Trigger.cron("0 0 * * 8"), "cron.dayOfWeek", /8/],
      ["garbage", Trigger.cron("foo * * * *"), "cron.minute", /foo/],
      ["31 February", Trigger.cron("0 0 31 2 *"), "cron.dayOfMonth", /never occurs/],
      ["unknown nickname", Trigger.cron("@reboot"), "cron", /unknown nickname/],
      ["unknown zone", Trigger.cron("0 0 * * *", { tz: "Mars/Olympus" }), "tz", /not a known IANA time zone/],
      ["zone with a trailing space", Trigger.cron("0 0 * * *", { tz: "Europe/Berlin " }), "tz", /whitespace/],
      ["tz and offset", Trigger.cron("0 0 * * *", { tz: "UTC", offset: "+01:00" }), "tz", /either tz or offset/],
      ["offset out of range", Trigger.cron("0 0 * * *", { offset: "+15:00" }), "offset", /±14:00/],
      ["offset not a duration", Trigger.cron("0 0 * * *", { offset: "soon" }), "offset", /expected/],
      ["zero interval", Trigger.interval(0), "interval", /must be positive/],
      ["negative interval", Trigger.interval(-1000), "interval", /must be positive/],
      ["not a duration", Trigger.interval("every now and then" as "1 second"), "interval", /not a Duration/],
      ["infinite interval", Trigger.interval("Infinity" as "1 second"), "interval", /./],
      ["one-shot in the past", Trigger.at(new Date("2025-12-31T23:59:59Z")), "at", /not in the future/],
      ["invalid date", Trigger.at(new Date("nope")), "at", /invalid Date/],
      ["empty combination", Trigger.combine(), "triggers", /at least one/],
      [
        "bad child of a combination",
        Trigger.combine(Trigger.interval("1 minute"), Trigger.cron("0 25 * * *")),
        "triggers[1].cron.hour",
        /25/
      ]
    ]
    for (const [label, trigger, field, reason] of cases) {
      it.effect(label, () =>
        Effect.gen(function*() {
          const error = yield* invalid(trigger)
          assert.strictEqual(error.field, field)
          assert.match(error.reason, reason)
          assert.match(error.message, /^invalid schedule "job": /)
          assert.include(error.message, field)
        }))
    }
  })

  describe("Trigger.validate: the synchronous check, returning the failure instead of throwing", () => {
    it("a good trigger comes back as it is", () => {
      const trigger = Trigger.combine(
        Trigger.cron("0 12 * * *", { tz: "Europe/Berlin" }),
        Trigger.interval("5 minutes")
      )
      assert.deepStrictEqual(Trigger.validate(trigger), Either.right(trigger))
    })

    it("a bad one fails with InvalidSchedule naming the field, and the schedule when given", () => {
      const result = Trigger.validate(Trigger.cron("0 0 31 2 *"))
      assert.isTrue(Either.isLeft(result))
      if (Either.isRight(result)) return
      assert.strictEqual(result.left._tag, "InvalidSchedule")
      assert.strictEqual(result.left.field, "cron.dayOfMonth")
      assert.match(result.left.message, /^invalid schedule "\(trigger\)": cron.dayOfMonth/)
      const named = Trigger.validate(Trigger.cron("* * * *"), { name: "nightly" })
      assert.isTrue(Either.isLeft(named) && named.left.schedule === "nightly" && named.left.field === "cron")
    })

    it("what depends on time is checked only against a given now", () => {
      const once = Trigger.at(new Date("2026-01-01T00:00:00Z"))
      assert.isTrue(Either.isRight(Trigger.validate(once)), "no now: only the Date itself is checked")
      assert.isTrue(Either.isRight(Trigger.validate(once, { now: new Date("2025-12-31T00:00:00Z") })))
      const late = Trigger.validate(once, { now: ms("2026-01-02T00:00:00Z") })
      assert.isTrue(Either.isLeft(late) && late.left.field === "at")
      assert.isTrue(Either.isLeft(Trigger.validate(Trigger.at(new Date("nope")))))
    })

    it("InvalidSchedule and LeaseError are SchedulerErrors; InvalidOptions is not", () => {
      assert.isTrue(
        SchedulerError.isSchedulerError(
          new SchedulerError.InvalidSchedule({ schedule: "s", field: "f", value: "v", reason: "r" })
        )
      )
      assert.isTrue(
        SchedulerError.isSchedulerError(new SchedulerError.LeaseError({ operation: "claim", detail: "down" }))
      )
      assert.isFalse(
        SchedulerError.isSchedulerError(
          new InvalidOptions({ module: "Scheduler", field: "f", value: "v", reason: "r" })
        )
      )
      assert.isFalse(SchedulerError.isSchedulerError(new Error("x")))
    })
  })
})
