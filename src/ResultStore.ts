/**
 * The port a TaskQueue keeps task results and deduplication keys in, and its in-process
 * implementation. A store moves strings and numbers only: the TaskQueue encodes outcomes with
 * each task's Schemas. `layers/PgResultStore` implements it on PostgreSQL.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import * as memory from "./internal/taskResultStore.js"
import type { ResultStoreError } from "./TaskError.js"

export {
  /**
   * @since 0.1.0
   * @category errors
   */
  ResultStoreError
} from "./TaskError.js"

/**
 * A finished task's outcome as stored: JSON text encoded with the task's Schemas. Times are
 * epoch milliseconds.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoredResult {
  readonly id: string
  readonly task: string
  readonly outcome: string
  readonly finishedAt: number
  readonly expiresAt: number
}

/**
 * A deduplication key claim. A claim is live until `expiresAt`, and after that while its task is
 * pending (not `done`) but no longer than `staleAt` — so a claim whose task was lost (a crash
 * between claim and publish, a poison payload) cannot block its key forever.
 *
 * @since 0.1.0
 * @category models
 */
export interface KeyClaim {
  readonly task: string
  readonly key: string
  readonly id: string
  readonly claimedAt: number
  readonly expiresAt: number
  readonly staleAt: number
}

/**
 * What a result store implements.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** Saves (or replaces, for a re-run) a task's outcome. */
  readonly put: (result: StoredResult) => Effect.Effect<void, ResultStoreError>
  /** The outcome of task `id` unless it expired before `now`. */
  readonly get: (id: string, now: number) => Effect.Effect<Option.Option<StoredResult>, ResultStoreError>
  /**
   * Claims `key` for task `id` unless a live claim exists; returns the id holding the key
   * (`claim.id` when this call won). Atomic: of concurrent claims exactly one wins.
   */
  readonly claim: (claim: KeyClaim) => Effect.Effect<string, ResultStoreError>
  /** Drops the claim if `id` still holds it (its enqueue failed). */
  readonly release: (task: string, key: string, id: string) => Effect.Effect<void, ResultStoreError>
  /** Marks the claim held by `id` done: it stays live only until its `expiresAt`. */
  readonly complete: (task: string, key: string, id: string) => Effect.Effect<void, ResultStoreError>
  /** Optional: waits for `put` of `id` instead of polling `get`. */
  readonly await?: ((id: string) => Effect.Effect<StoredResult, ResultStoreError>) | undefined
}

/**
 * @since 0.1.0
 * @category tags
 */
export class ResultStore extends Context.Tag("effect-background/ResultStore")<ResultStore, Service>() {}

/**
 * An in-process result store (tests, single-process apps): state lives in the returned service,
 * time comes from `Clock`, and `await` needs no polling.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<Service> = memory.make

/**
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<ResultStore> = Layer.effect(ResultStore, memory.make)
