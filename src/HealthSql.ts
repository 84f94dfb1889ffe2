/**
 * A database check for {@link Health}: `SELECT 1` through the ambient `@effect/sql` `SqlClient`
 * (PostgreSQL through `PgClient`, PGlite, or any other client).
 *
 * A sub-path of its own (`effect-background/HealthSql`) so that the root entry point does not
 * load `@effect/sql`.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import type * as Health from "./Health.js"

/**
 * `SELECT 1` through the ambient `SqlClient`: `up` when it answers; a `SqlError` (reported
 * `down` with its message) otherwise.
 *
 * @since 0.1.0
 * @category constructors
 */
export const ping: Effect.Effect<Health.CheckResult, SqlError, SqlClient.SqlClient> = Effect.flatMap(
  SqlClient.SqlClient,
  (client) => client`SELECT 1`
).pipe(
  Effect.as({ status: "up", detail: "SELECT 1 answered" } satisfies Health.CheckResult)
)
