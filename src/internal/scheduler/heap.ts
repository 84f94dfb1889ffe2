/**
 * A binary min-heap of (instant, entry) pairs: the single timer sleeps until the top instant.
 * Hand-written because it is ~40 lines and sits on the per-firing path (no allocation per push).
 *
 * @internal
 */
export class TimerHeap<A> {
  private readonly at: Array<number> = []
  private readonly items: Array<A> = []

  get size(): number {
    return this.at.length
  }

  /** The earliest instant, or `Infinity` when empty. */
  peek(): number {
    return this.at.length === 0 ? Number.POSITIVE_INFINITY : (this.at[0] ?? Number.POSITIVE_INFINITY)
  }

  push(instant: number, item: A): void {
    let i = this.at.length
    this.at.push(instant)
    this.items.push(item)
    while (i > 0) {
      const parent = (i - 1) >> 1
      const p = this.at[parent] ?? Number.NEGATIVE_INFINITY
      if (p <= instant) break
      this.swap(i, parent)
      i = parent
    }
  }

  /** Removes and returns the earliest entry; call only when `size > 0`. */
  pop(): A | undefined {
    const n = this.at.length
    if (n === 0) return undefined
    const top = this.items[0]
    const lastAt = this.at.pop()
    const lastItem = this.items.pop()
    if (n > 1 && lastAt !== undefined && lastItem !== undefined) {
      this.at[0] = lastAt
      this.items[0] = lastItem
      this.siftDown(0)
    }
    return top
  }

  /** Moves the earliest entry to `instant` (one sift instead of a pop and a push); call only when `size > 0`. */
  replaceTop(instant: number): void {
    this.at[0] = instant
    this.siftDown(0)
  }

  /** The earliest entry without removing it. */
  top(): A | undefined {
    return this.items[0]
  }

  clear(): void {
    this.at.length = 0
    this.items.length = 0
  }

  private siftDown(start: number): void {
    const n = this.at.length
    let i = start
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) return
      const r = l + 1
      const li = this.at[l] ?? Number.POSITIVE_INFINITY
      const ri = r < n ? (this.at[r] ?? Number.POSITIVE_INFINITY) : Number.POSITIVE_INFINITY
      const child = ri < li ? r : l
      if ((this.at[i] ?? Number.POSITIVE_INFINITY) <= (child === r ? ri : li)) return
      this.swap(i, child)
      i = child
    }
  }

  private swap(a: number, b: number): void {
    const ta = this.at[a] ?? 0
    this.at[a] = this.at[b] ?? 0
    this.at[b] = ta
    const ia = this.items[a]
    const ib = this.items[b]
    if (ia !== undefined && ib !== undefined) {
      this.items[a] = ib
      this.items[b] = ia
    }
  }
}
