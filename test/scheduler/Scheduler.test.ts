import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Either, Exit, Layer, Option, Scope, TestClock } from "effect"
import * as Scheduler from "../../src/Scheduler.js"
import * as SchedulerLease from "../../src/SchedulerLease.js"
import * as Trigger from "../../src/Trigger.js"
import { InstanceRef, Recorder, recorderLayer, tick } from "./fixtures.js"

const ms = (iso: string) => new Date(iso).getTime()
const key = (name: string, iso: string) => `${name}@${new Date(iso).toISOString()}`
const keysOf = (name: string) =>
  Effect.map(Recorder, (r) => r.all().filter((e) => e.key?.startsWith(`${name}@`)).map((e) => e.key ?? ""))

/** ISO instants `from`, `from + step`, … up to and including `to`. */
const instants = (from: string, to: string, stepMs: number) => {
  const out: Array<string> = []
  for (let t = ms(from); t <= ms(to); t += stepMs) out.push(new Date(t).toISOString())
  return out
}

const env = Layer.merge(recorderLayer, SchedulerLease.layerMemory)

/** Starts a scheduler instance in its own Scope, so a test can stop it (the leader dying). */
const start = <E, R>(
  definitions: ReadonlyArray<Scheduler.Definition<E, R>>,
  instance: string,
  options?: Scheduler.Options
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const service = yield* Scheduler.make(definitions, { owner: instance, ...options }).pipe(
      Effect.provideService(InstanceRef, instance),
      Scope.extend(scope)
    )
    return { scope, service, stop: Scope.close(scope, Exit.void) }
  })

