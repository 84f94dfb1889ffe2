import { assert, describe, it } from "@effect/vitest"
import * as MessageId from "../../src/internal/messageId.js"

describe("message ids (UUIDv7)", () => {
  it("carry their creation time to the millisecond, with the version and variant bits set", () => {
    for (const now of [0, 1, 0xffff, 0x10000, Date.UTC(2026, 10, 25, 12, 0, 0, 123), 2 ** 48 - 1]) {
      const id = MessageId.make(now)
      assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
      assert.strictEqual(MessageId.millisOf(id), now)
    }
  })

  it("millisOf of the id just made is the time its text tells, even for a fractional `now`", () => {
    const id = MessageId.make(1_800_000_000_000.75)
    assert.strictEqual(MessageId.millisOf(id), parseInt(id.slice(0, 8) + id.slice(9, 13), 16))
    assert.strictEqual(MessageId.millisOf(id), 1_800_000_000_000)
  })

  it("are unique, and other ids tell no time", () => {
    const ids = new Set(Array.from({ length: 100_000 }, () => MessageId.make(1_800_000_000_000)))
    assert.strictEqual(ids.size, 100_000)
    assert.isUndefined(MessageId.millisOf(crypto.randomUUID()))
    assert.isUndefined(MessageId.millisOf("order-1"))
    assert.isUndefined(MessageId.millisOf("01a212f9-b1ae-7812-c269-5bc4241bb01a"), "wrong variant")
    assert.isUndefined(MessageId.millisOf("01a212f9-b1ae-6812-8269-5bc4241bb01a"), "wrong version")
    assert.isUndefined(MessageId.millisOf("01a212f9-b1ae-7812-8269-5bc4241bb01g"), "not hex")
    assert.isUndefined(MessageId.millisOf("01a212f9b-1ae-7812-8269-5bc4241bb01a"), "dash misplaced")
    assert.strictEqual(MessageId.millisOf("01A212F9-B1AE-7812-B269-5BC4241BB01A"), 0x01a212f9b1ae, "upper case")
  })

  it("millisOf gives each id its own time, whatever id it read before (its cache never changes an answer)", () => {
    const now = Date.UTC(2026, 11, 4, 3, 0, 0, 7)
    const ids = [
      MessageId.make(now),
      MessageId.make(now),
      MessageId.make(now + 1),
      MessageId.make(now - 1),
      MessageId.make(0),
      MessageId.make(2 ** 48 - 1),
      MessageId.make(now).toUpperCase(),
      MessageId.make(now + 1).toUpperCase(),
      crypto.randomUUID(),
      "order-1",
      `${MessageId.make(now).slice(0, 35)}g`
    ]
    // Computed apart from the module: the RFC 9562 shape and the first 48 bits.
    const expected = (id: string) =>
      /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i.test(id)
        ? parseInt(id.slice(0, 8) + id.slice(9, 13), 16)
        : undefined
    for (const before of ids) {
      for (const id of ids) {
        MessageId.millisOf(before)
        assert.strictEqual(MessageId.millisOf(id), expected(id), `${id} after ${before}`)
      }
    }
  })
})
