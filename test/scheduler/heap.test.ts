import { assert, describe, it } from "@effect/vitest"
import { TimerHeap } from "../../src/internal/scheduler/heap.js"

describe("TimerHeap", () => {
  it("pops in instant order, with replaceTop moving the earliest entry", () => {
    const heap = new TimerHeap<string>()
    const instants = [50, 10, 40, 30, 20, 60, 10]
    instants.forEach((t, i) => heap.push(t, `e${i}`))
    assert.strictEqual(heap.peek(), 10)
    heap.replaceTop(35)
    const out: Array<number> = []
    while (heap.size > 0) {
      out.push(heap.peek())
      heap.pop()
    }
    assert.deepStrictEqual(out, [10, 20, 30, 35, 40, 50, 60])
    assert.strictEqual(heap.peek(), Number.POSITIVE_INFINITY)
  })

  it("agrees with a sort on random instants", () => {
    const heap = new TimerHeap<number>()
    const values = Array.from({ length: 500 }, (_, i) => (i * 7919) % 1009)
    values.forEach((v) => heap.push(v, v))
    for (let i = 0; i < 200; i++) heap.replaceTop(heap.peek() + 1000 + i)
    const out: Array<number> = []
    while (heap.size > 0) {
      out.push(heap.peek())
      heap.pop()
    }
    assert.deepStrictEqual(out, [...out].sort((a, b) => a - b))
    assert.strictEqual(out.length, 500)
  })
})
