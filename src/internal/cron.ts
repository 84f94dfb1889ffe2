import { CronExpressionParser } from "cron-parser"
import type { CronExpression } from "cron-parser"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"

/**
 * Cron expressions on top of cron-parser, validated eagerly: cron-parser reads `""` and 4-field
 * strings as "every minute" and reports a bad zone as `CronDate: unhandled timestamp`, and
 * effect's `Cron` accepts `0 0 31 2 *` and then dies looking for the next date. So field count,
 * each field, the zone and the existence of a next fire are checked here first.
 */

/** @internal */
export interface Problem {
  readonly field: string
  readonly value: string
  readonly reason: string
}

/** @internal */
export type Zone =
  | { readonly _tag: "Named"; readonly id: string }
  | { readonly _tag: "Offset"; readonly millis: number }

/** @internal */
export interface CronSpec {
  readonly expression: string
  readonly zone: Zone
  /** The first fire instant strictly after `after` (epoch ms), or undefined when there is none. */
  readonly next: (after: number) => number | undefined
}

const fieldNames = ["second", "minute", "hour", "dayOfMonth", "month", "dayOfWeek"] as const

const fieldHelp: Record<(typeof fieldNames)[number], string> = {
  second: "0-59",
  minute: "0-59",
  hour: "0-23",
  dayOfMonth: "1-31, L",
  month: "1-12 or JAN-DEC",
  dayOfWeek: "0-7 or SUN-SAT, 5#2, 5L"
}

const nicknames = new Set([
  "@yearly",
  "@annually",
  "@monthly",
  "@weekly",
  "@daily",
  "@hourly",
  "@minutely",
  "@secondly",
  "@weekdays",
  "@weekends"
])

const problem = (field: string, value: string, reason: string): Either.Either<never, Problem> =>
  Either.left({ field, value, reason })

const errorMessage = (u: unknown): string => (u instanceof Error ? u.message : String(u))

/**
 * A time zone that both `Intl` and cron-parser (luxon) know; `"Europe/Berlin "` is rejected.
 *
 * @internal
 */
export const validateZone = (tz: string): Either.Either<string, Problem> => {
  if (typeof tz !== "string") return problem("tz", String(tz), "must be a string")
  if (tz.length === 0) return problem("tz", tz, "is empty")
  if (tz.trim() !== tz) return problem("tz", tz, "has leading or trailing whitespace")
  try {
    return Either.right(new Intl.DateTimeFormat("en-US", { timeZone: tz }).resolvedOptions().timeZone)
  } catch {
    return problem("tz", tz, "is not a known IANA time zone (e.g. \"Europe/Berlin\", \"America/New_York\")")
  }
}

const maxOffsetMillis = 14 * 3_600_000

/**
 * A fixed UTC offset: `"-03:00"`, `"+0530"`, `"Z"`, a Duration (east of UTC) or a signed number of
 * milliseconds; `"-3 hours"` is read as a negative Duration.
 *
 * @internal
 */
export const parseOffset = (input: string | Duration.DurationInput): Either.Either<number, Problem> => {
  // Duration.decode throws on an input that is not a Duration: decodeUnknown keeps it a Problem.
  const decodedInput = typeof input === "string" || typeof input === "number"
    ? undefined
    : Duration.decodeUnknown(input)
  if (decodedInput !== undefined && decodedInput._tag === "None") {
    return problem("offset", String(input), "expected \"+HH:MM\", \"-HH:MM\" or a Duration such as \"3 hours\"")
  }
  const value = typeof input === "string"
    ? input
    : typeof input === "number" || decodedInput === undefined
    ? String(input)
    : Duration.format(decodedInput.value)
  let millis: number
  if (typeof input === "number") {
    millis = input
  } else if (typeof input === "string") {
    const s = input.trim()
    const hhmm = /^([+-])(\d{2}):?(\d{2})?$/.exec(s)
    if (s === "Z" || s === "UTC") {
      millis = 0
    } else if (hhmm !== null) {
      const sign = hhmm[1] === "-" ? -1 : 1
      const minutes = Number(hhmm[3] ?? "0")
      if (minutes > 59) return problem("offset", value, "minutes must be 00-59")
      millis = sign * (Number(hhmm[2]) * 60 + minutes) * 60_000
    } else {
      const negative = s.startsWith("-")
      const decoded = Duration.decodeUnknown(negative ? s.slice(1).trim() : s)
      if (decoded._tag === "None") {
        return problem("offset", value, "expected \"+HH:MM\", \"-HH:MM\" or a Duration such as \"3 hours\"")
      }
      millis = (negative ? -1 : 1) * Duration.toMillis(decoded.value)
    }
  } else {
    millis = decodedInput === undefined ? Number.NaN : Duration.toMillis(decodedInput.value)
  }
  if (!Number.isFinite(millis)) return problem("offset", value, "must be finite")
  if (Math.abs(millis) > maxOffsetMillis) return problem("offset", value, "must be within ±14:00")
  if (millis % 60_000 !== 0) return problem("offset", value, "must be a whole number of minutes")
  return Either.right(millis)
}

