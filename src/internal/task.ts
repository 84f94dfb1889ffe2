import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import { pipeArguments } from "effect/Pipeable"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import type { HandlerDefect } from "../BrokerError.js"
import type * as Task from "../Task.js"

/** @internal */
export const TypeId: Task.TypeId = Symbol.for("effect-background/Task") as Task.TypeId

/** @internal */
export const topicPrefix = "tasks"

/** @internal */
export const isTask = (u: unknown): u is Task.Any => Predicate.hasProperty(u, TypeId)

/**
 * The outcome of a finished task as the result store keeps it.
 *
 * @internal
 */
export type Outcome<S, F> =
  | { readonly _tag: "Success"; readonly value: S }
  | { readonly _tag: "Failure"; readonly error: F | Task.TaskTimeout | HandlerDefect }

/**
 * Encodes outcomes to JSON text and back with the task's Schemas; compiled once per definition.
 *
 * @internal
 */
export interface ResultCodec<S, F> {
  readonly encode: (outcome: Outcome<S, F>) => Either.Either<string, string>
  readonly decode: (text: string) => Either.Either<Outcome<S, F>, string>
}

/**
 * Schemas are invariant in their encoded type; tasks only ever encode to JSON, so the encoded
 * side is erased once here instead of threading three more type parameters through every API.
 *
 * @internal
 */
export const erase = <A, I>(schema: Schema.Schema<A, I>): Schema.Schema<A, unknown> =>
  schema as unknown as Schema.Schema<A, unknown>

const format = (error: ParseResult.ParseError): string => ParseResult.TreeFormatter.formatErrorSync(error)

/** @internal */
export const makeResultCodec = <S, F>(
  success: Schema.Schema<S, unknown>,
  failure: Schema.Schema<F | Task.TaskTimeout | HandlerDefect, unknown>
): ResultCodec<S, F> => {
  const schema: Schema.Schema<Outcome<S, F>, unknown> = erase(
    Schema.Union(
      Schema.Struct({ _tag: Schema.Literal("Success"), value: success }),
      Schema.Struct({ _tag: Schema.Literal("Failure"), error: failure })
    )
  )
  const encode = Schema.encodeEither(schema)
  const decode = Schema.decodeUnknownEither(schema)
  return {
    encode: (outcome) =>
      Either.match(encode(outcome), {
        onLeft: (error) => Either.left(format(error)),
        onRight: (encoded) => {
          const text = JSON.stringify(encoded)
          return text === undefined ? Either.left("the encoded result is not JSON") : Either.right(text)
        }
      }),
    decode: (text) => {
      let json: unknown
      try {
        json = JSON.parse(text)
      } catch (error) {
        return Either.left(`stored result is not JSON: ${error instanceof Error ? error.message : String(error)}`)
      }
      return Either.mapLeft(decode(json), format)
    }
  }
}

/** @internal */
export const decodeTimeout = (input: Duration.DurationInput): Duration.Duration => {
  const duration = Duration.decodeUnknown(input)
  if (Option.isNone(duration) || !Duration.isFinite(duration.value) || Duration.toMillis(duration.value) <= 0) {
    throw new RangeError(`task timeout must be a finite, positive duration, got ${String(input)}`)
  }
  return duration.value
}

/** @internal */
export const validateMaxPriority = (value: number | undefined): number | undefined => {
  if (value !== undefined && (!Number.isInteger(value) || value < 1 || value > 255)) {
    throw new RangeError(`maxPriority must be an integer from 1 to 255, got ${value}`)
  }
  return value
}

/** @internal */
export const validateDelivery = (value: Task.Delivery | undefined): Task.Delivery => {
  if (value === undefined) return "persistent"
  if (value !== "persistent" && value !== "transient") {
    throw new RangeError(`delivery must be "persistent" or "transient", got ${String(value)}`)
  }
  return value
}

/** @internal */
export const proto = {
  [TypeId]: TypeId,
  pipe() {
    return pipeArguments(this, arguments)
  }
}

/** @internal */
export const copy = <Name extends string, P, S, F>(
  self: Task.Task<Name, P, S, F>,
  patch: Partial<Pick<Task.Task<Name, P, S, F>, "retry" | "timeout" | "nonRetryable">>
): Task.Task<Name, P, S, F> => Object.assign(Object.create(proto), self, patch)
