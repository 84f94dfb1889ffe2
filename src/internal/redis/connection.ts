/**
 * One Redis connection (node-redis 5) as a scoped resource: connect bounded by `connectTimeout`,
 * reconnect with a capped exponential backoff, the client's 'error' events logged (never thrown),
 * and replies as Buffers (bodies are bytes). Commands are never queued while disconnected
 * (`disableOfflineQueue`): a command either reaches the server on a live connection or fails at
 * once, and one in flight when the connection drops fails (`SocketClosedUnexpectedlyError`)
 * rather than being silently resent later.
 */
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import { ClientClosedError, ClientOfflineError, createClient, ErrorReply, RESP_TYPES } from "redis"
import { BrokerUnavailable } from "../../BrokerError.js"

/** What the transport needs of a client (a structural view of node-redis's client). @internal */
export interface Client {
  readonly sendCommand: <T>(
    args: ReadonlyArray<string | Buffer>,
    options?: { readonly typeMapping?: typeof bufferReplies; readonly abortSignal?: AbortSignal }
  ) => Promise<T>
  readonly isReady: boolean
  readonly isOpen: boolean
}

/** Bulk strings as Buffers: bodies are bytes and field names are decoded once, where needed. */
const bufferReplies = { [RESP_TYPES.BLOB_STRING]: Buffer } as const
const bufferOptions = { typeMapping: bufferReplies } as const

/** @internal */
export interface Endpoint {
  readonly url: Redacted.Redacted<string>
  readonly password: Redacted.Redacted<string> | undefined
  readonly tls: boolean
  readonly connectTimeoutMs: number
}

/** @internal */
export interface Connection {
  readonly client: Client
  /** Sends a command; replies keep bulk strings as Buffers. */
  readonly send: <T>(args: ReadonlyArray<string | Buffer>, signal?: AbortSignal) => Promise<T>
  /** Sends a command whose reply is not read (no Buffer copies): `XADD` on the publish path. */
  readonly sendPlain: (args: ReadonlyArray<string | Buffer>) => Promise<unknown>
  /** The last connection error seen, for health. */
  readonly lastError: () => string | undefined
  /** Waits until the client is ready (connected and authenticated), at most `timeoutMs`. */
  readonly awaitReady: (timeoutMs: number) => Effect.Effect<void, BrokerUnavailable>
  /** Closes the connection now (idempotent); commands in flight fail. */
  readonly destroy: () => void
}

/** Reconnect delays: 100 ms doubling, capped at 5 s, jittered; never gives up. @internal */
export const reconnectDelay = (retries: number): number => {
  const base = Math.min(5000, 100 * 2 ** Math.min(retries, 10))
  return Math.round(base / 2 + Math.random() * base / 2)
}

/** The command was never sent: the client is reconnecting or closed. @internal */
export const isUnsent = (error: unknown): boolean =>
  error instanceof ClientOfflineError || error instanceof ClientClosedError

/** The server answered with an error (the command was refused, not lost). @internal */
export const isReply = (error: unknown): boolean => error instanceof ErrorReply

/** @internal */
export const describeError = (error: unknown): string =>
  error instanceof Error ? `${error.name}: ${error.message}` : String(error)

/** Where we connect, without credentials. @internal */
export const describe = (url: Redacted.Redacted<string>): string => {
  try {
    const parsed = new URL(Redacted.value(url))
    return `${parsed.protocol}//${parsed.host}${parsed.pathname === "/" ? "" : parsed.pathname}`
  } catch {
    return "(unparsable url)"
  }
}

/** @internal */
export const make = (
  endpoint: Endpoint,
  name: string,
  /** Lua scripts to `SCRIPT LOAD` on every (re)connect, before any other command is written. */
  preload: ReadonlyArray<string> = []
): Effect.Effect<Connection, BrokerUnavailable, Scope.Scope> =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<never>()
    const log = (message: string) => Runtime.runFork(runtime)(Effect.logWarning(message))
    let lastError: string | undefined
    let logged = false
    // Before the first success a failed attempt fails the build at once (closed port, wrong
    // password); after it, drops are reconnected forever.
    let connectedOnce = false
    const client = createClient({
      url: Redacted.value(endpoint.url),
      ...(endpoint.password === undefined ? {} : { password: Redacted.value(endpoint.password) }),
      name,
      disableOfflineQueue: true,
      socket: {
        connectTimeout: endpoint.connectTimeoutMs,
        reconnectStrategy: (retries: number) => connectedOnce ? reconnectDelay(retries) : false,
        ...(endpoint.tls ? { tls: true as const } : {})
      }
    })
    // An 'error' event without a listener would crash the process: record and log instead (once per outage).
    client.on("error", (error: unknown) => {
      lastError = describeError(error)
      if (!logged) {
        logged = true
        log(`redis connection "${name}": ${lastError}`)
      }
    })
    // Registered before anyone can wait for 'ready', so these are the first commands queued.
    client.on("ready", () => {
      connectedOnce = true
      logged = false
      for (const lua of preload) {
        client.sendCommand(["SCRIPT", "LOAD", lua]).catch((error: unknown) => {
          lastError = describeError(error)
          log(`redis connection "${name}": loading a script failed (it is loaded on first use): ${lastError}`)
        })
      }
    })
    const view: Client = client
    let destroyed = false
    const destroy = () => {
      if (destroyed) return
      destroyed = true
      try {
        client.destroy()
      } catch (error) {
        lastError = describeError(error)
      }
    }
    yield* Effect.addFinalizer(() => Effect.sync(destroy))
    // Outside the (uninterruptible) acquisition, so the timeout can interrupt a connect that
    // keeps retrying (node-redis reconnects even before the first success).
    yield* Effect.tryPromise({
      try: () => client.connect(),
      catch: (error) =>
        new BrokerUnavailable({
          reason: /WRONGPASS|NOAUTH|NOPERM|\bAUTH\b/.test(describeError(error)) ? "auth" : "connect",
          detail: `connecting to ${describe(endpoint.url)}: ${describeError(error)}`
        })
    }).pipe(
      Effect.timeoutFail({
        duration: endpoint.connectTimeoutMs,
        onTimeout: () =>
          new BrokerUnavailable({
            reason: "timeout",
            detail: `connecting to ${describe(endpoint.url)} took over ${endpoint.connectTimeoutMs} ms`
          })
      }),
      Effect.onError(() => Effect.sync(destroy))
    )
    const awaitReady = (timeoutMs: number): Effect.Effect<void, BrokerUnavailable> =>
      client.isReady ? Effect.void : Effect.async<void, BrokerUnavailable>((resume) => {
        const ready = () => {
          clearTimeout(timer)
          resume(Effect.void)
        }
        const timer = setTimeout(() => {
          client.off("ready", ready)
          resume(Effect.fail(
            new BrokerUnavailable({
              reason: client.isOpen ? "timeout" : "closed",
              detail: `no connection to ${describe(endpoint.url)} within ${timeoutMs} ms${
                lastError === undefined ? "" : `: ${lastError}`
              }`
            })
          ))
        }, timeoutMs)
        client.once("ready", ready)
        return Effect.sync(() => {
          clearTimeout(timer)
          client.off("ready", ready)
        })
      })
    return {
      client: view,
      send: <T>(args: ReadonlyArray<string | Buffer>, signal?: AbortSignal) =>
        view.sendCommand<T>(
          args,
          signal === undefined ? bufferOptions : {
            typeMapping: bufferReplies,
            abortSignal: signal
          }
        ),
      sendPlain: (args) => view.sendCommand<unknown>(args),
      lastError: () => lastError,
      awaitReady,
      destroy
    }
  })
