import * as Amqp from "amqplib"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Queue from "effect/Queue"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { BrokerUnavailable } from "../../BrokerError.js"
import { coalesceWrites } from "./coalesce.js"
import { describe, type Endpoint, scrub } from "./url.js"

/** One live AMQP connection; a new one (next generation) replaces it after a drop. @internal */
export interface Connection {
  readonly model: Amqp.ChannelModel
  readonly generation: number
  /** Completes with the reason once the connection has closed. */
  readonly closed: Deferred.Deferred<string>
  /** Set while the broker blocks the connection (memory or disk alarm): publishes stall. */
  readonly blocked: { current: { readonly reason: string; readonly since: number } | undefined }
}

/** @internal */
export type State =
  | { readonly _tag: "Open"; readonly connection: Connection }
  | { readonly _tag: "Reconnecting"; readonly since: number; readonly attempts: number; readonly lastError: string }
  | { readonly _tag: "Closed"; readonly reason: string }

/** Something a driver callback wants logged; callbacks cannot run Effects, so they enqueue. @internal */
export interface LogEvent {
  readonly level: "debug" | "info" | "warning" | "error"
  readonly message: string
  readonly annotations?: Readonly<Record<string, unknown>> | undefined
}

/** @internal */
export interface Manager {
  readonly endpoint: Endpoint
  readonly state: SubscriptionRef.SubscriptionRef<State>
  /** The open connection, newer than generation `after` when given; waits up to `timeout`. */
  readonly awaitOpen: (timeout: Duration.Duration, after?: number) => Effect.Effect<Connection, BrokerUnavailable>
  /** Logs from a driver callback (synchronous, never throws). */
  readonly log: (event: LogEvent) => void
  /** Driver error text with the password removed. */
  readonly describeError: (error: unknown) => string
  /** The last connection-level error, for health. */
  readonly lastError: () => string | undefined
}

/** @internal */
export interface ManagerOptions {
  readonly endpoint: Endpoint
  readonly heartbeatSeconds: number
  readonly connectTimeout: Duration.Duration
  readonly shutdownTimeout: Duration.Duration
  readonly reconnect: Schedule.Schedule<unknown, BrokerUnavailable>
  readonly connectionName: string
  /** Declares what every connection needs (exchanges), on a short-lived channel, before use. */
  readonly setup: (channel: Amqp.Channel) => Promise<void>
}

const errorText = (error: unknown): string => (error instanceof Error ? error.message : String(error))

const errorCode = (error: unknown): unknown => (Predicate.hasProperty(error, "code") ? error.code : undefined)

const connectCodes = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "ECONNRESET",
  "EPIPE"
])

/** Maps a connect failure to a typed reason; the message never carries the password. @internal */
export const classify = (endpoint: Endpoint, error: unknown): BrokerUnavailable => {
  const text = scrub(endpoint, errorText(error))
  const where = describe(endpoint)
  const code = errorCode(error)
  if (/ACCESS_REFUSED/.test(text) || code === 403) {
    return new BrokerUnavailable({
      reason: "auth",
      detail: `${where}: access refused (check user and password): ${text}`
    })
  }
  if (/Expected ConnectionOpenOk|NOT_ALLOWED/.test(text) || code === 530) {
    return new BrokerUnavailable({
      reason: "auth",
      detail: `${where}: vhost "${endpoint.vhost}" does not exist or the user may not use it: ${text}`
    })
  }
  if (code === "ETIMEDOUT" || /ETIMEDOUT/.test(text)) {
    return new BrokerUnavailable({ reason: "timeout", detail: `${where}: connect timed out: ${text}` })
  }
  if (typeof code === "string" && connectCodes.has(code)) {
    return new BrokerUnavailable({ reason: "connect", detail: `${where}: ${code}: ${text}` })
  }
  return new BrokerUnavailable({ reason: "connect", detail: `${where}: ${text}` })
}

