/**
 * Streams and consumers, created on demand and checked against the configuration: an existing
 * one with another setting fails `DeclareConflict` naming the field; nothing is reconfigured,
 * except that the broker's stream is given the subjects its groups need (see `subjects.ts`).
 *
 * | stream | subjects | retention | holds |
 * |---|---|---|---|
 * | `<stream>` | the groups' patterns | interest | every published message until each group bound to its subject acked it |
 * | `<stream>_DELAY` | `_eb.delay.<stream>.>` | work queue | delayed publishes until due, then moved to their topic |
 * | `<stream>_DLQ` | `_eb.dlq.<stream>.<group>` | limits | dead letters per group, with the reason |
 */
import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerInfo,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
  type StreamInfo
} from "@nats-io/jetstream"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { type BrokerUnavailable, DeclareConflict } from "../../BrokerError.js"
import { unavailable } from "./connection.js"
import * as subjects from "./subjects.js"

/** @internal */
export interface StreamSettings {
  readonly storage: "file" | "memory"
  readonly replicas: number
  /** Zero: no age limit. */
  readonly maxAge: Duration.Duration
  /** -1: no size limit. */
  readonly maxBytes: number
  readonly duplicateWindow: Duration.Duration
  /** Fixed subjects of the broker's stream; undefined: grown from the groups' patterns. */
  readonly subjects: ReadonlyArray<string> | undefined
  readonly deadLetterMaxAge: Duration.Duration
}

/** @internal */
export interface ConsumerSettings {
  readonly ackWait: Duration.Duration
  readonly maxAckPending: number
}

const nanos = (duration: Duration.Duration): number => Math.round(Duration.toMillis(duration) * 1_000_000)

const isCode = (cause: unknown, code: number): boolean => cause instanceof JetStreamApiError && cause.code === code

const apiCall = <A>(what: string, run: () => Promise<A>): Effect.Effect<A, BrokerUnavailable> =>
  Effect.tryPromise({ try: run, catch: (cause) => unavailable("connect", what, cause) })

/** The info, or undefined when the stream does not exist. */
const streamInfo = (jsm: JetStreamManager, name: string): Effect.Effect<StreamInfo | undefined, BrokerUnavailable> =>
  Effect.tryPromise({
    try: () =>
      jsm.streams.info(name).catch((cause: unknown) => {
        if (isCode(cause, JetStreamApiCodes.StreamNotFound)) return undefined
        throw cause
      }),
    catch: (cause) => unavailable("connect", `cannot read stream ${name}`, cause)
  })

type Wanted = Pick<
  StreamConfig,
  "retention" | "storage" | "num_replicas" | "max_age" | "max_bytes" | "duplicate_window"
>

const wantedOf = (settings: StreamSettings, retention: RetentionPolicy, maxAge: Duration.Duration): Wanted => ({
  retention,
  storage: settings.storage === "memory" ? StorageType.Memory : StorageType.File,
  num_replicas: settings.replicas,
  max_age: nanos(maxAge),
  max_bytes: settings.maxBytes,
  duplicate_window: nanos(settings.duplicateWindow)
})

/** The first field where the existing stream differs from what is configured. */
const conflictOf = (info: StreamInfo, wanted: Wanted): string | undefined => {
  for (const key of Object.keys(wanted) as Array<keyof Wanted>) {
    const have = info.config[key]
    if (have !== wanted[key]) {
      return `stream "${info.config.name}" exists with ${key} = ${String(have)}, configured ${String(wanted[key])}`
    }
  }
  return undefined
}

/**
 * Creates the stream if absent (with `initial` subjects), else checks its settings; `owner`
 * names what the conflict is reported for.
 */
const ensureStream = (
  jsm: JetStreamManager,
  name: string,
  initial: ReadonlyArray<string>,
  wanted: Wanted,
  owner: string,
  extra?: Partial<StreamConfig>
): Effect.Effect<StreamInfo, BrokerUnavailable | DeclareConflict> =>
  Effect.gen(function*() {
    const existing = yield* streamInfo(jsm, name)
    const info = existing ?? (yield* apiCall(`cannot create stream ${name}`, () =>
      jsm.streams.add({
        name,
        subjects: [...initial],
        // Full (`maxBytes`): refuse new publishes rather than drop confirmed messages unseen.
        discard: DiscardPolicy.New,
        ...extra,
        ...wanted
      }).catch(async (cause: unknown) => {
        // Created by another process meanwhile: read what it made.
        const again = await jsm.streams.info(name).catch(() => undefined)
        if (again !== undefined) return again
        throw cause
      })))
    const conflict = conflictOf(info, wanted)
    if (conflict !== undefined) return yield* new DeclareConflict({ group: owner, detail: conflict })
    return info
  })

/** @internal */
export interface Topology {
  /** The delay and dead-letter streams; checks the broker's stream if it exists. At Layer build. */
  readonly prepare: Effect.Effect<void, BrokerUnavailable | DeclareConflict>
  /** The broker's stream captures the pattern's subjects and the group's durable consumer filters on them. */
  readonly declareGroup: (
    group: string,
    pattern: string
  ) => Effect.Effect<subjects.Plan, BrokerUnavailable | DeclareConflict>
}

