import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Inbox from "../../Inbox.js"
import * as prune from "./prune.js"

interface Entry {
  readonly at: number
  readonly result: unknown
}

/**
 * In-process inbox: a record is kept only when the effect succeeded. A run of a pair another run
 * holds waits for it to end, then looks again (skip if it recorded, run if it did not).
 *
 * @internal
 */
export const make: Effect.Effect<Inbox.Service> = Effect.sync(() => {
  const records = new Map<string, Entry>()
  const running = new Map<string, Deferred.Deferred<void>>()

  const run = <A, E, R>(
    consumer: string,
    messageId: string,
    effect: Effect.Effect<A, E, R>,
    options?: Inbox.RunOptions<A>
  ): Effect.Effect<Inbox.Outcome<A>, E, R> => {
    const key = `${consumer}\u0000${messageId}`
    const attempt: Effect.Effect<Inbox.Outcome<A>, E, R> = Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        const record = records.get(key)
        if (record !== undefined) return Effect.succeed({ _tag: "Duplicate", result: record.result } as const)
        const holder = running.get(key)
        if (holder !== undefined) return Effect.zipRight(restore(Deferred.await(holder)), attempt)
        const done = Deferred.unsafeMake<void>(FiberId.none)
        running.set(key, done)
        const body = Effect.gen(function*() {
          const value = yield* effect
          const result = options?.result === undefined ? null : yield* options.result(value)
          records.set(key, { at: yield* Clock.currentTimeMillis, result: result ?? null })
          return { _tag: "Ran", value } as const
        })
        return restore(body).pipe(Effect.ensuring(Effect.suspend(() => {
          running.delete(key)
          return Deferred.succeed(done, undefined)
        })))
      })
    )
    return attempt
  }

  return {
    [Inbox.TypeId]: Inbox.TypeId,
    run,
    prune: (options) =>
      Effect.flatMap(prune.check(options), ([maxAge]) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          const before = now - Duration.toMillis(maxAge)
          let deleted = 0
          for (const [key, entry] of records) {
            if (entry.at < before) {
              records.delete(key)
              deleted++
            }
          }
          return deleted
        }))
  }
})
