/** Helpers for tests against Redis: the URL, a raw client, the dead-letter probe, key cleanup, a server of a test's own. */
import { Effect, Layer } from "effect"
import { createClient } from "redis"
import { ContractProbe } from "../broker/contract.js"
import { ownProcess } from "./ownProcess.js"

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

/**
 * A redis-server of the test's own, killed with the scope (with `extraArgs` added to its command
 * line); `restart` SIGKILLs it and starts it again on the same port and directory.
 */
export const ownServer = (persistent: boolean, extraArgs: ReadonlyArray<string> = []) =>
  Effect.map(
    ownProcess("redis-server", (port, dir) => [
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
    ]),
    (server) => ({
      ...server,
      url: `redis://127.0.0.1:${server.port}`,
      restart: Effect.zipRight(server.kill, server.start)
    })
  )
