/**
 * The store port of the Outbox: what `Outbox.make` (the typed `add`, `replay`, `dead`, `stats`,
 * `prune`) and `Outbox.dispatcher` need from a database, on encoded events (JSON text bodies,
 * string headers). Codecs, header rules, trace context, retry decisions and publishing live in
 * the Outbox; a store only keeps rows. `layers/PgOutbox` implements it on an `SqlClient`.
 *
 * A store is transactional with the application's own writes: `insert` runs through the ambient
 * transaction (an `SqlClient` one for PgOutbox), so its failures are `SqlError`s.
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-background/OutboxStore")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * An event as `Outbox.add` hands it to the store: already encoded and validated.
 *
 * @since 0.1.0
 * @category models
 */
export interface NewEvent {
  readonly messageId: string
  readonly topic: string
  readonly key: string | undefined
  readonly headers: Readonly<Record<string, string>> | undefined
  /** JSON text produced by the topic's Schema. */
  readonly body: string
  /** W3C traceparent of the transaction that added the event, if any. */
  readonly traceparent: string | undefined
}

/**
 * A row claimed by a dispatch batch: locked against other dispatchers until the batch ends.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClaimedEvent {
  /** The store's own row id, passed back to `markDispatched` / `remove` / `markFailed`. */
  readonly id: string
  readonly messageId: string
  readonly topic: string
  readonly key: string | undefined
  readonly headers: Readonly<Record<string, string>> | undefined
  readonly body: string
  readonly traceparent: string | undefined
  /** Publish attempts charged so far. */
  readonly attempts: number
  /** When the event was added, in epoch milliseconds. */
  readonly createdAtMs: number
  /** Pending and due now. Always true for `claim` and for the heads of `claimInKeyOrder`. */
  readonly ready: boolean
}

/**
 * What a dispatch batch decided for an event the broker did not take.
 *
 * @since 0.1.0
 * @category models
 */
export interface Failure {
  readonly id: string
  /** Text recorded as the event's last error. */
  readonly error: string
  /** `pending`: retried after `delayMs`. `dead`: given up on until `replay`. */
  readonly state: "pending" | "dead"
  readonly delayMs: number
}

/**
 * The rows of a per-key claim. `heads` are ready events that are the oldest undispatched event
 * of their key, or have no key; `successors` are the undispatched events after the keyed heads,
 * ordered by key then age, ready or not (a dead or delayed one stops its key).
 *
 * @since 0.1.0
 * @category models
 */
export interface KeyedClaim {
  readonly heads: ReadonlyArray<ClaimedEvent>
  readonly successors: ReadonlyArray<ClaimedEvent>
}

/**
 * The statements of one dispatch batch; valid only inside `Service.dispatch`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Batch {
  /** The oldest ready events no other batch holds, at most `limit`, locked until the batch ends. */
  readonly claim: (limit: number) => Effect.Effect<ReadonlyArray<ClaimedEvent>, SqlError>
  /**
   * As `claim` for `per-key` ordering: holding a key's head makes this batch the key's only
   * publisher until it ends; at most `limit` heads and `limit` successors.
   */
  readonly claimInKeyOrder: (limit: number) => Effect.Effect<KeyedClaim, SqlError>
  /** Records that the broker confirmed these events. */
  readonly markDispatched: (ids: ReadonlyArray<string>) => Effect.Effect<void, SqlError>
  /** Deletes these confirmed events instead of marking them (a retention of 0). */
  readonly remove: (ids: ReadonlyArray<string>) => Effect.Effect<void, SqlError>
  /** Charges one attempt to each event and records its error, next attempt or death. */
  readonly markFailed: (failures: ReadonlyArray<Failure>) => Effect.Effect<void, SqlError>
}

/**
 * A dead event, for inspection.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadEvent {
  readonly messageId: string
  readonly topic: string
  readonly key: string | undefined
  readonly attempts: number
  readonly lastError: string | undefined
  readonly createdAt: Date
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  /** Events waiting to be published, including those waiting for a retry. */
  readonly pending: number
  /** Pending events that failed at least once. */
  readonly retrying: number
  /** Events given up on; see `dead` and `replay`. */
  readonly dead: number
  /** Age of the oldest pending event in milliseconds (0 when none): the dispatcher's lag. */
  readonly oldestPendingAgeMs: number
  /** Events dispatched in the last minute, per second, across all dispatchers. */
  readonly dispatchRatePerSecond: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly [TypeId]: TypeId
  /** Names the store in logs and spans (PgOutbox: its table). */
  readonly label: string
  /** Inserts one event through the ambient transaction, if there is one. */
  readonly insert: (event: NewEvent) => Effect.Effect<void, SqlError>
  /**
   * Tells dispatchers in other processes that events may be due. Never fails and never waits:
   * the store sends it later, coalesced, outside the caller's transaction (or not at all).
   */
  readonly notify: Effect.Effect<void>
  /**
   * Runs `use` as one dispatch batch: one transaction that commits what `use` recorded when it
   * succeeds and rolls back (releasing the claimed events as they were) when it fails or dies.
   */
  readonly dispatch: <A, E, R>(use: (batch: Batch) => Effect.Effect<A, E, R>) => Effect.Effect<A, E | SqlError, R>
  /** Makes dead (or waiting) events with these message ids due now, from attempt 0; returns how many. */
  readonly replay: (messageIds: ReadonlyArray<string>) => Effect.Effect<number, SqlError>
  /** Dead events, oldest first, at most `limit`. */
  readonly dead: (limit: number) => Effect.Effect<ReadonlyArray<DeadEvent>, SqlError>
  readonly stats: Effect.Effect<Stats, SqlError>
  /**
   * Deletes dispatched events older than `maxAge`, in statements of at most `batchSize` rows,
   * until none is left; returns how many.
   */
  readonly prune: (maxAge: Duration.Duration, batchSize: number) => Effect.Effect<number, SqlError>
  /**
   * Cross-process wake-ups, when the store has them: runs until interrupted and never fails,
   * calling `onWake` when another process may have added events and after every (re)connection
   * (wake-ups sent while it was not listening are lost). None: dispatchers rely on their poll.
   */
  readonly listen: Option.Option<(onWake: () => void) => Effect.Effect<never>>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class OutboxStore extends Context.Tag("effect-background/OutboxStore")<OutboxStore, Service>() {}
