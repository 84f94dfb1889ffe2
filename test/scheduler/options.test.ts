import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Config, Effect, Layer, Redacted, TestClock } from "effect"
import { InvalidOptions, isInvalidOptions } from "../../src/InvalidOptions.js"
import * as PgLease from "../../src/layers/PgLease.js"
import * as Scheduler from "../../src/Scheduler.js"
import * as SchedulerError from "../../src/SchedulerError.js"
import * as SchedulerLease from "../../src/SchedulerLease.js"
import * as Trigger from "../../src/Trigger.js"
import { databaseUrl, uniqueName } from "../fixtures/env.js"
import { recorderLayer, tick } from "./fixtures.js"

/**
 * One policy for bad input: every option of `Scheduler.layer` / `make` / `run` and of
 * `PgLease.layer` / `make` / `layerConfig` with a bad value fails the build with `InvalidOptions`
 * naming the module and the option; every bad part of a schedule definition fails it with
 * `InvalidSchedule` naming the schedule and the field. Nothing throws, nothing dies.
 */

const expectInvalidOptions = (error: unknown, module: string, field: string) => {
  assert.isTrue(isInvalidOptions(error), `expected InvalidOptions, got ${String(error)}`)
  if (!(error instanceof InvalidOptions)) return
  assert.strictEqual(error.module, module)
  assert.strictEqual(error.field, field)
  assert.include(error.message, field)
}

const definitions = [Scheduler.schedule("ok", tick, { trigger: Trigger.interval("1 minute"), payload: { n: 0 } })]
const env = Layer.merge(recorderLayer, SchedulerLease.layerMemory)

describe("Scheduler options: a bad value fails the build with InvalidOptions naming it", () => {
  const cases: ReadonlyArray<readonly [string, Scheduler.Options, string]> = [
    ["leaseTtl zero", { leaseTtl: 0 }, "leaseTtl"],
    ["leaseTtl negative", { leaseTtl: "-1 seconds" as "1 seconds" }, "leaseTtl"],
    ["leaseTtl not a duration", { leaseTtl: "soon" as "1 seconds" }, "leaseTtl"],
    ["leaseTtl infinite", { leaseTtl: "Infinity" as "1 seconds" }, "leaseTtl"],
    ["renewEvery zero", { renewEvery: 0 }, "renewEvery"],
    ["renewEvery not a duration", { renewEvery: "often" as "1 seconds" }, "renewEvery"],
    ["renewEvery not shorter than leaseTtl", { leaseTtl: "2 seconds", renewEvery: "2 seconds" }, "renewEvery"],
    ["renewEvery longer than the default leaseTtl", { renewEvery: "1 minute" }, "renewEvery"],
    ["grace negative", { grace: -1 }, "grace"],
    ["grace negative as text", { grace: "-1 seconds" as "1 seconds" }, "grace"],
    ["grace not a duration", { grace: "a bit" as "1 seconds" }, "grace"],
    ["grace infinite", { grace: "Infinity" as "1 seconds" }, "grace"],
    ["concurrency zero", { concurrency: 0 }, "concurrency"],
    ["concurrency fractional", { concurrency: 1.5 }, "concurrency"],
    ["concurrency NaN", { concurrency: Number.NaN }, "concurrency"],
    ["owner empty", { owner: "" }, "owner"],
    ["owner with U+0000", { owner: "a\u0000b" }, "owner"],
    ["owner too long", { owner: "o".repeat(201) }, "owner"]
  ]
  for (const [label, options, field] of cases) {
    it.scoped(`${label}: layer, make and run`, () =>
      Effect.gen(function*() {
        const viaLayer = yield* Layer.build(Scheduler.layer(definitions, options)).pipe(Effect.flip)
        expectInvalidOptions(viaLayer, "Scheduler", field)
        const viaMake = yield* Scheduler.make(definitions, options).pipe(Effect.flip)
        expectInvalidOptions(viaMake, "Scheduler", field)
        const viaRun = yield* Scheduler.run(definitions, options).pipe(Effect.flip)
        expectInvalidOptions(viaRun, "Scheduler", field)
      }).pipe(Effect.provide(env)))
  }

  it.scoped("good options build", () =>
    Effect.gen(function*() {
      const service = yield* Scheduler.make(definitions, {
        leaseTtl: "3 seconds",
        renewEvery: "1 second",
        grace: 0,
        concurrency: 1,
        owner: "replica-1"
      })
      assert.strictEqual((yield* service.status).owner, "replica-1")
    }).pipe(Effect.provide(env)))
})

