/**
 * A compiled check for the most common message Schema: a struct of strings, numbers and
 * booleans (nested structs and refinements such as `Int` included). Effect's parser walks such a
 * value with an Either per field and a merge of options per call, about a fifth of the front's
 * cost per message; this does the same checks with plain code.
 *
 * Invariants, so it agrees with `ParseResult` exactly:
 * - it compiles only schemas without transformations, optional fields, index signatures or
 *   `parseOptions` / `decodingFallback` annotations, where encoding and decoding are the same
 *   check and produce the same value: a new object with the declared fields only, in declared
 *   order (excess fields dropped, as the default `onExcessProperty: "ignore"` does);
 * - refinements run their own `filter`, as the parser does;
 * - it answers only "valid, here is the value" or "not sure": every failure goes back to
 *   Effect's parser, which gives the issue (so messages are Effect's own).
 *
 * test/broker/plainSchema.test.ts checks it against `ParseResult` on generated values.
 */
import * as Option from "effect/Option"
import * as AST from "effect/SchemaAST"

/** @internal */
export const invalid: unique symbol = Symbol.for("effect-background/plainSchema/invalid")

/** The value as the parser would produce it, or `invalid` when the parser must decide. @internal */
export type Check = (input: unknown) => unknown

const check = (ast: AST.AST): Check | undefined => {
  if (
    Option.isSome(AST.getParseOptionsAnnotation(ast)) || Option.isSome(AST.getDecodingFallbackAnnotation(ast))
  ) {
    return undefined
  }
  switch (ast._tag) {
    case "StringKeyword":
      return (input) => typeof input === "string" ? input : invalid
    case "NumberKeyword":
      return (input) => typeof input === "number" ? input : invalid
    case "BooleanKeyword":
      return (input) => typeof input === "boolean" ? input : invalid
    case "Refinement": {
      const from = check(ast.from)
      if (from === undefined) return undefined
      return (input) => {
        const value = from(input)
        return value !== invalid && Option.isNone(ast.filter(value, AST.defaultParseOption, ast)) ? value : invalid
      }
    }
    case "TypeLiteral":
      return struct(ast)
    default:
      return undefined
  }
}

const struct = (ast: AST.TypeLiteral): Check | undefined => {
  // `Struct({})` accepts any non-null value as is (the parser's own special case): left to it.
  if (ast.indexSignatures.length > 0 || ast.propertySignatures.length === 0) return undefined
  const names: Array<string> = []
  const checks: Array<Check> = []
  for (const property of ast.propertySignatures) {
    if (property.isOptional || typeof property.name !== "string") return undefined
    const field = check(property.type)
    if (field === undefined) return undefined
    names.push(property.name)
    checks.push(field)
  }
  const size = names.length
  return (input) => {
    if (typeof input !== "object" || input === null || Array.isArray(input)) return invalid
    const output: Record<string, unknown> = {}
    for (let i = 0; i < size; i++) {
      const name = names[i]
      const field = checks[i]
      if (name === undefined || field === undefined) return invalid
      const value = field((input as Record<string, unknown>)[name])
      if (value === invalid) return invalid
      output[name] = value
    }
    return output
  }
}

/**
 * The compiled check of `ast`, or undefined when the schema is not plain (Effect's parser then
 * does everything).
 *
 * @internal
 */
export const compile: (ast: AST.AST) => Check | undefined = check
