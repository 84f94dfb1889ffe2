import { assert, describe, it } from "@effect/vitest"
import { Fifo } from "../../src/internal/fifo.js"

describe("Fifo (a consumer's held deliveries)", () => {
  it("hands items back in order through a backlog that never empties, and drains the rest", () => {
    const fifo = new Fifo<number>()
    const out: Array<number> = []
    let next = 0
    for (let i = 0; i < 3000; i++) fifo.push(next++)
    // 100,000 steps with ~3,000 always queued: the consumed front is dropped along the way.
    for (let step = 0; step < 100_000; step++) {
      fifo.push(next++)
      const item = fifo.shift()
      if (item !== undefined) out.push(item)
    }
    assert.strictEqual(fifo.size, 3000)
    for (const item of fifo.drain()) out.push(item)
    assert.strictEqual(fifo.size, 0)
    assert.isUndefined(fifo.shift())
    assert.strictEqual(out.length, next)
    assert.isTrue(out.every((item, i) => item === i), "in push order")
  })
})
