import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import { InvalidOptions } from "../InvalidOptions.js"

/**
 * Option checks shared by every constructor: each returns the value to use (the default when the
 * option is `undefined`) or the `InvalidOptions` naming the module and field. Combine them with
 * `Either.all({ … })` and `yield*` the result at Layer build (an Either is an Effect).
 */

/** @internal */
export type Checked<A> = Either.Either<A, InvalidOptions>

const show = (value: unknown): string => {
  if (typeof value === "string") return JSON.stringify(value)
  if (
    typeof value === "number" || typeof value === "boolean" || typeof value === "bigint" || value === null ||
    value === undefined
  ) {
    return String(value)
  }
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/** @internal */
export const invalid = (module: string, field: string, value: unknown, reason: string): InvalidOptions =>
  new InvalidOptions({ module, field, value: show(value), reason })

/** An integer in `[min, max]`, or `fallback` when absent. @internal */
export const integer = (
  module: string,
  field: string,
  value: number | undefined,
  range: { readonly min: number; readonly max?: number | undefined; readonly fallback: number }
): Checked<number> => {
  if (value === undefined) return Either.right(range.fallback)
  const max = range.max ?? Number.MAX_SAFE_INTEGER
  if (typeof value !== "number" || !Number.isInteger(value) || value < range.min || value > max) {
    const to = range.max === undefined ? "" : ` to ${range.max}`
    return Either.left(invalid(module, field, value, `must be an integer from ${range.min}${to}`))
  }
  return Either.right(value)
}

/** An optional integer in `[min, max]`, left `undefined` when absent. @internal */
export const optionalInteger = (
  module: string,
  field: string,
  value: number | undefined,
  range: { readonly min: number; readonly max?: number | undefined }
): Checked<number | undefined> =>
  value === undefined ? Either.right(undefined) : integer(module, field, value, { ...range, fallback: 0 })

// effect's Duration turns negative and NaN inputs into zero, so they are refused before decoding.
const isNaNInput = (value: unknown): boolean =>
  typeof value === "number" ? Number.isNaN(value) : Array.isArray(value) && value.some((part) => Number.isNaN(part))

const isNegativeInput = (value: unknown): boolean => {
  if (typeof value === "number") return value < 0
  if (typeof value === "bigint") return value < BigInt(0)
  if (typeof value === "string") return value.trimStart().startsWith("-")
  return Array.isArray(value) && value.some((part) => typeof part === "number" && part < 0)
}

/**
 * A finite duration, at least `min` (default: zero, inclusive; `positive` excludes zero), or
 * `fallback` when absent.
 *
 * @internal
 */
export const duration = (
  module: string,
  field: string,
  value: Duration.DurationInput | undefined,
  rule: {
    readonly fallback: Duration.Duration
    readonly positive?: boolean | undefined
    readonly finite?: boolean | undefined
  }
): Checked<Duration.Duration> => {
  if (value === undefined) return Either.right(rule.fallback)
  const decoded = Duration.decodeUnknown(value)
  if (Option.isNone(decoded) || isNaNInput(value)) {
    return Either.left(invalid(module, field, value, "is not a duration"))
  }
  if (isNegativeInput(value)) return Either.left(invalid(module, field, value, "must not be negative"))
  const millis = Duration.toMillis(decoded.value)
  if (Number.isNaN(millis) || millis < 0) return Either.left(invalid(module, field, value, "must not be negative"))
  if (rule.positive === true && millis === 0) return Either.left(invalid(module, field, value, "must be positive"))
  if (rule.finite !== false && !Number.isFinite(millis)) {
    return Either.left(invalid(module, field, value, "must be finite"))
  }
  return Either.right(decoded.value)
}

/** One of `choices`, or `fallback` when absent. @internal */
export const oneOf = <const A extends string>(
  module: string,
  field: string,
  value: A | undefined,
  choices: ReadonlyArray<A>,
  fallback: A
): Checked<A> => {
  if (value === undefined) return Either.right(fallback)
  return choices.includes(value)
    ? Either.right(value)
    : Either.left(invalid(module, field, value, `must be one of ${choices.map((c) => JSON.stringify(c)).join(", ")}`))
}

/** A plain SQL identifier (letters, digits, `_`; not starting with a digit), at most 40 bytes. @internal */
export const sqlIdentifier = (
  module: string,
  field: string,
  value: string | undefined,
  fallback: string
): Checked<string> => {
  if (value === undefined) return Either.right(fallback)
  return typeof value === "string" && /^[A-Za-z_][A-Za-z0-9_]{0,39}$/.test(value)
    ? Either.right(value)
    : Either.left(invalid(module, field, value, "must be a plain SQL identifier (letters, digits, _; at most 40)"))
}

/** The timeouts every networked transport takes, as the fields of an `Either.all` record. @internal */
export interface ConnectionTimeouts<A> {
  readonly connectTimeout: A
  readonly shutdownTimeout: A
  readonly publishTimeout: A
}

/**
 * Checks `connectTimeout`, `shutdownTimeout` and `publishTimeout` (positive durations) against a
 * transport's defaults; spread the result into the layer's `Either.all({ … })`.
 *
 * @internal
 */
export const connectionTimeouts = (
  module: string,
  options: Partial<ConnectionTimeouts<Duration.DurationInput | undefined>>,
  defaults: ConnectionTimeouts<Duration.Duration>
): ConnectionTimeouts<Checked<Duration.Duration>> => ({
  connectTimeout: duration(module, "connectTimeout", options.connectTimeout, {
    positive: true,
    fallback: defaults.connectTimeout
  }),
  shutdownTimeout: duration(module, "shutdownTimeout", options.shutdownTimeout, {
    positive: true,
    fallback: defaults.shutdownTimeout
  }),
  publishTimeout: duration(module, "publishTimeout", options.publishTimeout, {
    positive: true,
    fallback: defaults.publishTimeout
  })
})