const tryParse = (expression: string, tz: string): Either.Either<CronExpression, string> => {
  try {
    return Either.right(CronExpressionParser.parse(expression, { tz, currentDate: 0 }))
  } catch (e) {
    return Either.left(errorMessage(e))
  }
}

/** Checks each field alone (the rest `*`) so the error names the field cron-parser complained about. */
const validateFields = (fields: ReadonlyArray<string>): Either.Either<void, Problem> => {
  const six = fields.length === 6 ? fields : ["0", ...fields]
  for (let i = 0; i < 6; i++) {
    const value = six[i] ?? "*"
    const name = fieldNames[i] ?? "second"
    const probe = fieldNames.map((_, j) => (j === i ? value : "*")).join(" ")
    const parsed = tryParse(probe, "UTC")
    if (Either.isLeft(parsed)) {
      return problem(`cron.${name}`, value, `${parsed.left} (allowed: ${fieldHelp[name]})`)
    }
  }
  return Either.void
}

const syntax = (expression: string): Either.Either<void, Problem> => {
  if (typeof expression !== "string") return problem("cron", String(expression), "must be a string")
  const trimmed = expression.trim()
  if (trimmed.length === 0) return problem("cron", expression, "is empty")
  if (trimmed.startsWith("@")) {
    return nicknames.has(trimmed.toLowerCase())
      ? Either.void
      : problem("cron", expression, `unknown nickname; use one of ${[...nicknames].join(", ")}`)
  }
  const fields = trimmed.split(/\s+/)
  if (fields.length !== 5 && fields.length !== 6) {
    return problem(
      "cron",
      expression,
      `has ${fields.length} field${fields.length === 1 ? "" : "s"}; expected 5 (minute hour day-of-month month ` +
        "day-of-week) or 6 (seconds first)"
    )
  }
  return validateFields(fields)
}

/** Seconds allowed by the expression, ascending. */
const secondsOf = (cron: CronExpression): ReadonlyArray<number> =>
  [...new Set(cron.fields.second.values.map(Number))].sort((a, b) => a - b)

/**
 * Builds the fast `next`: cron-parser finds the next matching minute; the seconds inside a minute
 * already known to match come from a sorted array, so a per-second cron costs an array lookup per
 * firing instead of a time-zone computation.
 */
const makeNext = (cron: CronExpression, shift: number): (after: number) => number | undefined => {
  const seconds = secondsOf(cron)
  const reusable = seconds.length > 1
  let minute = Number.NaN
  let position = Number.NaN
  return (afterUtc) => {
    const after = afterUtc + shift
    const m = Math.floor(after / 60_000) * 60_000
    if (reusable && m === minute) {
      const within = after - m
      for (let i = 0; i < seconds.length; i++) {
        const at = (seconds[i] ?? 0) * 1000
        if (at > within) return m + at - shift
      }
    }
    try {
      // Sequential use (the next slot after the previous one) continues cron-parser's iterator;
      // only a jump needs the costlier reset.
      if (after !== position) cron.reset(new Date(after))
      const next = cron.next().getTime()
      position = next
      minute = Math.floor(next / 60_000) * 60_000
      return next - shift
    } catch {
      position = Number.NaN
      // cron-parser throws when no date matches within its search horizon: there is no next fire.
      return undefined
    }
  }
}

/**
 * Parses and validates a cron expression. `now` anchors the check that a next fire exists.
 *
 * @internal
 */
export const parse = (
  expression: string,
  options: { readonly tz?: string | undefined; readonly offset?: string | Duration.DurationInput | undefined },
  now: number
): Either.Either<CronSpec, Problem> => {
  if (options.tz !== undefined && options.offset !== undefined) {
    return problem("tz", options.tz, "give either tz or offset, not both")
  }
  const checked = syntax(expression)
  if (Either.isLeft(checked)) return Either.left(checked.left)
  let zone: Zone = { _tag: "Named", id: "UTC" }
  if (options.tz !== undefined) {
    const tz = validateZone(options.tz)
    if (Either.isLeft(tz)) return Either.left(tz.left)
    zone = { _tag: "Named", id: tz.right }
  } else if (options.offset !== undefined) {
    const offset = parseOffset(options.offset)
    if (Either.isLeft(offset)) return Either.left(offset.left)
    zone = { _tag: "Offset", millis: offset.right }
  }
  const tz = zone._tag === "Named" ? zone.id : "UTC"
  const parsed = tryParse(expression.trim(), tz)
  if (Either.isLeft(parsed)) {
    const field = /day of month/i.test(parsed.left) ? "cron.dayOfMonth" : /timestamp/i.test(parsed.left) ? "tz" : "cron"
    const reason = /day of month/i.test(parsed.left)
      ? `${parsed.left}: that day never occurs in the given month(s)`
      : parsed.left
    return problem(field, field === "tz" ? tz : expression, reason)
  }
  const next = makeNext(parsed.right, zone._tag === "Offset" ? zone.millis : 0)
  if (next(now) === undefined) return problem("cron", expression, "never fires after now")
  return Either.right({ expression: expression.trim(), zone, next })
}
