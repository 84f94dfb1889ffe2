/** Helpers for tests against Redis: the URL, a raw client, the dead-letter probe, key cleanup, a server of a test's own. */
import { Duration, Effect, Layer } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createClient } from "redis"
import { ContractProbe } from "../broker/contract.js"

export const redisUrl = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379"

export type RawClient = ReturnType<typeof createClient>

/** A plain node-redis client, closed with the scope. */
export const rawClient = (url: string = redisUrl) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const client = createClient({ url })
      client.on("error", () => {})
      await client.connect()
      return client
    }),
    (client) => Effect.sync(() => client.destroy())
  )

/** Deletes every key under `prefix` (SCAN, never KEYS). */
export const deleteKeys = (client: RawClient, prefix: string) =>
  Effect.promise(async () => {
    let deleted = 0
    for await (const keys of client.scanIterator({ MATCH: `${prefix}:*`, COUNT: 1000 })) {
      if (keys.length > 0) deleted += await client.del(keys)
    }
    return deleted
  })

/** Deletes the prefix's keys when the layer is released (and before, in case of a rerun). */
export const cleanupLayer = (prefix: string, url: string = redisUrl) =>
  Layer.scopedDiscard(
    Effect.gen(function*() {
      const client = yield* rawClient(url)
      yield* deleteKeys(client, prefix)
      yield* Effect.addFinalizer(() => deleteKeys(client, prefix))
    })
  )

/** Dead letters read straight from the group's dead-letter stream. */
export const probeLayer = (prefix: string, maxMessageBytes: number, url: string = redisUrl) =>
  Layer.scoped(
    ContractProbe,
    Effect.map(rawClient(url), (client) => ({
      maxMessageBytes,
      deadLetters: (group: string) =>
        Effect.promise(async () => {
          const entries = await client.xRange(`${prefix}:dlq:${group}`, "-", "+")
          return entries.map(({ message }) => {
            const headers: Record<string, string> = {}
            for (const [name, value] of Object.entries(message)) {
              if (name.startsWith("h:")) headers[name.slice(2)] = value
            }
            return { messageId: message["i"] ?? "", reason: message["d"] ?? "", body: message["b"] ?? "", headers }
          })
        })
    }))
  )

/** A free TCP port on loopback. */
const freePort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

/**
 * A redis-server of the test's own, killed with the scope (with `args` added to its command line);
 * `restart` SIGKILLs it and starts it again on the same port and directory.
 */
export const ownServer = (persistent: boolean, extraArgs: ReadonlyArray<string> = []) =>
  Effect.gen(function*() {
    const port = yield* freePort
    const dir = mkdtempSync(join(tmpdir(), "eb-redis-"))
    const args = [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      ...(persistent ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"]),
      ...extraArgs
    ]
    let child: ChildProcess | undefined
    const start = Effect.gen(function*() {
      const started = spawn("redis-server", args, { stdio: "ignore" })
      child = started
      // Ready once it accepts connections.
      yield* Effect.timeoutFail(
        Effect.async<void>((resume) => {
          const attempt = () => {
            const socket = net.connect(port, "127.0.0.1")
            socket.once("connect", () => {
              socket.destroy()
              resume(Effect.void)
            })
            socket.once("error", () => {
              socket.destroy()
              setTimeout(attempt, 50)
            })
          }
          attempt()
        }),
        { duration: Duration.seconds(20), onTimeout: () => new Error("timed out: redis-server to accept connections") }
      )
    })
    const kill = Effect.async<void>((resume) => {
      const running = child
      if (running === undefined || running.exitCode !== null || running.signalCode !== null) {
        return resume(Effect.void)
      }
      running.once("exit", () => resume(Effect.void))
      running.kill("SIGKILL")
    })
    yield* Effect.acquireRelease(start, () =>
      Effect.zipRight(
        kill,
        Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
      ))
    return { url: `redis://127.0.0.1:${port}`, restart: Effect.zipRight(kill, start), kill, start }
  })
