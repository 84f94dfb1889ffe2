import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Either, FastCheck as fc, ParseResult, Schema } from "effect"
import * as plainSchema from "../../src/internal/plainSchema.js"

const Address = Schema.Struct({ city: Schema.NonEmptyString, zip: Schema.String })
const plain = {
  primitives: Schema.Struct({ id: Schema.String, amount: Schema.Number, paid: Schema.Boolean }),
  refined: Schema.Struct({
    id: Schema.NonEmptyString,
    count: Schema.Int,
    ratio: Schema.Number.pipe(Schema.between(0, 1))
  }),
  nested: Schema.Struct({ id: Schema.String, address: Address }),
  filtered: Schema.Struct({ from: Schema.Number, to: Schema.Number }).pipe(
    Schema.filter((range) => range.from <= range.to)
  ),
  string: Schema.String
}

class Order extends Schema.Class<Order>("Order")({ id: Schema.String }) {}
const notPlain = {
  optional: Schema.Struct({ id: Schema.String, note: Schema.optional(Schema.String) }),
  transformed: Schema.Struct({ at: Schema.DateFromString }),
  empty: Schema.Struct({}),
  record: Schema.Record({ key: Schema.String, value: Schema.Number }),
  literal: Schema.Struct({ kind: Schema.Literal("a", "b") }),
  array: Schema.Struct({ tags: Schema.Array(Schema.String) }),
  klass: Order,
  strict: Schema.Struct({ id: Schema.String }).annotations({ parseOptions: { onExcessProperty: "error" } })
}

/** Valid values, the same with extra or missing fields or wrong types, and anything at all. */
const inputs = <A, I>(schema: Schema.Schema<A, I>): fc.Arbitrary<unknown> => {
  const valid = Arbitrary.make(schema)
  return fc.oneof(
    valid,
    valid.chain((value) =>
      fc.tuple(fc.string(), fc.anything()).map(([key, extra]) =>
        typeof value === "object" && value !== null ? { ...value, [key]: extra } : value
      )
    ),
    valid.chain((value) =>
      fc.nat().map((n) => {
        if (typeof value !== "object" || value === null) return value
        const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) }
        const keys = Object.keys(copy)
        const key = keys[n % Math.max(1, keys.length)]
        if (key !== undefined) delete copy[key]
        return copy
      })
    ),
    valid.chain((value) =>
      fc.tuple(fc.nat(), fc.anything()).map(([n, replacement]) => {
        if (typeof value !== "object" || value === null) return replacement
        const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) }
        const keys = Object.keys(copy)
        const key = keys[n % Math.max(1, keys.length)]
        if (key !== undefined) copy[key] = replacement
        return copy
      })
    ),
    fc.anything()
  )
}

/** The compiled check answers exactly as the parser does, or leaves it to the parser. */
const agrees = (check: plainSchema.Check, parsed: Either.Either<unknown, unknown>, input: unknown) => {
  const fast = check(input)
  if (Either.isLeft(parsed)) {
    assert.strictEqual(fast, plainSchema.invalid, `accepted what the parser refuses: ${JSON.stringify(input)}`)
    return
  }
  assert.notStrictEqual(fast, plainSchema.invalid, `refused what the parser accepts: ${JSON.stringify(input)}`)
  assert.deepStrictEqual(fast, parsed.right)
  // Same fields in the same order: the JSON sent is byte for byte the parser's.
  assert.strictEqual(JSON.stringify(fast), JSON.stringify(parsed.right))
}

describe("plainSchema: compiled checks of plain structs", () => {
  for (const [name, schema] of Object.entries(plain)) {
    it(`${name}: decodes and encodes exactly as ParseResult does`, () => {
      const check = plainSchema.compile(schema.ast)
      assert.isDefined(check)
      if (check === undefined) return
      const decode = ParseResult.decodeUnknownEither(schema as Schema.Schema<unknown, unknown>)
      const encode = ParseResult.encodeUnknownEither(schema as Schema.Schema<unknown, unknown>)
      fc.assert(
        fc.property(inputs(schema as Schema.Schema<unknown, unknown>), (input) => {
          agrees(check, decode(input), input)
          agrees(check, encode(input), input)
        }),
        { numRuns: 2000 }
      )
    })
  }

  it("a valid value is answered by the compiled check, not left to the parser", () => {
    const check = plainSchema.compile(plain.nested.ast)
    const value = { id: "o-1", address: { city: "Lyon", zip: "69001" }, extra: true }
    assert.deepStrictEqual(check?.(value), { id: "o-1", address: { city: "Lyon", zip: "69001" } })
  })

  it("NaN is a number, as Schema.Number says (the encoder rejects it later, as JSON)", () => {
    const check = plainSchema.compile(plain.primitives.ast)
    assert.deepStrictEqual(check?.({ id: "a", amount: NaN, paid: false }), { id: "a", amount: NaN, paid: false })
  })

  for (const [name, schema] of Object.entries(notPlain)) {
    it(`${name}: not compiled, the parser does everything`, () => {
      assert.isUndefined(plainSchema.compile(schema.ast))
    })
  }
})
