import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { RESP_TYPES } from "redis"
import type * as BrokerTransport from "../../src/BrokerTransport.js"
import * as codec from "../../src/internal/redis/codec.js"
import { Packer } from "../../src/internal/redis/pack.js"
import * as scripts from "../../src/internal/redis/scripts.js"
import { runId } from "../fixtures/env.js"
import { deleteKeys, rawClient } from "../support/redis.js"

const prefix = `tpack${runId}`
const buffers = { typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer } } as const

const message = (n: number, body: Buffer, extra: Partial<BrokerTransport.TransportMessage> = {}) => ({
  routingKey: "orders",
  body,
  headers: { "x-tenant": `tenant-${n}`, "ünï cödé": "välue ✓" },
  metadata: { "x-eb-task-key": `key-${n}` },
  messageId: `id-${n}`,
  correlationId: n % 2 === 0 ? `corr-${n}` : undefined,
  publishedAt: 1_700_000_000_000 + n,
  priority: undefined,
  expiration: n % 3 === 0 ? 60_000 : undefined,
  delay: undefined,
  persistent: true,
  ...extra
})

// Bodies across every length boundary of the string formats (str8, str16, str32) and every byte value.
const bodies = [
  Buffer.alloc(0),
  Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
  Buffer.alloc(255, 7),
  Buffer.alloc(65_535, 1),
  Buffer.alloc(65_536, 2),
  Buffer.from(JSON.stringify({ note: "x".repeat(100) }))
]

describe("Redis packed publish", () => {
  it.scoped("a chunk packed by Packer and unpacked by the script stores exactly the fields codec.toFields gives", () =>
    Effect.gen(function*() {
      const client = yield* rawClient()
      yield* Effect.addFinalizer(() => deleteKeys(client, prefix))
      const stream = `${prefix}:s:orders`
      yield* Effect.promise(() => client.sAdd(`${prefix}:groups:orders`, "g"))
      const messages = bodies.map((body, n) => message(n, body, n === 1 ? { headers: { long: "y".repeat(70) } } : {}))
      const packer = new Packer(16)
      for (const m of messages) packer.add(codec.toFields(m))
      const count = yield* Effect.promise(() =>
        client.sendCommand(["EVAL", scripts.publishMany.lua, "2", `${prefix}:groups:orders`, stream, packer.finish()])
      )
      assert.strictEqual(Number(count), messages.length)
      const stored = yield* Effect.promise(() =>
        client.sendCommand<Array<[Buffer, Array<Buffer>]>>(["XRANGE", stream, "-", "+"], buffers)
      )
      assert.strictEqual(stored.length, messages.length)
      stored.forEach(([, fields], n) => {
        const m = messages[n]
        if (m === undefined) return assert.fail("missing message")
        assert.deepStrictEqual(fields, codec.toFields(m).map((field) => Buffer.from(field)))
      })
    }))
})
