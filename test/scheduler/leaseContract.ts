import { assert, layer } from "@effect/vitest"
import type { Layer } from "effect"
import { Effect } from "effect"
import * as SchedulerLease from "../../src/SchedulerLease.js"

/**
 * What every `SchedulerLease` must do. Runs on the live clock (PostgreSQL keeps its own time);
 * each test uses its own schedule names, the lease group is shared, so tests release what they take.
 */
export const leaseContract = <E>(name: string, lease: Layer.Layer<SchedulerLease.SchedulerLease, E>) =>
  layer(lease, { excludeTestServices: true, timeout: "30 seconds" })(`SchedulerLease contract (${name})`, (it) => {
    it.effect("one owner at a time; renewal keeps it; release hands it over", () =>
      Effect.gen(function*() {
        const l = yield* SchedulerLease.SchedulerLease
        assert.isTrue(yield* l.acquire("a", 10_000))
        assert.isFalse(yield* l.acquire("b", 10_000))
        assert.isTrue(yield* l.acquire("a", 10_000), "renewal by the holder")
        yield* l.release("b") // not the holder: no effect
        assert.isFalse(yield* l.acquire("b", 10_000))
        yield* l.release("a")
        assert.isTrue(yield* l.acquire("b", 10_000))
        yield* l.release("b")
      }))

    it.effect("an expired lease can be taken by another owner", () =>
      Effect.gen(function*() {
        const l = yield* SchedulerLease.SchedulerLease
        assert.isTrue(yield* l.acquire("a", 200))
        assert.isFalse(yield* l.acquire("b", 10_000))
        yield* Effect.sleep("300 millis")
        assert.isTrue(yield* l.acquire("b", 10_000))
        assert.isFalse(yield* l.acquire("a", 10_000))
        yield* l.release("b")
      }))

    it.effect("claims only while holding the lease, and each slot at most once", () =>
      Effect.gen(function*() {
        const l = yield* SchedulerLease.SchedulerLease
        const s = `claims-${Math.random().toString(36).slice(2)}`
        assert.deepStrictEqual(yield* l.claim("a", [{ schedule: s, first: 1000, last: 1000 }]), [], "not holding")
        assert.isTrue(yield* l.acquire("a", 10_000))
        assert.deepStrictEqual(yield* l.claim("a", [{ schedule: s, first: 1000, last: 1000 }]), [s])
        assert.deepStrictEqual(yield* l.claim("a", [{ schedule: s, first: 1000, last: 1000 }]), [], "claimed already")
        assert.deepStrictEqual(yield* l.claim("a", [{ schedule: s, first: 500, last: 2000 }]), [], "overlaps a claim")
        assert.deepStrictEqual(yield* l.claim("a", [{ schedule: s, first: 2000, last: 4000 }]), [s], "a range")
        assert.deepStrictEqual(
          yield* l.claim("b", [{ schedule: s, first: 5000, last: 5000 }]),
          [],
          "b does not hold it"
        )
        yield* l.markFired("a", [{ schedule: s, slot: 3000 }])
        assert.deepStrictEqual(yield* l.state([s, `${s}-none`]), [{ schedule: s, claimed: 4000, fired: 3000 }])
        yield* l.markFired("a", [{ schedule: s, slot: 2000 }])
        assert.deepStrictEqual(
          yield* l.state([s]),
          [{ schedule: s, claimed: 4000, fired: 3000 }],
          "fired only moves forward"
        )
        yield* l.release("a")
      }))

    it.effect("a batch claims several schedules in one call; names may contain quotes and SQL", () =>
      Effect.gen(function*() {
        const l = yield* SchedulerLease.SchedulerLease
        const tag = Math.random().toString(36).slice(2)
        const plain = `x-${tag}`
        const sqlish = `'; drop table students; -- ${tag}`
        const quoted = `"quoted" ${tag}`
        assert.isTrue(yield* l.acquire("a", 10_000))
        assert.deepStrictEqual(yield* l.claim("a", [{ schedule: plain, first: 10, last: 10 }]), [plain])
        const won = yield* l.claim("a", [plain, sqlish, quoted].map((schedule) => ({ schedule, first: 10, last: 20 })))
        assert.deepStrictEqual([...won].sort(), [sqlish, quoted].sort())
        assert.deepStrictEqual(
          (yield* l.state([sqlish, quoted])).map((s) => s.claimed),
          [20, 20]
        )
        yield* l.release("a")
      }))
  })
