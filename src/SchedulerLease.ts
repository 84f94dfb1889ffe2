/**
 * The Scheduler's lease port: leadership among replicas plus per-schedule slot watermarks, so
 * exactly one replica fires and a slot is claimed at most once, whatever the replicas do.
 * Implementations: {@link layerMemory} (one process; below) and `layers/PgLease` (PostgreSQL).
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import type { LeaseError } from "./SchedulerError.js"

/**
 * A claim of the due slots of one schedule, `first`..`last` (epoch ms).
 *
 * @since 0.1.0
 * @category models
 */
export interface Claim {
  readonly schedule: string
  readonly first: number
  readonly last: number
}

/**
 * A slot whose enqueue succeeded.
 *
 * @since 0.1.0
 * @category models
 */
export interface FiredSlot {
  readonly schedule: string
  readonly slot: number
}

/**
 * The persisted progress of one schedule: the latest slot claimed, and the latest slot whose
 * enqueue succeeded.
 *
 * @since 0.1.0
 * @category models
 */
export interface SlotState {
  readonly schedule: string
  readonly claimed: number | undefined
  readonly fired: number | undefined
}

/**
 * Leadership plus per-schedule slot watermarks.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** Takes or renews the lease for `owner` for `ttlMillis`; true when `owner` holds it afterwards. */
  readonly acquire: (owner: string, ttlMillis: number) => Effect.Effect<boolean, LeaseError>
  /** Gives the lease up if `owner` holds it, so a standby takes over at once. */
  readonly release: (owner: string) => Effect.Effect<void, LeaseError>
  /**
   * Atomically, and only while `owner` holds an unexpired lease: for each claim whose `first` is
   * after the schedule's claimed watermark, moves the watermark to `last`. Returns the schedules
   * won. A slot is therefore claimed at most once, whatever the replicas do.
   */
  readonly claim: (owner: string, claims: ReadonlyArray<Claim>) => Effect.Effect<ReadonlyArray<string>, LeaseError>
  /** Raises the fired watermark of each schedule (enqueue succeeded); never lowers it. */
  readonly markFired: (owner: string, slots: ReadonlyArray<FiredSlot>) => Effect.Effect<void, LeaseError>
  /** The watermarks of those of `schedules` that ever claimed a slot. */
  readonly state: (schedules: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<SlotState>, LeaseError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class SchedulerLease extends Context.Tag("effect-background/Scheduler/Lease")<SchedulerLease, Service>() {}

interface MemoryState {
  readonly holder: { readonly owner: string; readonly deadline: number } | undefined
  readonly claimed: ReadonlyMap<string, number>
  readonly fired: ReadonlyMap<string, number>
}

/**
 * An in-process lease with the semantics of `layers/PgLease` (a deadline-based lease, claims
 * fenced by holding it), time from `Clock`: one scheduler per process, or several sharing this
 * instance in tests.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<Service> = Effect.map(
  Ref.make<MemoryState>({ holder: undefined, claimed: new Map(), fired: new Map() }),
  (ref): Service => {
    const holds = (state: MemoryState, owner: string, now: number) =>
      state.holder !== undefined && state.holder.owner === owner && state.holder.deadline > now
    return {
      acquire: (owner, ttlMillis) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Ref.modify(ref, (state): [boolean, MemoryState] => {
            const holder = state.holder
            if (holder === undefined || holder.owner === owner || holder.deadline <= now) {
              return [true, { ...state, holder: { owner, deadline: now + ttlMillis } }]
            }
            return [false, state]
          })),
      release: (owner) =>
        Ref.update(ref, (state) => (state.holder?.owner === owner ? { ...state, holder: undefined } : state)),
      claim: (owner, claims) =>
        Effect.flatMap(
          Clock.currentTimeMillis,
          (now) =>
            Ref.modify(ref, (state): [ReadonlyArray<string>, MemoryState] => {
              if (!holds(state, owner, now)) return [[], state]
              const claimed = new Map(state.claimed)
              const won: Array<string> = []
              for (const c of claims) {
                const current = claimed.get(c.schedule)
                if (current === undefined || c.first > current) {
                  claimed.set(c.schedule, c.last)
                  won.push(c.schedule)
                }
              }
              return won.length === 0 ? [won, state] : [won, { ...state, claimed }]
            })
        ),
      markFired: (_owner, slots) =>
        Ref.update(ref, (state) => {
          const fired = new Map(state.fired)
          for (const s of slots) fired.set(s.schedule, Math.max(fired.get(s.schedule) ?? s.slot, s.slot))
          return { ...state, fired }
        }),
      state: (schedules) =>
        Effect.map(
          Ref.get(ref),
          (state) =>
            schedules.filter((schedule) => state.claimed.has(schedule)).map((schedule): SlotState => ({
              schedule,
              claimed: state.claimed.get(schedule),
              fired: state.fired.get(schedule)
            }))
        )
    }
  }
)

/**
 * The in-process lease ({@link makeMemory}) as a Layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<SchedulerLease> = Layer.effect(SchedulerLease, makeMemory)