/** @internal */
export const make = (options: ManagerOptions): Effect.Effect<Manager, BrokerUnavailable, Scope.Scope> =>
  Effect.gen(function*() {
    const { endpoint } = options
    const events = yield* Queue.unbounded<LogEvent>()
    const clock = yield* Effect.clock
    let lastError: string | undefined
    let shuttingDown = false
    const describeError = (error: unknown) => scrub(endpoint, errorText(error))
    const log = (event: LogEvent) => {
      if (event.level === "warning" || event.level === "error") lastError = event.message
      Queue.unsafeOffer(events, event)
    }

    yield* Effect.forkScoped(
      Effect.forever(
        Effect.flatMap(Queue.take(events), (event) => {
          const write = event.level === "debug"
            ? Effect.logDebug(event.message)
            : event.level === "info"
            ? Effect.logInfo(event.message)
            : event.level === "warning"
            ? Effect.logWarning(event.message)
            : Effect.logError(event.message)
          return event.annotations === undefined ? write : Effect.annotateLogs(write, event.annotations)
        })
      ).pipe(Effect.interruptible)
    )

    const connectTimeoutMs = Duration.toMillis(options.connectTimeout)

    const open = (generation: number): Effect.Effect<Connection, BrokerUnavailable> =>
      Effect.async<Amqp.ChannelModel, BrokerUnavailable>((resume) => {
        let cancelled = false
        Amqp.connect(
          {
            protocol: endpoint.protocol,
            hostname: endpoint.hostname,
            port: endpoint.port,
            username: endpoint.username,
            password: endpoint.password,
            vhost: endpoint.vhost,
            heartbeat: options.heartbeatSeconds
          },
          {
            timeout: connectTimeoutMs,
            noDelay: true,
            clientProperties: { connection_name: options.connectionName }
          }
        ).then(
          (model) => {
            if (!cancelled) return resume(Effect.succeed(model))
            // Timed out or interrupted meanwhile: nobody will use this connection.
            model.on("error", (error) => log({ level: "debug", message: `late connection: ${describeError(error)}` }))
            model.close().then(
              undefined,
              (error) => log({ level: "debug", message: `closing a late connection failed: ${describeError(error)}` })
            )
          },
          (error) => resume(Effect.fail(classify(endpoint, error)))
        )
        return Effect.sync(() => {
          cancelled = true
        })
      }).pipe(
        Effect.flatMap((model) => attach(model, generation)),
        // The first connect runs inside acquireRelease (uninterruptible): let the timeout cut it.
        Effect.interruptible,
        Effect.timeoutFail({
          duration: options.connectTimeout,
          onTimeout: () =>
            new BrokerUnavailable({
              reason: "timeout",
              detail: `${describe(endpoint)}: no connection within ${Duration.format(options.connectTimeout)}`
            })
        })
      )

    const attach = (model: Amqp.ChannelModel, generation: number) =>
      Effect.gen(function*() {
        const closed = yield* Deferred.make<string>()
        if (!coalesceWrites(model)) {
          log({ level: "debug", message: "amqplib's muxer has an unknown shape: frames are written one by one" })
        }
        model.on("error", (error) =>
          log({ level: "warning", message: `connection error: ${describeError(error)}`, annotations: { generation } }))
        model.on("close", (error?: Error) => {
          Deferred.unsafeDone(closed, Effect.succeed(error === undefined ? "closed by client" : describeError(error)))
        })
        const blocked: Connection["blocked"] = { current: undefined }
        const blockedMessage = (reason: string) =>
          `connection blocked by the broker: ${reason}`
        model.on("blocked", (reason: string) => {
          blocked.current = { reason, since: clock.unsafeCurrentTimeMillis() }
          log({ level: "warning", message: blockedMessage(reason), annotations: { generation } })
        })
        model.on("unblocked", () => {
          // The block is over: it is no longer the last thing that went wrong.
          if (blocked.current !== undefined && lastError === blockedMessage(blocked.current.reason)) {
            lastError = undefined
          }
          blocked.current = undefined
          log({ level: "info", message: "connection unblocked", annotations: { generation } })
        })
        const connection: Connection = { model, generation, closed, blocked }
        yield* Effect.tryPromise({
          try: async () => {
            const channel = await model.createChannel()
            channel.on("error", (error: unknown) =>
              log({
                level: "warning",
                message: `declaring exchanges: ${describeError(error)}`,
                annotations: { generation }
              }))
            await options.setup(channel)
            await channel.close()
          },
          catch: (error) =>
            new BrokerUnavailable({
              reason: "connect",
              detail: `${describe(endpoint)}: declaring exchanges failed: ${describeError(error)}`
            })
        }).pipe(Effect.onExit((exit) => (exit._tag === "Success" ? Effect.void : close(connection))))
        return connection
      })

    const close = (connection: Connection): Effect.Effect<void> =>
      Effect.gen(function*() {
        if (yield* Deferred.isDone(connection.closed)) return
        const result = yield* Effect.either(
          // Finalizers are uninterruptible: without `interruptible` the timeout could not cut the wait.
          Effect.tryPromise(() => connection.model.close()).pipe(
            Effect.interruptible,
            Effect.timeout(options.shutdownTimeout)
          )
        )
        if (Either.isLeft(result)) {
          yield* Effect.logDebug(`closing the connection: ${describeError(result.left)}`)
        }
      })

    const state = yield* SubscriptionRef.make<State>({
      _tag: "Reconnecting",
      since: yield* Clock.currentTimeMillis,
      attempts: 0,
      lastError: "connecting"
    })

    yield* Effect.acquireRelease(
      Effect.tap(open(1), (connection) => SubscriptionRef.set(state, { _tag: "Open", connection })),
      () =>
        Effect.gen(function*() {
          shuttingDown = true
          const current = yield* SubscriptionRef.get(state)
          yield* SubscriptionRef.set(state, { _tag: "Closed", reason: "layer released" })
          if (current._tag === "Open") yield* close(current.connection)
        })
    )

    const reconnectLoop = Effect.gen(function*() {
      while (true) {
        const current = yield* SubscriptionRef.get(state)
        if (current._tag !== "Open") return
        const reason = yield* Deferred.await(current.connection.closed)
        if (shuttingDown) return
        const since = yield* Clock.currentTimeMillis
        yield* Effect.logWarning(`connection lost (${reason}); reconnecting`)
        let attempts = 0
        yield* SubscriptionRef.set(state, { _tag: "Reconnecting", since, attempts, lastError: reason })
        const next = yield* open(current.connection.generation + 1).pipe(
          Effect.tapError((error) => {
            attempts++
            lastError = error.message
            return SubscriptionRef.set(state, { _tag: "Reconnecting", since, attempts, lastError: error.message }).pipe(
              Effect.zipRight(Effect.logWarning(`reconnect attempt ${attempts} failed: ${error.message}`))
            )
          }),
          Effect.retry(options.reconnect),
          Effect.either
        )
        if (Either.isLeft(next)) {
          yield* SubscriptionRef.set(state, { _tag: "Closed", reason: `reconnecting gave up: ${next.left.message}` })
          yield* Effect.logError(`reconnecting gave up after ${attempts} attempts: ${next.left.message}`)
          return
        }
        yield* SubscriptionRef.set(state, { _tag: "Open", connection: next.right })
        yield* Effect.logInfo(`reconnected after ${(yield* Clock.currentTimeMillis) - since} ms`)
      }
    }).pipe(Effect.annotateLogs({ package: "effect-background", module: "RabbitMQBroker" }))

    yield* Effect.forkScoped(Effect.interruptible(reconnectLoop))

    const awaitOpen = (timeout: Duration.Duration, after = 0): Effect.Effect<Connection, BrokerUnavailable> =>
      Effect.flatMap(SubscriptionRef.get(state), (current) => {
        if (current._tag === "Open" && current.connection.generation > after) return Effect.succeed(current.connection)
        if (current._tag === "Closed") {
          return Effect.fail(new BrokerUnavailable({ reason: "closed", detail: current.reason }))
        }
        return state.changes.pipe(
          Stream.filter((s) => s._tag === "Closed" || (s._tag === "Open" && s.connection.generation > after)),
          Stream.runHead,
          Effect.timeoutFail({
            duration: timeout,
            onTimeout: () =>
              new BrokerUnavailable({
                reason: "timeout",
                detail: `no connection to ${describe(endpoint)} within ${Duration.format(timeout)}${
                  lastError === undefined ? "" : ` (last error: ${lastError})`
                }`
              })
          }),
          Effect.flatMap((found) =>
            Option.isSome(found) && found.value._tag === "Open"
              ? Effect.succeed(found.value.connection)
              : Effect.fail(new BrokerUnavailable({ reason: "closed", detail: "the broker layer was released" }))
          )
        )
      })

    return { endpoint, state, awaitOpen, log, describeError, lastError: () => lastError } satisfies Manager
  })
