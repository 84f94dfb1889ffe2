/**
 * Several messages' stream fields as one MessagePack value, an array of arrays of byte strings,
 * which the publish script reads with Redis's `cmsgpack.unpack`. A chunk then travels as one
 * command argument instead of one per field: node-redis encodes and writes one buffer rather than
 * a piece per field (measured as the largest part of its cost per message), and Redis parses one
 * argument. Strings are written as str8 / str16 / str32: Redis's cmsgpack does not read the bin
 * types, and a Lua string holds any bytes either way.
 */

/** @internal */
export class Packer {
  private buffer: Buffer
  private offset = 5
  private count = 0

  constructor(capacity: number) {
    this.buffer = Buffer.allocUnsafe(Math.max(64, capacity))
  }

  /** Bytes written so far. */
  get byteLength(): number {
    return this.offset
  }

  /** Appends one message: its first `count` fields, as name, value, name, value, … */
  add(fields: ReadonlyArray<string | Buffer>, count: number = fields.length): void {
    this.ensure(5)
    this.offset = arrayHeader(this.buffer, this.offset, count)
    for (let i = 0; i < count; i++) {
      const field = fields[i] ?? ""
      if (typeof field === "string") this.string(field)
      else this.bytes(field)
    }
    this.count++
  }

  /** The packed array (the buffer is not reused: node-redis holds it until written). */
  finish(): Buffer {
    // The outer header was reserved at the start as array32, whose size fits any count.
    this.buffer[0] = 0xdd
    this.buffer.writeUInt32BE(this.count, 1)
    return this.buffer.subarray(0, this.offset)
  }

  private string(value: string): void {
    if (value.length < 64) {
      // At most 3 UTF-8 bytes per UTF-16 unit: under 256 bytes, so str8 always fits.
      this.ensure(2 + value.length * 3)
      const written = this.buffer.write(value, this.offset + 2, "utf8")
      this.buffer[this.offset] = 0xd9
      this.buffer[this.offset + 1] = written
      this.offset += 2 + written
      return
    }
    this.ensure(5 + value.length * 3)
    const written = this.buffer.write(value, this.offset + 5, "utf8")
    this.buffer[this.offset] = 0xdb
    this.buffer.writeUInt32BE(written, this.offset + 1)
    this.offset += 5 + written
  }

  private bytes(value: Buffer): void {
    this.ensure(5 + value.length)
    const length = value.length
    let at = this.offset
    if (length < 256) {
      this.buffer[at++] = 0xd9
      this.buffer[at++] = length
    } else if (length < 65536) {
      this.buffer[at++] = 0xda
      at = this.buffer.writeUInt16BE(length, at)
    } else {
      this.buffer[at++] = 0xdb
      at = this.buffer.writeUInt32BE(length, at)
    }
    this.buffer.set(value, at)
    this.offset = at + length
  }

  private ensure(more: number): void {
    if (this.offset + more <= this.buffer.length) return
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.offset + more))
    this.buffer.copy(grown, 0, 0, this.offset)
    this.buffer = grown
  }
}

const arrayHeader = (buffer: Buffer, at: number, length: number): number => {
  if (length < 16) {
    buffer[at] = 0x90 | length
    return at + 1
  }
  if (length < 65536) {
    buffer[at] = 0xdc
    return buffer.writeUInt16BE(length, at + 1)
  }
  buffer[at] = 0xdd
  return buffer.writeUInt32BE(length, at + 1)
}