describe("Scheduler (TestClock, memory lease, stand-in TaskQueue)", () => {
  it.scoped("fires every slot once, at its instant, with the slot key; payload may be an Effect", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(ms("2026-01-01T00:00:00.500Z"))
      yield* start([
        Scheduler.schedule("every-second", tick, { trigger: Trigger.interval("1 second"), payload: { n: 1 } }),
        Scheduler.schedule("cron-2s", tick, {
          trigger: Trigger.cron("*/2 * * * * *"),
          payload: Effect.map(Clock.currentTimeMillis, (n) => ({ n }))
        })
      ], "a")
      yield* TestClock.adjust("10 seconds")
      const recorder = yield* Recorder
      assert.deepStrictEqual(
        yield* keysOf("every-second"),
        instants("2026-01-01T00:00:01Z", "2026-01-01T00:00:10Z", 1000).map((i) => `every-second@${i}`)
      )
      assert.deepStrictEqual(
        yield* keysOf("cron-2s"),
        instants("2026-01-01T00:00:02Z", "2026-01-01T00:00:10Z", 2000).map((i) => `cron-2s@${i}`)
      )
      for (const e of recorder.all()) {
        const slot = ms((e.key ?? "").split("@")[1] ?? "")
        assert.strictEqual(e.at, slot, `${e.key} enqueued at its slot`)
        if (e.key?.startsWith("cron-2s@")) assert.deepStrictEqual(e.payload, { n: slot }, "payload computed at firing")
        else assert.deepStrictEqual(e.payload, { n: 1 })
      }
    }).pipe(Effect.provide(env)))

  it.scoped("a one-shot fires once; status reports role, next fire and last fired slot", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(ms("2026-01-01T00:00:00Z"))
      const { service } = yield* start([
        Scheduler.schedule("once", tick, { trigger: Trigger.at(new Date("2026-01-01T00:00:05Z")), payload: { n: 0 } }),
        Scheduler.schedule("minutely", tick, { trigger: Trigger.cron("* * * * *"), payload: { n: 0 } })
      ], "a")
      yield* TestClock.adjust("1 millis")
      const before = yield* service.status
      assert.strictEqual(before.role, "leader")
      assert.deepStrictEqual(before.schedules.map((s) => [s.name, s.nextFire, s.lastFired]), [
        ["once", Option.some(new Date("2026-01-01T00:00:05Z")), Option.none()],
        ["minutely", Option.some(new Date("2026-01-01T00:01:00Z")), Option.none()]
      ])
      yield* TestClock.adjust("2 minutes")
      assert.deepStrictEqual(yield* keysOf("once"), [key("once", "2026-01-01T00:00:05Z")])
      const after = yield* service.status
      assert.deepStrictEqual(after.schedules.map((s) => [s.name, s.nextFire, s.lastFired]), [
        ["once", Option.none(), Option.some(new Date("2026-01-01T00:00:05Z"))],
        ["minutely", Option.some(new Date("2026-01-01T00:03:00Z")), Option.some(new Date("2026-01-01T00:02:00Z"))]
      ])
    }).pipe(Effect.provide(env)))

  it.scoped("two instances on one lease: one fires; when it stops, the standby takes over; no slot twice or lost", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(ms("2026-01-01T00:00:00.500Z"))
      const definitions = [
        Scheduler.schedule("s", tick, {
          trigger: Trigger.interval("1 second"),
          payload: { n: 0 },
          missed: Scheduler.catchUp({ max: 100 })
        })
      ]
      const options = { leaseTtl: "3 seconds", renewEvery: "1 second" } as const
      const a = yield* start(definitions, "a", options)
      const b = yield* start(definitions, "b", options)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual((yield* a.service.status).role, "leader")
      assert.strictEqual((yield* b.service.status).role, "standby")
      yield* a.stop
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual((yield* b.service.status).role, "leader")
      const recorder = yield* Recorder
      const keys = recorder.all().map((e) => e.key)
      assert.deepStrictEqual(keys, instants("2026-01-01T00:00:01Z", "2026-01-01T00:00:20Z", 1000).map((i) => `s@${i}`))
      const byInstance = (i: string) => recorder.all().filter((e) => e.instance === i).length
      assert.strictEqual(byInstance("a"), 10)
      assert.strictEqual(byInstance("b"), 10)
      // The lease was released on stop, so b took over at its next renewal, within 1 s.
      const firstOfB = recorder.all().find((e) => e.instance === "b")
      assert.isDefined(firstOfB)
      assert.isAtMost((firstOfB?.at ?? Infinity) - ms("2026-01-01T00:00:10.500Z"), 1000)
    }).pipe(Effect.provide(env)))

  it.scoped("a leader that dies without releasing is replaced after the lease ttl", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(ms("2026-01-01T00:00:00.500Z"))
      const lease = yield* SchedulerLease.SchedulerLease
      // A crashed leader: it took the lease and never renews or releases it.
      assert.isTrue(yield* lease.acquire("crashed", 3000))
      const b = yield* start(
        [
          Scheduler.schedule("s", tick, { trigger: Trigger.interval("1 second"), payload: { n: 0 } })
        ],
        "b",
        { leaseTtl: "3 seconds", renewEvery: "1 second" }
      )
      yield* TestClock.adjust("2 seconds")
      assert.strictEqual((yield* b.service.status).role, "standby")
      assert.deepStrictEqual(yield* keysOf("s"), [])
      yield* TestClock.adjust("3 seconds")
      assert.strictEqual((yield* b.service.status).role, "leader")
      // Took over at the first renewal after the ttl (3.5 s); no history, so it starts from there.
      assert.deepStrictEqual(
        yield* keysOf("s"),
        instants("2026-01-01T00:00:04Z", "2026-01-01T00:00:05Z", 1000).map((i) => `s@${i}`)
      )
    }).pipe(Effect.provide(env)))

  it.scoped("stress: 300 schedules of mixed intervals, anchors, crons and combinations on one timer fire every slot once, at its instant, in order", () =>
    Effect.gen(function*() {
      const start = ms("2026-01-01T00:00:00.500Z")
      const end = start + 30_000
      yield* TestClock.setTime(start)
      const steps = [1, 2, 3, 5, 10, 15] as const
      const definitions: Array<Scheduler.Definition> = []
      const expected = new Map<string, Array<string>>()
      const between = (every: number, anchorMs: number) => {
        const out: Array<number> = []
        // A slot at the very instant the scheduler starts is due, and fires.
        for (let t = anchorMs + Math.ceil((start - anchorMs) / every) * every; t <= end; t += every) out.push(t)
        return out
      }
      for (let i = 0; i < 300; i++) {
        const name = `stress-${i}`
        const every = ((i % 5) + 1) * 1000
        // Few distinct instants per second: TestClock wakes each sleeper in turn.
        const anchorMs = [0, 250, 500][i % 3] ?? 0
        const step = steps[i % steps.length] ?? 1
        const cronSlots = between(step * 1000, 0)
        let trigger: Trigger.Trigger
        let slots: Array<number>
        switch (i % 3) {
          case 0:
            trigger = Trigger.interval(every, { anchor: new Date(anchorMs) })
            slots = between(every, anchorMs)
            break
          case 1:
            trigger = Trigger.cron(`*/${step} * * * * *`)
            slots = cronSlots
            break
          default:
            trigger = Trigger.combine(
              Trigger.interval(every, { anchor: new Date(anchorMs) }),
              Trigger.cron(`*/${step} * * * * *`)
            )
            slots = [...new Set([...between(every, anchorMs), ...cronSlots])].sort((a, b) => a - b)
        }
        definitions.push(Scheduler.schedule(name, tick, { trigger, payload: { n: i } }))
        expected.set(name, slots.map((t) => `${name}@${new Date(t).toISOString()}`))
      }
      yield* Scheduler.make(definitions, { owner: "stress" })
      yield* TestClock.adjust("30 seconds")
      const recorder = yield* Recorder
      const all = recorder.all()
      for (const [name, keys] of expected) {
        assert.deepStrictEqual(all.filter((e) => e.key?.startsWith(`${name}@`)).map((e) => e.key), keys, name)
      }
      assert.strictEqual(all.length, [...expected.values()].reduce((n, keys) => n + keys.length, 0))
      for (const e of all) {
        assert.strictEqual(e.at, ms((e.key ?? "").split("@")[1] ?? ""), `${e.key} enqueued at its slot`)
      }
      for (let i = 1; i < all.length; i++) {
        assert.isAtLeast(all[i]?.at ?? 0, all[i - 1]?.at ?? 0, "enqueued in slot order")
      }
    }).pipe(Effect.provide(env)))

  describe("missed slots after downtime", () => {
    const downtime = (missed: Scheduler.MissedPolicy) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(ms("2026-01-01T00:00:00.500Z"))
        const definitions = [
          Scheduler.schedule("s", tick, { trigger: Trigger.interval("1 second"), payload: { n: 0 }, missed })
        ]
        const a = yield* start(definitions, "a")
        yield* TestClock.adjust("5 seconds")
        yield* a.stop
        yield* TestClock.adjust("10 seconds") // nobody runs from 5.5 s to 15.5 s
        yield* start(definitions, "b")
        yield* TestClock.adjust("2 seconds")
        return yield* keysOf("s")
      })

    it.scoped("skip (default): overdue slots are not fired, the due one is", () =>
      Effect.gen(function*() {
        const keys = yield* downtime(Scheduler.skip)
        assert.deepStrictEqual(
          keys,
          [
            ...instants("2026-01-01T00:00:01Z", "2026-01-01T00:00:05Z", 1000),
            // 15 s is within the 1 s grace at restart (15.5 s); 6-14 s are skipped.
            ...instants("2026-01-01T00:00:15Z", "2026-01-01T00:00:17Z", 1000)
          ].map((i) => `s@${i}`)
        )
      }).pipe(Effect.provide(env)))

    it.scoped("catchUp({ max: 3 }): the latest 3 overdue slots are fired at restart, then on time", () =>
      Effect.gen(function*() {
        const keys = yield* downtime(Scheduler.catchUp({ max: 3 }))
        assert.deepStrictEqual(
          keys,
          [
            ...instants("2026-01-01T00:00:01Z", "2026-01-01T00:00:05Z", 1000),
            ...instants("2026-01-01T00:00:12Z", "2026-01-01T00:00:17Z", 1000)
          ].map((i) => `s@${i}`)
        )
        const recorder = yield* Recorder
        const caughtUp = recorder.all().filter((e) => e.instance === "b").slice(0, 4)
        assert.deepStrictEqual(caughtUp.map((e) => e.at), Array(4).fill(ms("2026-01-01T00:00:15.500Z")))
      }).pipe(Effect.provide(env)))
  })

  describe("slots overdue while running (a stalled enqueue holds the timer 3.5 s)", () => {
    const stalled = (missed: Scheduler.MissedPolicy) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(ms("2026-01-01T00:00:00.500Z"))
        const recorder = yield* Recorder
        recorder.slow.set(key("s", "2026-01-01T00:00:02Z"), "3500 millis")
        yield* start([
          Scheduler.schedule("s", tick, { trigger: Trigger.interval("1 second"), payload: { n: 0 }, missed })
        ], "a")
        yield* TestClock.adjust("7 seconds")
        return recorder.all().map((e) => [e.key, new Date(e.at).toISOString()])
      })

    it.scoped("skip: slots more than `grace` overdue are dropped, the rest fire at once", () =>
      Effect.gen(function*() {
        // The timer is back at 5.5 s: 3 s and 4 s are over 1 s late, 5 s is within grace.
        assert.deepStrictEqual(yield* stalled(Scheduler.skip), [
          [key("s", "2026-01-01T00:00:01Z"), "2026-01-01T00:00:01.000Z"],
          [key("s", "2026-01-01T00:00:02Z"), "2026-01-01T00:00:02.000Z"],
          [key("s", "2026-01-01T00:00:05Z"), "2026-01-01T00:00:05.500Z"],
          [key("s", "2026-01-01T00:00:06Z"), "2026-01-01T00:00:06.000Z"],
          [key("s", "2026-01-01T00:00:07Z"), "2026-01-01T00:00:07.000Z"]
        ])
      }).pipe(Effect.provide(env)))

    it.scoped("catchUp({ max: 1 }): the latest overdue slot fires too", () =>
      Effect.gen(function*() {
        assert.deepStrictEqual(yield* stalled(Scheduler.catchUp({ max: 1 })), [
          [key("s", "2026-01-01T00:00:01Z"), "2026-01-01T00:00:01.000Z"],
          [key("s", "2026-01-01T00:00:02Z"), "2026-01-01T00:00:02.000Z"],
          [key("s", "2026-01-01T00:00:04Z"), "2026-01-01T00:00:05.500Z"],
          [key("s", "2026-01-01T00:00:05Z"), "2026-01-01T00:00:05.500Z"],
          [key("s", "2026-01-01T00:00:06Z"), "2026-01-01T00:00:06.000Z"],
          [key("s", "2026-01-01T00:00:07Z"), "2026-01-01T00:00:07.000Z"]
        ])
      }).pipe(Effect.provide(env)))
  })

  it.scoped("overlap: skip does not enqueue while the previous firing's task is still running", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(ms("2026-01-01T00:00:00.500Z"))
      const recorder = yield* Recorder
      recorder.running.add(key("slow", "2026-01-01T00:00:01Z"))
      yield* start([
        Scheduler.schedule("slow", tick, { trigger: Trigger.interval("1 second"), payload: { n: 0 }, overlap: "skip" })
      ], "a")
      yield* TestClock.adjust("3 seconds")
      assert.deepStrictEqual(yield* keysOf("slow"), [key("slow", "2026-01-01T00:00:01Z")])
      recorder.running.clear()
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(yield* keysOf("slow"), [
        key("slow", "2026-01-01T00:00:01Z"),
        key("slow", "2026-01-01T00:00:04Z")
      ])
    }).pipe(Effect.provide(env)))

  describe("invalid definitions fail the build with InvalidSchedule", () => {
    const build = (definitions: ReadonlyArray<Scheduler.Definition>) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(ms("2026-01-01T00:00:00Z"))
        const exit = yield* Layer.build(Scheduler.layer(definitions)).pipe(Effect.either)
        assert.isTrue(Either.isLeft(exit))
        if (Either.isRight(exit)) throw new Error("unreachable")
        return exit.left
      }).pipe(Effect.provide(env))

    const every = Trigger.interval("1 minute")
    it.scoped("duplicate names", () =>
      Effect.gen(function*() {
        const e = yield* build([
          Scheduler.schedule("a", tick, { trigger: every, payload: { n: 0 } }),
          Scheduler.schedule("a", tick, { trigger: every, payload: { n: 0 } })
        ])
        assert.strictEqual(e.field, "name")
        assert.strictEqual(e.message, "invalid schedule \"a\": name \"a\" is used by two schedules")
      }))

    it.scoped("empty name, catchUp max 0, a bad trigger", () =>
      Effect.gen(function*() {
        assert.strictEqual(
          (yield* build([Scheduler.schedule("", tick, { trigger: every, payload: { n: 0 } })])).field,
          "name"
        )
        const max = yield* build([
          Scheduler.schedule("m", tick, { trigger: every, payload: { n: 0 }, missed: Scheduler.catchUp({ max: 0 }) })
        ])
        assert.strictEqual(max.field, "missed.max")
        const tz = yield* build([
          Scheduler.schedule("z", tick, {
            trigger: Trigger.cron("0 0 * * *", { tz: "Europe/Berln" }),
            payload: { n: 0 }
          })
        ])
        assert.strictEqual(tz.field, "tz")
        assert.match(tz.message, /^invalid schedule "z": tz "Europe\/Berln" is not a known IANA time zone/)
      }))
  })
})
