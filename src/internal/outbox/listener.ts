import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import * as Pg from "pg"
import { nextRetryDelay } from "../retry.js"

/**
 * The dispatcher's own LISTEN connection. @effect/sql-pg 0.53's `listen` goes silently dead when
 * its connection is terminated (fault O4), so we hold a dedicated `pg` client: every
 * `error`/`end` event ends the session, the loop reconnects on a Schedule, re-LISTENs and then
 * asks for one poll to cover notifications sent while nobody listened.
 */

/** @internal */
export interface ListenerOptions {
  readonly config: Pg.ClientConfig
  readonly channel: string
  readonly reconnect: Schedule.Schedule<unknown, unknown>
  /** Longest wait between reconnect attempts once the schedule is exhausted. */
  readonly maxDelay: Duration.Duration
  /** Called synchronously from the driver for every notification. */
  readonly onNotify: () => void
  /** Called after each successful LISTEN (first and after reconnects). */
  readonly onListening: () => void
}

class ListenLost {
  readonly _tag = "ListenLost"
  constructor(readonly detail: string, readonly cause?: unknown) {}
}

const describe = (error: unknown): string => (error instanceof Error ? error.message : String(error))

const session = (options: ListenerOptions, connected: () => void) =>
  Effect.scoped(Effect.gen(function*() {
    const lost = yield* Deferred.make<never, ListenLost>()
    const client = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const client = new Pg.Client(options.config)
        // Handlers before connect: an unhandled pg 'error' event would crash the process.
        client.on("error", (error) => {
          Deferred.unsafeDone(lost, Effect.fail(new ListenLost(`listen connection error: ${describe(error)}`, error)))
        })
        client.on("end", () => {
          Deferred.unsafeDone(lost, Effect.fail(new ListenLost("listen connection ended")))
        })
        client.on("notification", () => options.onNotify())
        return client
      }),
      (client) =>
        Effect.tryPromise(() => client.end()).pipe(
          // end() on a connection the server already closed may never settle.
          Effect.timeoutOption("1 second"),
          Effect.catchAll((error) => Effect.logDebug("closing the listen connection failed", error.error))
        )
    )
    yield* Effect.tryPromise({
      try: () => client.connect(),
      catch: (error) => new ListenLost(`listen connect failed: ${describe(error)}`, error)
    })
    yield* Effect.tryPromise({
      try: () => client.query(`LISTEN ${Pg.escapeIdentifier(options.channel)}`),
      catch: (error) => new ListenLost(`LISTEN failed: ${describe(error)}`, error)
    })
    connected()
    options.onListening()
    return yield* Deferred.await(lost)
  }))

/**
 * Runs until interrupted; never fails.
 *
 * @internal
 */
export const run = (options: ListenerOptions): Effect.Effect<never> =>
  Effect.gen(function*() {
    let failures = 0
    while (true) {
      const exit = yield* Effect.exit(session(options, () => {
        failures = 0
      }))
      failures++
      const error = exit._tag === "Failure" ? Cause.squash(exit.cause) : undefined
      yield* Effect.logWarning("outbox listen connection lost; reconnecting").pipe(
        Effect.annotateLogs({ detail: error instanceof ListenLost ? error.detail : describe(error), failures })
      )
      const delay = yield* nextRetryDelay(options.reconnect, failures, error)
      yield* Effect.sleep(Option.getOrElse(delay, () => options.maxDelay))
    }
  }).pipe(Effect.annotateLogs({ package: "effect-background", module: "Outbox", fiber: "listen" }))
