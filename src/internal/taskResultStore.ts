import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import type * as ResultStore from "../ResultStore.js"
import type { ResultStoreError } from "../TaskError.js"

interface Claim {
  readonly id: string
  readonly expiresAt: number
  readonly staleAt: number
  readonly done: boolean
}

interface Waiter {
  readonly deferred: Deferred.Deferred<ResultStore.StoredResult, ResultStoreError>
  count: number
}

const claimKey = (task: string, key: string): string => `${task}\u0000${key}`

/**
 * In-process result store. Every operation is synchronous inside one `Effect.sync`, so claims are
 * atomic without locks; expired rows are dropped on access and swept on `put`.
 *
 * @internal
 */
export const make: Effect.Effect<ResultStore.Service> = Effect.sync(() => {
  const results = new Map<string, ResultStore.StoredResult>()
  const claims = new Map<string, Claim>()
  const waiters = new Map<string, Waiter>()
  let puts = 0

  const sweep = (now: number) => {
    for (const [id, result] of results) if (result.expiresAt <= now) results.delete(id)
    for (const [key, claim] of claims) {
      if (claim.expiresAt <= now && (claim.done || claim.staleAt <= now)) claims.delete(key)
    }
  }

  const put = (result: ResultStore.StoredResult) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.suspend(() => {
        if (++puts % 1000 === 0) sweep(now)
        results.set(result.id, result)
        const waiter = waiters.get(result.id)
        if (waiter === undefined) return Effect.void
        waiters.delete(result.id)
        return Deferred.succeed(waiter.deferred, result)
      }))

  const get = (id: string, now: number) =>
    Effect.sync(() => {
      const result = results.get(id)
      if (result === undefined) return Option.none()
      if (result.expiresAt <= now) {
        results.delete(id)
        return Option.none()
      }
      return Option.some(result)
    })

  const claim = (request: ResultStore.KeyClaim) =>
    Effect.sync(() => {
      const k = claimKey(request.task, request.key)
      const existing = claims.get(k)
      const now = request.claimedAt
      if (
        existing !== undefined && (existing.expiresAt > now || (!existing.done && existing.staleAt > now))
      ) return existing.id
      claims.set(k, { id: request.id, expiresAt: request.expiresAt, staleAt: request.staleAt, done: false })
      return request.id
    })

  const release = (task: string, key: string, id: string) =>
    Effect.sync(() => {
      const k = claimKey(task, key)
      if (claims.get(k)?.id === id) claims.delete(k)
    })

  const complete = (task: string, key: string, id: string) =>
    Effect.sync(() => {
      const k = claimKey(task, key)
      const existing = claims.get(k)
      if (existing?.id === id) claims.set(k, { ...existing, done: true })
    })

  const await_ = (id: string): Effect.Effect<ResultStore.StoredResult, ResultStoreError> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.suspend(() => {
        const found = results.get(id)
        if (found !== undefined && found.expiresAt > now) return Effect.succeed(found)
        let waiter = waiters.get(id)
        if (waiter === undefined) {
          waiter = { deferred: Deferred.unsafeMake(FiberId.none), count: 0 }
          waiters.set(id, waiter)
        }
        const w = waiter
        w.count++
        return Deferred.await(w.deferred).pipe(
          Effect.ensuring(Effect.sync(() => {
            // The last waiter to give up removes the entry, so abandoned ids do not leak.
            if (--w.count === 0 && waiters.get(id) === w) waiters.delete(id)
          }))
        )
      }))

  return { put, get, claim, release, complete, await: await_ }
})
