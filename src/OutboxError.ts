/**
 * The errors of the Outbox's operations. The Outbox refuses input with the rules of the Broker,
 * so that an event it accepts can be published: `EncodeError` (the payload does not encode with
 * the topic's Schema, holds NaN / ±Infinity, which JSON cannot carry, or is over the Broker's
 * `maxMessageBytes` where the service was built with a Broker), `InvalidName` (a
 * header name or value), and `InvalidOptions` for an option (`messageId`, `key`, `limit`,
 * `prune`'s `maxAge` / `batchSize`, every Layer option). The database fails with `@effect/sql`'s
 * `SqlError`: `add` runs in the caller's `SqlClient` transaction, which handles that error
 * already. So the Outbox defines no error class of its own; this module names its unions.
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Predicate from "effect/Predicate"
import type { EncodeError, InvalidName } from "./BrokerError.js"
import { isBrokerError } from "./BrokerError.js"
import type { InvalidOptions } from "./InvalidOptions.js"
import { isInvalidOptions } from "./InvalidOptions.js"

/** The `TypeId` of `@effect/sql`'s `SqlError`, by its key, so that this module does not load `@effect/sql`. */
const sqlErrorTypeId = Symbol.for("@effect/sql/SqlError")

/**
 * Why `Outbox.add` failed. `EncodeError`, `InvalidName` and `InvalidOptions` need a fix of the
 * input; nothing was inserted, and the caller's transaction can roll back.
 *
 * @since 0.1.0
 * @category errors
 */
export type AddError = EncodeError | InvalidName | InvalidOptions | SqlError

/**
 * Why `Outbox.dead` or `Outbox.prune` failed.
 *
 * @since 0.1.0
 * @category errors
 */
export type QueryError = InvalidOptions | SqlError

/**
 * Every error an Outbox operation or Layer fails with.
 *
 * @since 0.1.0
 * @category errors
 */
export type OutboxError = AddError

/**
 * True for every error an Outbox operation or Layer fails with.
 *
 * @since 0.1.0
 * @category guards
 */
export const isOutboxError = (u: unknown): u is OutboxError =>
  isInvalidOptions(u) ||
  Predicate.hasProperty(u, sqlErrorTypeId) ||
  (isBrokerError(u) && (u._tag === "EncodeError" || u._tag === "InvalidName"))
