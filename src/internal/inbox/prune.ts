import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import type * as Inbox from "../../Inbox.js"
import * as checks from "../options.js"

/** `Inbox.Service.prune`'s options, checked: `[maxAge, batchSize]`. @internal */
export const check = (options: Inbox.PruneOptions | undefined): checks.Checked<readonly [Duration.Duration, number]> =>
  Either.all([
    options?.maxAge === undefined
      ? Either.left(checks.invalid("Inbox", "maxAge", undefined, "is required"))
      : checks.duration("Inbox", "maxAge", options.maxAge, { fallback: Duration.zero }),
    checks.integer("Inbox", "batchSize", options?.batchSize, { min: 1, max: 1_000_000, fallback: 5000 })
  ])
