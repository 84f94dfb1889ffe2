/**
 * The Inbox contract, run on PgInbox and on the in-memory inbox. "Effects" are whatever the
 * implementation's test counts: rows of a table written in the handler's transaction (PgInbox),
 * a counter (memory).
 */
import { assert, layer } from "@effect/vitest"
import type { Layer } from "effect"
import { Data, Deferred, Effect, Either, Exit, Fiber } from "effect"
import { Inbox } from "../../src/index.js"
import { uniqueName } from "../fixtures/env.js"

/** What the contract needs besides the Inbox: an effect to run exactly once, and its count. */
export interface Effects<R> {
  /** One effect of a handler (a row in the handler's own table, a counter increment). */
  readonly write: (label: string) => Effect.Effect<void, never, R>
  /** How many times `label` was written and kept (committed). */
  readonly count: (label: string) => Effect.Effect<number, never, R>
  /** Whether a failed handler's writes are rolled back with it (true on a database). */
  readonly transactional: boolean
}

class Boom extends Data.TaggedError("Boom")<{ readonly message: string }> {}

export const inboxContract = <R, E>(
  name: string,
  inboxLayer: Layer.Layer<Inbox.Inbox | R, E>,
  effects: Effects<R>
): void => {
  layer(inboxLayer, { excludeTestServices: true, timeout: "60 seconds" })(`Inbox contract (${name})`, (it) => {
    it.effect("a redelivered message's effects happen once; the duplicate is skipped", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox.Inbox
        const consumer = uniqueName("c")
        const label = uniqueName("once")
        const first = yield* inbox.run(consumer, "m-1", effects.write(label))
        const second = yield* inbox.run(consumer, "m-1", effects.write(label))
        assert.strictEqual(first._tag, "Ran")
        assert.strictEqual(second._tag, "Duplicate")
        assert.strictEqual(yield* effects.count(label), 1)
        // another consumer, or another message, is not a duplicate
        assert.strictEqual((yield* inbox.run(uniqueName("c"), "m-1", effects.write(label)))._tag, "Ran")
        assert.strictEqual((yield* inbox.run(consumer, "m-2", effects.write(label)))._tag, "Ran")
        assert.strictEqual(yield* effects.count(label), 3)
      }))

    it.effect("consumers and ids of any text (quotes, backslashes, SQL, non-ASCII) are told apart exactly", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox.Inbox
        const label = uniqueName("text")
        const hostile = ["o'neil", "a\\b", "\\'); drop table x; --", "E'x'", "$1", "zürich-✓-🦀", "a\\", "'"]
        for (const text of hostile) {
          const consumer = uniqueName("c") + text
          assert.strictEqual((yield* inbox.run(consumer, text, effects.write(label)))._tag, "Ran", text)
          assert.strictEqual((yield* inbox.run(consumer, text, effects.write(label)))._tag, "Duplicate", text)
          assert.strictEqual((yield* inbox.run(consumer, `${text} `, effects.write(label)))._tag, "Ran", text)
        }
        assert.strictEqual(yield* effects.count(label), hostile.length * 2)
      }))

    it.effect("a failed handler leaves no record: the retry runs it again", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox.Inbox
        const consumer = uniqueName("c")
        const label = uniqueName("fail")
        const failed = yield* Effect.either(
          inbox.run(consumer, "m", Effect.zipRight(effects.write(label), new Boom({ message: "no" })))
        )
        assert.isTrue(Either.isLeft(failed) && failed.left._tag === "Boom")
        if (effects.transactional) assert.strictEqual(yield* effects.count(label), 0, "rolled back with the record")
        const retried = yield* inbox.run(consumer, "m", effects.write(label))
        assert.strictEqual(retried._tag, "Ran")
        assert.strictEqual((yield* inbox.run(consumer, "m", effects.write(label)))._tag, "Duplicate")
        assert.strictEqual(yield* effects.count(label), effects.transactional ? 1 : 2)
      }))

    it.effect("a defect or an interruption leaves no record either", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox.Inbox
        const consumer = uniqueName("c")
        const label = uniqueName("defect")
        const died = yield* Effect.exit(
          inbox.run(consumer, "d", Effect.zipRight(effects.write(label), Effect.die("x")))
        )
        assert.isTrue(Exit.isFailure(died))
        const started = yield* Deferred.make<void>()
        const fiber = yield* Effect.fork(
          inbox.run(consumer, "i", Effect.zipRight(Deferred.succeed(started, undefined), Effect.never))
        )
        yield* Deferred.await(started)
        yield* Fiber.interrupt(fiber)
        assert.strictEqual((yield* inbox.run(consumer, "d", effects.write(label)))._tag, "Ran")
        assert.strictEqual((yield* inbox.run(consumer, "i", effects.write(label)))._tag, "Ran")
      }))

    it.effect("two concurrent deliveries of one message commit its effects once", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox.Inbox
        const consumer = uniqueName("c")
        const label = uniqueName("race")
        const inside = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        // The first holds the message (inside its transaction) until the second has started.
        const first = yield* Effect.fork(inbox.run(
          consumer,
          "m",
          Effect.zipRight(
            effects.write(label),
            Effect.zipRight(Deferred.succeed(inside, undefined), Deferred.await(release))
          )
        ))
        yield* Deferred.await(inside)
        const second = yield* Effect.fork(inbox.run(consumer, "m", effects.write(label)))
        yield* Effect.sleep("200 millis") // the second is now waiting on the first
        yield* Deferred.succeed(release, undefined)
        const outcomes = [(yield* Fiber.join(first))._tag, (yield* Fiber.join(second))._tag]
        assert.deepStrictEqual(outcomes, ["Ran", "Duplicate"])
        assert.strictEqual(yield* effects.count(label), 1)
      }))

    it.effect("a concurrent delivery runs when the one holding the message fails", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox.Inbox
        const consumer = uniqueName("c")
        const label = uniqueName("race-fail")
        const inside = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const first = yield* Effect.fork(Effect.either(inbox.run(
          consumer,
          "m",
          Effect.zipRight(
            Deferred.succeed(inside, undefined),
            Effect.zipRight(Deferred.await(release), new Boom({ message: "first fails" }))
          )
        )))
        yield* Deferred.await(inside)
        const second = yield* Effect.fork(inbox.run(consumer, "m", effects.write(label)))
        yield* Effect.sleep("200 millis")
        yield* Deferred.succeed(release, undefined)
        assert.isTrue(Either.isLeft(yield* Fiber.join(first)))
        assert.strictEqual((yield* Fiber.join(second))._tag, "Ran")
        assert.strictEqual(yield* effects.count(label), 1)
      }))

    it.effect("a stored result is handed to duplicates", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox.Inbox
        const consumer = uniqueName("c")
        const result = (value: number) => Effect.succeed({ doubled: value * 2 })
        const ran = yield* inbox.run(consumer, "r", Effect.succeed(21), { result })
        const again = yield* inbox.run(consumer, "r", Effect.succeed(0), { result })
        assert.deepStrictEqual(ran, { _tag: "Ran", value: 21 })
        assert.deepStrictEqual(again, { _tag: "Duplicate", result: { doubled: 42 } })
        const none = yield* inbox.run(consumer, "no-result", Effect.void)
        assert.strictEqual(none._tag, "Ran")
        assert.deepStrictEqual(yield* inbox.run(consumer, "no-result", Effect.void), {
          _tag: "Duplicate",
          result: null
        })
      }))

    it.effect("prune deletes records older than maxAge only; a pruned message is no longer detected", () =>
      Effect.gen(function*() {
        const inbox = yield* Inbox.Inbox
        const consumer = uniqueName("c")
        yield* inbox.run(consumer, "old", Effect.void)
        yield* Effect.sleep("1200 millis")
        yield* inbox.run(consumer, "new", Effect.void)
        const deleted = yield* inbox.prune({ maxAge: "1 second", batchSize: 1 })
        assert.isAtLeast(deleted, 1)
        assert.strictEqual((yield* inbox.run(consumer, "new", Effect.void))._tag, "Duplicate")
        assert.strictEqual((yield* inbox.run(consumer, "old", Effect.void))._tag, "Ran")
        const bad = yield* Effect.either(inbox.prune({ maxAge: "1 second", batchSize: 0 }))
        assert.isTrue(Either.isLeft(bad) && bad.left._tag === "InvalidOptions")
      }))
  })
}
