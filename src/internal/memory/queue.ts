/**
 * Ready queues of the in-memory transport kernel (see `transport.ts`): O(1) push / shift /
 * push-front, so big backlogs cost no scans per message. What they guarantee:
 *
 * - `shift` returns items pushed with `push` in push order, after every item put back with
 *   `pushFront`, most recently put back first; `size` counts both.
 * - With priorities: one such queue per level, `shift` takes from the highest non-empty level;
 *   priorities clamp to `0..maxPriority` (fractions truncated, missing = 0), and no level above
 *   `top` holds an item, so a shift scans each emptied level once.
 * - `toArray` lists items in the order `shift` would return them.
 * - Memory: a consumed prefix is released once it is at least half the array (and 1,024 items),
 *   or when the queue empties.
 */

/** @internal */
export interface ReadyQueue<A> {
  readonly size: number
  /** Appends at the tail (a new or retried message). */
  readonly push: (item: A, priority: number) => void
  /** Puts back at the head (a requeued delivery, as RabbitMQ does on reject/requeue). */
  readonly pushFront: (item: A, priority: number) => void
  readonly shift: () => A | undefined
  readonly toArray: () => ReadonlyArray<A>
}

/**
 * A FIFO on an array with a moving head; requeued items sit on a stack in front of it.
 *
 * @internal
 */
export class Deque<A> {
  private items: Array<A | undefined> = []
  private head = 0
  private readonly front: Array<A> = []

  get size(): number {
    return this.front.length + this.items.length - this.head
  }

  push(item: A): void {
    this.items.push(item)
  }

  pushFront(item: A): void {
    this.front.push(item)
  }

  shift(): A | undefined {
    if (this.front.length > 0) return this.front.pop()
    if (this.head >= this.items.length) return undefined
    const item = this.items[this.head]
    this.items[this.head] = undefined
    this.head++
    if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      // Compact once the consumed prefix dominates: amortised O(1) per item.
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return item
  }

  toArray(): Array<A> {
    const result: Array<A> = []
    for (let i = this.front.length - 1; i >= 0; i--) {
      const item = this.front[i]
      if (item !== undefined) result.push(item)
    }
    for (let i = this.head; i < this.items.length; i++) {
      const item = this.items[i]
      if (item !== undefined) result.push(item)
    }
    return result
  }
}

/** @internal */
export const fifo = <A>(): ReadyQueue<A> => {
  const deque = new Deque<A>()
  return {
    get size() {
      return deque.size
    },
    push: (item) => deque.push(item),
    pushFront: (item) => deque.pushFront(item),
    shift: () => deque.shift(),
    toArray: () => deque.toArray()
  }
}

/**
 * One FIFO per priority level (RabbitMQ `x-max-priority`): priorities above the maximum count as
 * the maximum, a missing priority as 0; equal priorities keep publish order.
 *
 * @internal
 */
export const prioritized = <A>(maxPriority: number): ReadyQueue<A> => {
  const levels = Array.from({ length: maxPriority + 1 }, () => new Deque<A>())
  let size = 0
  /** Highest level that may be non-empty: shift scans down from it, never past empty tops twice. */
  let top = -1
  const level = (priority: number) => Math.min(Math.max(0, Math.trunc(priority)), maxPriority)
  const at = (priority: number): Deque<A> => {
    const index = level(priority)
    if (index > top) top = index
    const deque = levels[index]
    if (deque === undefined) throw new Error(`bug: priority level ${index} missing`)
    return deque
  }
  return {
    get size() {
      return size
    },
    push: (item, priority) => {
      at(priority).push(item)
      size++
    },
    pushFront: (item, priority) => {
      at(priority).pushFront(item)
      size++
    },
    shift: () => {
      while (top >= 0) {
        const deque = levels[top]
        if (deque !== undefined && deque.size > 0) {
          size--
          return deque.shift()
        }
        top--
      }
      return undefined
    },
    toArray: () => {
      const result: Array<A> = []
      for (let i = levels.length - 1; i >= 0; i--) {
        const deque = levels[i]
        if (deque !== undefined) { for (const item of deque.toArray()) result.push(item) }
      }
      return result
    }
  }
}
