/**
 * A small TCP proxy on loopback for network faults (no toxiproxy/netem here): point a client at
 * `127.0.0.1:<port>` and switch the mode while it runs.
 *
 * - `pass`: forward bytes both ways
 * - `blackhole`: keep both sockets open and drop every byte (a half-open connection)
 * - `reset`: send RST to every client (current and new) and close the upstream side
 */
import { Effect } from "effect"
import type { Scope } from "effect"
import * as net from "node:net"

export type ProxyMode = "pass" | "blackhole" | "reset"

export interface TcpProxy {
  readonly port: number
  readonly url: (base: string) => string
  readonly setMode: (mode: ProxyMode) => Effect.Effect<void>
  /** Connections accepted so far. */
  readonly accepted: () => number
}

export const tcpProxy = (targetHost: string, targetPort: number): Effect.Effect<TcpProxy, Error, Scope.Scope> =>
  Effect.gen(function*() {
    let mode: ProxyMode = "pass"
    let accepted = 0
    const pairs = new Set<{ readonly client: net.Socket; readonly upstream: net.Socket }>()

    const reset = (pair: { readonly client: net.Socket; readonly upstream: net.Socket }) => {
      pair.client.resetAndDestroy()
      pair.upstream.destroy()
      pairs.delete(pair)
    }

    const server = net.createServer((client) => {
      accepted++
      const upstream = net.connect(targetPort, targetHost)
      const pair = { client, upstream }
      pairs.add(pair)
      if (mode === "reset") return reset(pair)
      client.on("data", (chunk) => {
        if (mode === "pass") upstream.write(chunk)
      })
      upstream.on("data", (chunk) => {
        if (mode === "pass") client.write(chunk)
      })
      const end = () => {
        pairs.delete(pair)
        client.destroy()
        upstream.destroy()
      }
      // Socket errors (ECONNRESET after a reset) only end the pair; the test observes the client side.
      client.on("error", end)
      upstream.on("error", end)
      client.on("close", end)
      upstream.on("close", end)
    })

    const port = yield* Effect.acquireRelease(
      Effect.async<number, Error>((resume) => {
        server.once("error", (error) => resume(Effect.fail(error)))
        server.listen(0, "127.0.0.1", () => {
          const address = server.address()
          resume(
            typeof address === "object" && address !== null
              ? Effect.succeed(address.port)
              : Effect.fail(new Error("proxy has no port"))
          )
        })
      }),
      () =>
        Effect.async<void>((resume) => {
          for (const pair of pairs) reset(pair)
          server.close(() => resume(Effect.void))
        })
    )

    return {
      port,
      url: (base) => {
        const parsed = new URL(base)
        parsed.hostname = "127.0.0.1"
        parsed.port = String(port)
        return parsed.toString()
      },
      setMode: (next) =>
        Effect.sync(() => {
          mode = next
          if (next === "reset") { for (const pair of [...pairs]) reset(pair) }
        }),
      accepted: () => accepted
    }
  })
