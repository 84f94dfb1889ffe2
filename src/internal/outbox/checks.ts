import * as Either from "effect/Either"
import * as Schedule from "effect/Schedule"
import * as checks from "../options.js"

/**
 * Option checks the Outbox needs beyond the shared ones in `internal/options.ts`; same contract:
 * the value to use (the fallback when absent) or the `InvalidOptions` naming the field.
 */

/** A boolean, or `fallback` when absent. @internal */
export const boolean = <A extends boolean | undefined>(
  module: string,
  field: string,
  value: boolean | undefined,
  fallback: A
): checks.Checked<boolean | A> =>
  value === undefined
    ? Either.right(fallback)
    : typeof value === "boolean"
    ? Either.right(value)
    : Either.left(checks.invalid(module, field, value, "must be true or false"))

/** A `Schedule`, or `fallback` when absent. @internal */
export const schedule = <S>(module: string, field: string, value: S | undefined, fallback: S): checks.Checked<S> =>
  value === undefined
    ? Either.right(fallback)
    : Schedule.isSchedule(value)
    ? Either.right(value)
    : Either.left(checks.invalid(module, field, value, "must be a Schedule"))

/**
 * Text PostgreSQL stores as given: a string of `minBytes` (default 1) to `maxBytes` UTF-8 bytes
 * without U+0000 (text columns refuse it; names such as `application_name` are cut silently).
 *
 * @internal
 */
export const text = (
  module: string,
  field: string,
  value: string | undefined,
  rule: { readonly minBytes?: number | undefined; readonly maxBytes?: number | undefined }
): checks.Checked<string | undefined> => {
  if (value === undefined) return Either.right(undefined)
  if (typeof value !== "string") return Either.left(checks.invalid(module, field, value, "must be a string"))
  const bytes = Buffer.byteLength(value, "utf8")
  if (bytes < (rule.minBytes ?? 1)) return Either.left(checks.invalid(module, field, value, "must not be empty"))
  if (rule.maxBytes !== undefined && bytes > rule.maxBytes) {
    return Either.left(checks.invalid(module, field, value, `must be at most ${rule.maxBytes} bytes`))
  }
  if (value.includes("\u0000")) return Either.left(checks.invalid(module, field, value, "must not contain U+0000"))
  return Either.right(value)
}