/** @internal */
export const make = (
  jsm: JetStreamManager,
  names: subjects.Names,
  stream: StreamSettings,
  consumer: ConsumerSettings
): Topology => {
  const main = wantedOf(stream, RetentionPolicy.Interest, stream.maxAge)

  const prepare = Effect.gen(function*() {
    yield* ensureStream(
      jsm,
      names.deadLetterStream,
      [names.deadLetterSubjects],
      wantedOf(stream, RetentionPolicy.Limits, stream.deadLetterMaxAge),
      `(stream ${names.deadLetterStream})`,
      // Dead letters are read one by one by subject (`next_by_subj`); when full, the oldest go.
      { allow_direct: true, discard: DiscardPolicy.Old }
    )
    yield* ensureStream(
      jsm,
      names.delayStream,
      [names.delaySubjects],
      wantedOf(stream, RetentionPolicy.Workqueue, Duration.zero),
      `(stream ${names.delayStream})`
    )
    const info = yield* streamInfo(jsm, names.stream)
    if (info !== undefined) {
      const conflict = conflictOf(info, main)
      if (conflict !== undefined) {
        return yield* new DeclareConflict({ group: `(stream ${names.stream})`, detail: conflict })
      }
    } else if (stream.subjects !== undefined) {
      yield* ensureStream(jsm, names.stream, stream.subjects, main, `(stream ${names.stream})`)
    }
  })

  /**
   * Adds the subject to the broker's stream. JetStream has no compare-and-set for a stream
   * update, so it is read back and redone until the subject is captured.
   */
  const ensureSubject = (group: string, subject: string) =>
    Effect.gen(function*() {
      for (let round = 0; round < 10; round++) {
        const info = yield* ensureStream(jsm, names.stream, stream.subjects ?? [subject], main, group)
        const current = info.config.subjects ?? []
        if (subjects.captured(current, subject)) return
        if (stream.subjects !== undefined) {
          return yield* new DeclareConflict({
            group,
            detail: `subjects: the stream "${names.stream}" is configured with ${
              JSON.stringify(stream.subjects)
            }, which do not capture "${subject}"`
          })
        }
        const next = subjects.withSubject(current, subject)
        if (next === undefined) return
        yield* apiCall(`cannot update the subjects of stream ${names.stream}`, () =>
          jsm.streams.update(names.stream, { ...info.config, subjects: [...next] }))
      }
      return yield* unavailable(
        "timeout",
        `the subjects of stream ${names.stream}`,
        "kept changing under concurrent updates"
      )
    })

  const wantedConsumer = (group: string, filter: string): Partial<ConsumerConfig> => ({
    durable_name: subjects.durableOf(group),
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.New,
    ...(filter === "" ? {} : { filter_subject: filter }),
    ack_wait: nanos(consumer.ackWait),
    max_ack_pending: consumer.maxAckPending,
    // Retries and dead letters are decided by the broker, not by a server-side limit that
    // would silently stop delivering.
    max_deliver: -1
  })

  const consumerConflict = (group: string, info: ConsumerInfo, wanted: Partial<ConsumerConfig>) => {
    const fields = ["filter_subject", "ack_wait", "max_ack_pending"] as const
    for (const field of fields) {
      if ((info.config[field] ?? "") !== (wanted[field] ?? "")) {
        return new DeclareConflict({
          group,
          detail: `consumer "${info.name}" exists with ${field} = ${String(info.config[field])}, configured ${
            String(wanted[field])
          }${field === "filter_subject" ? " (a NATS 2.9 consumer filters on one subject: one pattern per group)" : ""}`
        })
      }
    }
    return undefined
  }

  /** A consumer creation refused because another update took the subject out of the stream meanwhile. */
  const isSubjectRace = (cause: unknown): boolean =>
    cause instanceof JetStreamApiError && /not a valid subset/i.test(cause.message)

  // Subject updates are read-modify-write: serialized within this process (concurrent declares of
  // several groups would otherwise overwrite each other's subjects); a race with another process
  // is caught when the consumer is created and the whole step redone.
  const updates = Effect.unsafeMakeSemaphore(1)

  const declareGroup = (group: string, pattern: string) =>
    Effect.gen(function*() {
      const planned = subjects.plan(pattern)
      const wanted = wantedConsumer(group, planned.filter)
      const durable = subjects.durableOf(group)
      for (let round = 0;; round++) {
        const info = yield* updates.withPermits(1)(Effect.gen(function*() {
          for (const subject of planned.subjects) yield* ensureSubject(group, subject)
          const existing = yield* Effect.tryPromise({
            try: () =>
              jsm.consumers.info(names.stream, durable).catch((cause: unknown) => {
                if (isCode(cause, JetStreamApiCodes.ConsumerNotFound)) return undefined
                throw cause
              }),
            catch: (cause) => unavailable("connect", `cannot read consumer ${durable}`, cause)
          })
          if (existing !== undefined) return existing
          return yield* Effect.tryPromise({
            try: () =>
              jsm.consumers.add(names.stream, wanted).catch((cause: unknown) => {
                if (isSubjectRace(cause) && round < 5) return undefined
                throw cause
              }),
            catch: (cause) =>
              cause instanceof JetStreamApiError && cause.status === 400
                ? new DeclareConflict({ group, detail: `consumer "${durable}": ${cause.message}` })
                : unavailable("connect", `cannot create consumer ${durable}`, cause)
          })
        }))
        if (info === undefined) continue
        const conflict = consumerConflict(group, info, wanted)
        if (conflict !== undefined) return yield* conflict
        return planned
      }
    })

  return { prepare, declareGroup }
}
