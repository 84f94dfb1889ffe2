import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import { pipeArguments } from "effect/Pipeable"
import * as Predicate from "effect/Predicate"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type { HandlerDefect } from "../BrokerError.js"
import type * as Task from "../Task.js"
import type { TaskTimeout } from "../TaskError.js"
import * as options from "./options.js"

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
  | { readonly _tag: "Failure"; readonly error: F | TaskTimeout | HandlerDefect }

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
  failure: Schema.Schema<F | TaskTimeout | HandlerDefect, unknown>
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

const module = "Task"

const schema = <A>(field: string, value: A, required: boolean): options.Checked<A> =>
  (value === undefined && !required) || Schema.isSchema(value)
    ? Either.right(value)
    : Either.left(options.invalid(module, field, value, "must be a Schema"))

/** @internal */
export const checkTimeout = (
  value: Duration.DurationInput | undefined
): options.Checked<Duration.Duration | undefined> =>
  value === undefined
    ? Either.right(undefined)
    : options.duration(module, "timeout", value, { fallback: Duration.zero, positive: true })

/**
 * Every option of `Task.make`; the typed ones (Schemas, Schedule, predicate) are checked too, for
 * callers that bypass the types.
 *
 * @internal
 */
export const checkOptions = <P, PI, S, SI, F, FI>(input: Task.Options<P, PI, S, SI, F, FI>) =>
  Either.all({
    payload: schema("payload", input.payload, true),
    success: schema("success", input.success, false),
    failure: schema("failure", input.failure, false),
    retry: input.retry === undefined || Schedule.isSchedule(input.retry)
      ? Either.right(input.retry)
      : Either.left(options.invalid(module, "retry", input.retry, "must be a Schedule")),
    timeout: checkTimeout(input.timeout),
    nonRetryable: input.nonRetryable === undefined || typeof input.nonRetryable === "function"
      ? Either.right(input.nonRetryable)
      : Either.left(options.invalid(module, "nonRetryable", input.nonRetryable, "must be a predicate function")),
    maxPriority: options.optionalInteger(module, "maxPriority", input.maxPriority, { min: 1, max: 255 }),
    delivery: options.oneOf(module, "delivery", input.delivery, ["persistent", "transient"], "persistent")
  })

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
