import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type * as Scheduler from "../../Scheduler.js"

/**
 * The lease and slot watermarks in memory, with the same semantics as `layers/PgLease`
 * (deadline-based lease, claims fenced by holding it), time from `Clock`.
 *
 * @internal
 */
export const make: Effect.Effect<Scheduler.LeaseService> = Effect.sync(() => {
  let holder: { owner: string; deadline: number } | undefined
  const claimed = new Map<string, number>()
  const fired = new Map<string, number>()
  const holds = (owner: string, now: number) => holder !== undefined && holder.owner === owner && holder.deadline > now
  return {
    acquire: (owner, ttlMillis) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        if (holder === undefined || holder.owner === owner || holder.deadline <= now) {
          holder = { owner, deadline: now + ttlMillis }
          return true
        }
        return false
      }),
    release: (owner) =>
      Effect.sync(() => {
        if (holder?.owner === owner) holder = undefined
      }),
    claim: (owner, claims) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        if (!holds(owner, now)) return []
        const won: Array<string> = []
        for (const c of claims) {
          const current = claimed.get(c.schedule)
          if (current === undefined || c.first > current) {
            claimed.set(c.schedule, c.last)
            won.push(c.schedule)
          }
        }
        return won
      }),
    markFired: (_owner, slots) =>
      Effect.sync(() => {
        for (const s of slots) fired.set(s.schedule, Math.max(fired.get(s.schedule) ?? s.slot, s.slot))
      }),
    state: (schedules) =>
      Effect.sync(() =>
        schedules.filter((schedule) => claimed.has(schedule)).map((schedule) => ({
          schedule,
          claimed: claimed.get(schedule),
          fired: fired.get(schedule)
        }))
      )
  }
})
