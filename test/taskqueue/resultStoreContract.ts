/**
 * The ResultStore contract, run against every implementation (memory, PostgreSQL).
 */
import { assert, layer } from "@effect/vitest"
import type { Layer } from "effect"
import { Effect, Option } from "effect"
import * as ResultStore from "../../src/ResultStore.js"
import { uniqueName } from "../fixtures/env.js"

export const resultStoreContract = <E>(name: string, storeLayer: Layer.Layer<ResultStore.ResultStore, E>): void =>
  layer(storeLayer, { excludeTestServices: true, timeout: "60 seconds" })(`ResultStore contract (${name})`, (it) => {
    const now = 1_000_000

    it.effect("a stored result is read back until it expires", () =>
      Effect.gen(function*() {
        const store = yield* ResultStore.ResultStore
        const id = uniqueName("id")
        const outcome = JSON.stringify({ _tag: "Success", value: { quote: "it's \"fine\"; drop table x" } })
        assert.isTrue(Option.isNone(yield* store.get(id, now)))
        yield* store.put({ id, task: "t", outcome, finishedAt: now, expiresAt: now + 1000 })
        const found = yield* store.get(id, now + 999)
        assert.deepStrictEqual(found, Option.some({ id, task: "t", outcome, finishedAt: now, expiresAt: now + 1000 }))
        assert.isTrue(Option.isNone(yield* store.get(id, now + 1000)), "expired")
      }))

    it.effect("a re-run replaces the stored result", () =>
      Effect.gen(function*() {
        const store = yield* ResultStore.ResultStore
        const id = uniqueName("id")
        yield* store.put({ id, task: "t", outcome: "1", finishedAt: now, expiresAt: now + 1000 })
        yield* store.put({ id, task: "t", outcome: "2", finishedAt: now + 1, expiresAt: now + 2000 })
        const found = yield* store.get(id, now + 1500)
        assert.strictEqual(Option.getOrUndefined(found)?.outcome, "2")
      }))

    it.effect("a live claim returns its holder; release and completion end it", () =>
      Effect.gen(function*() {
        const store = yield* ResultStore.ResultStore
        const task = uniqueName("task")
        const claim = (id: string, at: number, window = 0) =>
          store.claim({ task, key: "k", id, claimedAt: at, expiresAt: at + window, staleAt: at + 1_000_000 })
        assert.strictEqual(yield* claim("a", now), "a")
        assert.strictEqual(yield* claim("b", now + 10_000), "a", "pending claims hold until stale")
        assert.strictEqual(
          yield* store.claim({
            task: `${task}-other`,
            key: "k",
            id: "x",
            claimedAt: now,
            expiresAt: now,
            staleAt: now + 1
          }),
          "x",
          "keys are per task"
        )
        yield* store.release(task, "k", "not-the-holder")
        assert.strictEqual(yield* claim("b", now), "a")
        yield* store.release(task, "k", "a")
        assert.strictEqual(yield* claim("c", now, 1000), "c")
        yield* store.complete(task, "k", "c")
        assert.strictEqual(yield* claim("d", now + 999), "c", "within the window after completion")
        assert.strictEqual(yield* claim("e", now + 1000), "e", "past the window")
        assert.strictEqual(yield* claim("f", now + 1000 + 999_999), "e", "pending, not yet stale")
        assert.strictEqual(yield* claim("g", now + 1000 + 1_000_000), "g", "a pending claim past staleAt is taken over")
      }))

    it.effect("of 50 concurrent claims of one key exactly one wins", () =>
      Effect.gen(function*() {
        const store = yield* ResultStore.ResultStore
        const task = uniqueName("task")
        const ids = Array.from({ length: 50 }, (_, i) => `id-${i}`)
        const holders = yield* Effect.forEach(
          ids,
          (id) => store.claim({ task, key: "same", id, claimedAt: now, expiresAt: now, staleAt: now + 60_000 }),
          { concurrency: "unbounded" }
        )
        const distinct = new Set(holders)
        assert.strictEqual(distinct.size, 1, JSON.stringify([...distinct]))
      }))
  })
