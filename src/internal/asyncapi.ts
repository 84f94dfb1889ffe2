import * as Either from "effect/Either"
import * as JSONSchema from "effect/JSONSchema"
import type * as AST from "effect/SchemaAST"

/** @internal */
export type JsonValue = null | boolean | number | string | ReadonlyArray<JsonValue> | {
  readonly [key: string]: JsonValue
}

/** @internal */
export type JsonObject = { readonly [key: string]: JsonValue }

/** @internal */
export const componentSchemasPath = "#/components/schemas/"

// Component keys must match ^[\w\d.\-_]+$; schema identifiers (`/schemas/void`, class names with
// spaces) are made to fit, and the `$ref`s rewritten with them.
/** @internal */
export const componentKey = (id: string): string => id.replace(/[^\w.-]/g, "_").replace(/^_+/, "") || "schema"

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

const toJson = (value: unknown): JsonValue => {
  if (value === null || typeof value === "boolean" || typeof value === "string") return value
  if (typeof value === "number") return Number.isFinite(value) ? value : null
  if (Array.isArray(value)) return value.map(toJson)
  if (isObject(value)) {
    const out: Record<string, JsonValue> = {}
    for (const [key, entry] of Object.entries(value)) {
      if (entry !== undefined) out[key] = toJson(entry)
    }
    return out
  }
  return null
}

// `$id` (Schema.Unknown's `/schemas/unknown`, …) would change the base URI that relative `$ref`s
// below it resolve against: dropped, the component key names the schema.
const rewriteRefs = (value: JsonValue): JsonValue => {
  if (Array.isArray(value)) return value.map(rewriteRefs)
  if (isObject(value)) {
    const out: Record<string, JsonValue> = {}
    for (const [key, entry] of Object.entries(value)) {
      if (key === "$id") continue
      out[key] = key === "$ref" && typeof entry === "string" && entry.startsWith(componentSchemasPath)
        ? componentSchemasPath + componentKey(entry.slice(componentSchemasPath.length))
        : rewriteRefs(entry as JsonValue)
    }
    return out
  }
  return value
}

/**
 * Collects JSON Schemas for several Schemas into one set of shared definitions, referenced as
 * `#/components/schemas/<id>` (the `$defs` of `JSONSchema.make` would resolve against the
 * document root in AsyncAPI, not against the payload).
 *
 * @internal
 */
export const makeSchemaCollector = () => {
  const definitions: Record<string, JSONSchema.JsonSchema7> = {}
  return {
    schemaOf: (ast: AST.AST): JsonValue =>
      rewriteRefs(toJson(JSONSchema.fromAST(ast, { definitions, definitionPath: componentSchemasPath }))),
    /** The shared definitions by component key; Left when two identifiers share a key. */
    components: (): Either.Either<
      Record<string, JsonValue>,
      { readonly ids: readonly [string, string]; readonly key: string }
    > => {
      const out: Record<string, JsonValue> = {}
      const owners = new Map<string, string>()
      for (const [id, schema] of Object.entries(definitions)) {
        const key = componentKey(id)
        const owner = owners.get(key)
        if (owner !== undefined) return Either.left({ ids: [owner, id], key })
        owners.set(key, id)
        out[key] = rewriteRefs(toJson(schema))
      }
      return Either.right(out)
    }
  }
}
