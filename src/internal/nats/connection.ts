/**
 * One NATS connection per broker: opened with the Layer (bounded by the connect timeout), kept
 * by the client's own reconnect loop (pull consumers re-issue their pulls after a reconnect), and
 * drained when the Layer's scope closes. Its status events feed `Broker.health`; an error event
 * is recorded there, never thrown.
 */
import { jetstream, type JetStreamClient, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream"
import {
  type Authenticator,
  AuthorizationError,
  connect,
  credsAuthenticator,
  type NatsConnection,
  nkeyAuthenticator,
  tokenAuthenticator,
  usernamePasswordAuthenticator
} from "@nats-io/transport-node"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import { BrokerUnavailable } from "../../BrokerError.js"

/** @internal */
export interface Credentials {
  readonly token?: Redacted.Redacted<string> | undefined
  readonly user?: string | undefined
  readonly password?: Redacted.Redacted<string> | undefined
  /** An nkey seed (`SU…`). */
  readonly nkeySeed?: Redacted.Redacted<string> | undefined
  /** The content of a `.creds` file (JWT and seed). */
  readonly creds?: Redacted.Redacted<string> | undefined
}

/** @internal */
export interface ConnectOptions extends Credentials {
  readonly servers: ReadonlyArray<string>
  readonly name: string
  readonly connectTimeout: Duration.Duration
  /** Milliseconds between reconnect attempts. */
  readonly reconnectWait: Duration.Duration
}

/** @internal */
export interface Connection {
  readonly nc: NatsConnection
  readonly js: JetStreamClient
  readonly jsm: JetStreamManager
  /** `open`, `reconnecting` or `closed`, as the status events tell. */
  readonly state: () => "open" | "reconnecting" | "closed"
  readonly lastError: () => string | undefined
}

const authenticators = (options: Credentials): Array<Authenticator> => {
  const out: Array<Authenticator> = []
  const encoder = new TextEncoder()
  if (options.token !== undefined) out.push(tokenAuthenticator(Redacted.value(options.token)))
  if (options.user !== undefined) {
    out.push(usernamePasswordAuthenticator(options.user, Redacted.value(options.password ?? Redacted.make(""))))
  }
  if (options.nkeySeed !== undefined) out.push(nkeyAuthenticator(encoder.encode(Redacted.value(options.nkeySeed))))
  if (options.creds !== undefined) out.push(credsAuthenticator(encoder.encode(Redacted.value(options.creds))))
  return out
}

/** @internal */
export const unavailable = (reason: BrokerUnavailable["reason"], what: string, cause: unknown): BrokerUnavailable =>
  new BrokerUnavailable({
    reason,
    detail: `${what}: ${cause instanceof Error ? cause.message : String(cause)}`,
    cause
  })

const isAuth = (cause: unknown): boolean =>
  cause instanceof AuthorizationError ||
  (cause instanceof Error && /authori[sz]ation|authentication/i.test(cause.message))

/** Connects, checks JetStream is enabled, and drains on release. @internal */
export const open = (options: ConnectOptions): Effect.Effect<Connection, BrokerUnavailable, Scope.Scope> =>
  Effect.gen(function*() {
    const timeout = Duration.toMillis(options.connectTimeout)
    const auths = authenticators(options)
    const nc = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () =>
          connect({
            servers: [...options.servers],
            name: options.name,
            timeout,
            reconnect: true,
            maxReconnectAttempts: -1,
            reconnectTimeWait: Duration.toMillis(options.reconnectWait),
            waitOnFirstConnect: false,
            ...(auths.length > 0 ? { authenticator: auths } : {})
          }),
        catch: (cause) => unavailable(isAuth(cause) ? "auth" : "connect", "cannot connect to NATS", cause)
      }).pipe(
        Effect.timeoutFail({
          duration: options.connectTimeout,
          onTimeout: () =>
            new BrokerUnavailable({ reason: "timeout", detail: `no NATS connection within ${timeout} ms` })
        })
      ),
      (nc) =>
        // Drain: stop taking messages, let in-flight publishes and acks go out, then close; on a
        // dead connection give up after the connect timeout (interruptible: this is a finalizer).
        Effect.interruptible(Effect.promise(() => nc.isClosed() ? Promise.resolve() : nc.drain())).pipe(
          Effect.timeout(options.connectTimeout),
          Effect.ignore,
          Effect.zipRight(Effect.promise(() => nc.isClosed() ? Promise.resolve() : nc.close()))
        )
    )
    let state: "open" | "reconnecting" | "closed" = "open"
    let lastError: string | undefined
    // Status events drive health; an error event is recorded for it (this loop is the
    // listener, so none reaches the process as an unhandled error).
    const watch = (async () => {
      for await (const status of nc.status()) {
        switch (status.type) {
          case "disconnect":
          case "reconnecting":
            state = "reconnecting"
            break
          case "reconnect":
            state = "open"
            break
          case "close":
            state = "closed"
            break
          case "error":
            lastError = status.error.message
            break
          default:
            break
        }
      }
    })()
    watch.catch((cause: unknown) => {
      lastError = String(cause)
    })
    nc.closed().then((cause) => {
      state = "closed"
      if (cause !== undefined) lastError = cause.message
    }, (cause: unknown) => {
      lastError = String(cause)
    })
    const jsm = yield* Effect.tryPromise({
      try: () => jetstreamManager(nc, { timeout }),
      catch: (cause) => unavailable("connect", "JetStream is not available on this NATS server", cause)
    })
    return {
      nc,
      js: jetstream(nc, { timeout }),
      jsm,
      state: () => (nc.isClosed() ? "closed" : state),
      lastError: () => lastError
    }
  })
