/**
 * A first-in first-out queue on an array read from a moving head: `Array.prototype.shift` copies
 * the array once it is large, and a consumer's held deliveries can number tens of thousands. The
 * consumed front is dropped when the queue empties, or when it is over half the array.
 *
 * @internal
 */
export class Fifo<A> {
  private items: Array<A | undefined> = []
  private head = 0

  get size(): number {
    return this.items.length - this.head
  }

  push(item: A): void {
    this.items.push(item)
  }

  shift(): A | undefined {
    const item = this.items[this.head]
    if (item === undefined) return undefined
    this.items[this.head++] = undefined
    if (this.head === this.items.length || (this.head >= 1024 && this.head * 2 >= this.items.length)) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return item
  }

  /** Removes and returns everything queued, oldest first. */
  drain(): Array<A> {
    const rest: Array<A> = []
    for (let item = this.shift(); item !== undefined; item = this.shift()) rest.push(item)
    return rest
  }
}
