/**
 * Names and subjects: a topic is a NATS subject as it is; a pattern maps `#` to `>` (`*` is the
 * same on both); a group is a durable consumer, whose name may not contain `.`. One stream per
 * broker captures the union of its groups' patterns; since JetStream refuses overlapping subjects
 * in one stream, the union is kept as a list where no entry overlaps another.
 */

/** @internal */
export interface Plan {
  /** What the broker's stream must capture for the pattern. */
  readonly subjects: ReadonlyArray<string>
  /** The consumer's filter subject (`""`: the whole stream). */
  readonly filter: string
  /** False: the filter takes more than the pattern; the consumer acks the rest unseen. */
  readonly exact: boolean
}

/**
 * The NATS side of a `Broker.pattern`. `*` is the same on both; `#` (zero or more words) has no
 * exact NATS equivalent (`>` is one or more, and only last): `orders.#` needs both `orders` and
 * `orders.>`, and `a.#.paid` is captured by `a.>` and matched exactly by the consumer. A server
 * 2.9 consumer filters on one subject, so a pattern needing two reads the whole stream.
 *
 * @internal
 */
export const plan = (pattern: string): Plan => {
  const words = pattern.split(".")
  const first = words.indexOf("#")
  if (first === -1) return { subjects: [pattern], filter: pattern, exact: true }
  const prefix = words.slice(0, first)
  const rest = words.slice(first + 1)
  if (prefix.length === 0) return { subjects: [">"], filter: ">", exact: rest.length === 0 }
  const wide = [...prefix, ">"].join(".")
  // Zero words for every `#` left: the prefix alone matches too.
  const alone = rest.every((word) => word === "#")
  return alone
    ? { subjects: [prefix.join("."), wide], filter: "", exact: false }
    : { subjects: [wide], filter: wide, exact: false }
}

/** Whether every subject `inner` matches is matched by `outer`. @internal */
export const covers = (outer: string, inner: string): boolean => {
  const a = outer.split(".")
  const b = inner.split(".")
  for (let i = 0; i < a.length; i++) {
    const word = a[i]
    const other = b[i]
    if (word === ">") return other !== undefined
    if (other === undefined || other === ">") return false
    if (word !== "*" && word !== other) return false
  }
  return a.length === b.length
}

/** Whether some subject matches both. @internal */
export const overlaps = (left: string, right: string): boolean => {
  const a = left.split(".")
  const b = right.split(".")
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i]
    const y = b[i]
    if (x === ">" || y === ">") return x !== undefined && y !== undefined
    if (x === undefined || y === undefined) return false
    if (x !== "*" && y !== "*" && x !== y) return false
  }
  return true
}

/** The narrowest subject covering both (word by word; `>` once their lengths differ). */
const generalize = (left: string, right: string): string => {
  const a = left.split(".")
  const b = right.split(".")
  const out: Array<string> = []
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const x = a[i] ?? ""
    const y = b[i] ?? ""
    if (x === ">" || y === ">") return [...out, ">"].join(".")
    out.push(x === y ? x : "*")
  }
  if (a.length !== b.length) out.push(">")
  return out.join(".")
}

/**
 * The stream's subjects once `subject` is captured too: unchanged when one already covers it;
 * otherwise it replaces what it covers, and an overlap that neither covers is widened to their
 * common generalization (the stream then captures more than the groups; a message no group's
 * filter takes is dropped by interest retention rather than refused). Undefined: no change.
 *
 * @internal
 */
export const withSubject = (
  subjects: ReadonlyArray<string>,
  subject: string
): ReadonlyArray<string> | undefined => {
  if (subjects.some((s) => covers(s, subject))) return undefined
  let added = subject
  let rest = subjects.filter((s) => !covers(added, s))
  for (
    let clash = rest.find((s) => overlaps(s, added));
    clash !== undefined;
    clash = rest.find((s) => overlaps(s, added))
  ) {
    added = generalize(clash, added)
    rest = rest.filter((s) => !covers(added, s))
  }
  return [...rest, added]
}

/** Whether a concrete subject is captured by one of the stream's subjects. @internal */
export const captured = (subjects: ReadonlyArray<string>, subject: string): boolean =>
  subjects.some((s) => covers(s, subject))

/**
 * A durable consumer name for a group: group names allow `. _ : -`, consumer names not `.`; `_`
 * is escaped first so the mapping stays one to one.
 *
 * @internal
 */
export const durableOf = (group: string): string =>
  group.replaceAll("_", "__").replaceAll(".", "_d").replaceAll(":", "_c")

/** @internal */
export interface Names {
  readonly stream: string
  readonly deadLetterStream: string
  readonly delayStream: string
  /** Subject of a group's dead letters. */
  readonly deadLetterSubject: (group: string) => string
  readonly deadLetterSubjects: string
  /** Subject a delayed message waits on before it is moved to `topic`. */
  readonly delaySubject: (topic: string) => string
  readonly delayPrefix: string
  readonly delaySubjects: string
  /** The delay stream's durable consumer, shared by every broker on the stream. */
  readonly mover: string
}

/** @internal */
export const names = (stream: string): Names => {
  const deadLetterPrefix = `_eb.dlq.${stream}.`
  const delayPrefix = `_eb.delay.${stream}.`
  return {
    stream,
    deadLetterStream: `${stream}_DLQ`,
    delayStream: `${stream}_DELAY`,
    deadLetterSubject: (group) => `${deadLetterPrefix}${group}`,
    deadLetterSubjects: `${deadLetterPrefix}>`,
    delaySubject: (topic) => `${delayPrefix}${topic}`,
    delayPrefix,
    delaySubjects: `${delayPrefix}>`,
    mover: "eb_delay_mover"
  }
}
