/**
 * amqplib's decoded AMQP field values as `Broker.HeaderValue`s: what a foreign producer typed
 * stays typed (a timestamp a `Date`, a decimal exact, a table a `ReadonlyMap`), so nothing is
 * dropped or stringified on the way to `Envelope.typedHeaders`.
 */
import type * as Broker from "../../Broker.js"

/** amqplib marks timestamps and decimals as `{ "!": type, value }`. */
const tagged = (value: object): { readonly type: unknown; readonly value: unknown } | undefined =>
  "!" in value && "value" in value ? { type: value["!"], value: value.value } : undefined

const decimal = (value: unknown): Broker.HeaderDecimal | undefined => {
  if (typeof value !== "object" || value === null || !("places" in value) || !("digits" in value)) return undefined
  const { digits, places } = value
  return typeof places === "number" && typeof digits === "number" ? { _tag: "Decimal", places, digits } : undefined
}

/**
 * The typed value of one decoded field.
 *
 * @internal
 */
export const fromAmqp = (value: unknown): Broker.HeaderValue => {
  switch (typeof value) {
    case "string":
    case "number":
    case "boolean":
      return value
    case "bigint":
      return Number(value)
    case "object": {
      if (value === null) return null
      if (value instanceof Uint8Array) return value
      if (Array.isArray(value)) return value.map(fromAmqp)
      const marked = tagged(value)
      if (marked?.type === "timestamp" && typeof marked.value === "number") return new Date(marked.value * 1000)
      const exact = marked?.type === "decimal" ? decimal(marked.value) : undefined
      if (exact !== undefined) return exact
      const table = new Map<string, Broker.HeaderValue>()
      for (const [key, item] of Object.entries(value)) table.set(key, fromAmqp(item))
      return table
    }
    default:
      // amqplib decodes none of these (undefined, symbol, function); kept visible as text.
      return String(value)
  }
}
