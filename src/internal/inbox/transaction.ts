import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"

/**
 * The inbox's transaction with its record in BEGIN's round trip. A run's first statement is
 * always the record, and on PostgreSQL a transaction's BEGIN costs a round trip of its own, so
 * `begin; insert …` travels as one simple-protocol query: three round trips per message (begin
 * with the record, the handler's statement, commit), as many as the handler's own transaction.
 * Everything else is what `SqlClient.withTransaction` does: the handler's statements, `Outbox.add`
 * and nested `withTransaction`s (savepoints) join it through `SqlClient.TransactionConnection`; it
 * commits on success and rolls back on failure or interruption; the connection goes back after.
 */

/**
 * Whether the client runs several statements in one unparameterised query and returns each
 * one's rows (node-postgres does; a client that does not gets the plain transaction).
 *
 * @internal
 */
export const supportsMultiStatement = (sql: SqlClient.SqlClient): Effect.Effect<boolean> =>
  Effect.scoped(
    Effect.flatMap(sql.reserve, (conn) => conn.executeUnprepared("select 1 as a; select 2 as b", [], undefined))
  )
    .pipe(
      Effect.map((results) => {
        const [first, second]: ReadonlyArray<unknown> = results
        return results.length === 2 && Array.isArray(first) && Array.isArray(second)
      }),
      Effect.orElseSucceed(() => false)
    )

const recorded = (results: ReadonlyArray<unknown>): boolean => {
  const rows = results[1]
  return Array.isArray(rows) && rows.length > 0
}

/**
 * Runs `body` in a new transaction that `record` (one statement returning a row when it
 * recorded) opens; `body` learns whether it recorded.
 *
 * @internal
 */
export const withRecord = <A, E, R>(
  sql: SqlClient.SqlClient,
  record: string,
  body: (recorded: boolean) => Effect.Effect<A, E, R>
): Effect.Effect<A, E | SqlError, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.useSpan(
      "sql.transaction",
      { kind: "client", captureStackTrace: false },
      (span) =>
        Effect.flatMap(Scope.make(), (scope) => {
          const transaction = Effect.flatMap(Scope.extend(sql.reserve, scope), (conn) => {
            // As in SqlClient.withTransaction: a failed commit or rollback is a defect.
            const end = (statement: "commit" | "rollback") =>
              Effect.orDie(conn.executeUnprepared(statement, [], undefined))
            return conn.executeUnprepared(`begin; ${record}`, [], undefined).pipe(
              // The record failed after BEGIN: the transaction is aborted and must end here. The
              // record's error is the one to report; a connection that cannot roll back is broken.
              Effect.tapError(() =>
                Effect.catchAllCause(
                  conn.executeUnprepared("rollback", [], undefined),
                  (cause) => Effect.logWarning("inbox: rollback after a failed record failed", cause)
                )
              ),
              Effect.flatMap((results) =>
                restore(body(recorded(results))).pipe(
                  Effect.provideService(SqlClient.TransactionConnection, [conn, 0] as const),
                  Effect.provideService(Tracer.ParentSpan, span),
                  Effect.exit,
                  Effect.flatMap((exit) => Effect.zipRight(end(Exit.isSuccess(exit) ? "commit" : "rollback"), exit))
                )
              )
            )
          })
          return Effect.flatMap(Effect.exit(transaction), (exit) => Effect.zipRight(Scope.close(scope, exit), exit))
        })
    )
  )