describe("schedule definitions: a bad part fails the build with InvalidSchedule naming the field", () => {
  const every = Trigger.interval("1 minute")
  const cases: ReadonlyArray<readonly [string, Scheduler.Definition, string]> = [
    ["empty name", Scheduler.schedule("", tick, { trigger: every, payload: { n: 0 } }), "name"],
    ["padded name", Scheduler.schedule(" a ", tick, { trigger: every, payload: { n: 0 } }), "name"],
    ["name with U+0000", Scheduler.schedule("a\u0000b", tick, { trigger: every, payload: { n: 0 } }), "name"],
    ["name too long", Scheduler.schedule("n".repeat(201), tick, { trigger: every, payload: { n: 0 } }), "name"],
    [
      "catchUp max 0",
      Scheduler.schedule("m", tick, { trigger: every, payload: { n: 0 }, missed: Scheduler.catchUp({ max: 0 }) }),
      "missed.max"
    ],
    [
      "catchUp max fractional",
      Scheduler.schedule("m", tick, { trigger: every, payload: { n: 0 }, missed: Scheduler.catchUp({ max: 1.5 }) }),
      "missed.max"
    ],
    [
      "an unknown missed policy",
      Scheduler.schedule("m", tick, {
        trigger: every,
        payload: { n: 0 },
        missed: { _tag: "Sometimes" } as unknown as Scheduler.MissedPolicy
      }),
      "missed"
    ],
    [
      "an unknown overlap policy",
      Scheduler.schedule("o", tick, { trigger: every, payload: { n: 0 }, overlap: "sometimes" as "skip" }),
      "overlap"
    ],
    ["priority 256", Scheduler.schedule("p", tick, { trigger: every, payload: { n: 0 }, priority: 256 }), "priority"],
    ["priority -1", Scheduler.schedule("p", tick, { trigger: every, payload: { n: 0 }, priority: -1 }), "priority"],
    [
      "priority fractional",
      Scheduler.schedule("p", tick, { trigger: every, payload: { n: 0 }, priority: 1.5 }),
      "priority"
    ],
    [
      "a trigger that is not one",
      Scheduler.schedule("t", tick, { trigger: { _tag: "Often" } as unknown as Trigger.Trigger, payload: { n: 0 } }),
      "trigger"
    ],
    [
      "an offset that is not a duration",
      Scheduler.schedule("t", tick, {
        trigger: Trigger.cron("0 0 * * *", { offset: {} as Trigger.CronOptions["offset"] }),
        payload: { n: 0 }
      }),
      "offset"
    ]
  ]
  for (const [label, definition, field] of cases) {
    it.scoped(label, () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(new Date("2026-01-01T00:00:00Z").getTime())
        const error = yield* Layer.build(Scheduler.layer([definition])).pipe(Effect.flip)
        assert.isTrue(SchedulerError.isSchedulerError(error))
        assert.strictEqual(error._tag, "InvalidSchedule")
        if (error._tag !== "InvalidSchedule") return
        assert.strictEqual(error.field, field)
        assert.strictEqual(error.schedule, definition.name)
        const validated = yield* Scheduler.validate([definition]).pipe(Effect.flip)
        assert.strictEqual(validated.field, field)
      }).pipe(Effect.provide(env)))
  }
})

describe("PgLease options: a bad value fails the build with InvalidOptions naming it", () => {
  const client = PgClient.layer({ url: Redacted.make(databaseUrl), applicationName: `${uniqueName("options")}_test` })
  const cases: ReadonlyArray<readonly [string, PgLease.Options, string]> = [
    ["tablePrefix with SQL", { tablePrefix: "x; drop table y" }, "tablePrefix"],
    ["tablePrefix starting with a digit", { tablePrefix: "1abc" }, "tablePrefix"],
    ["tablePrefix empty", { tablePrefix: "" }, "tablePrefix"],
    ["tablePrefix longer than 40", { tablePrefix: "p".repeat(41) }, "tablePrefix"],
    ["group empty", { group: "" }, "group"],
    ["group with U+0000", { group: "a\u0000b" }, "group"],
    ["group too long", { group: "g".repeat(201) }, "group"]
  ]
  for (const [label, options, field] of cases) {
    it.live(`${label}: layer, make and layerConfig`, () =>
      Effect.gen(function*() {
        const viaLayer = yield* Layer.build(PgLease.layer(options)).pipe(Effect.flip)
        expectInvalidOptions(viaLayer, "PgLease", field)
        const viaMake = yield* PgLease.make(options).pipe(Effect.flip)
        expectInvalidOptions(viaMake, "PgLease", field)
        const viaConfig = yield* Layer.build(PgLease.layerConfig({
          tablePrefix: Config.succeed(options.tablePrefix),
          group: Config.succeed(options.group)
        })).pipe(Effect.flip)
        expectInvalidOptions(viaConfig, "PgLease", field)
      }).pipe(Effect.scoped, Effect.provide(client)))
  }
})
