/**
 * Dead letters per group in the `<stream>_DLQ` stream (subject `_eb.dlq.<stream>.<group>`), with
 * the reason, topic and attempt in headers; and redrive, which copies them back for their group
 * only (the copy is published to the topic flagged with the group, which every other group acks
 * unseen) before deleting each dead letter: at least once.
 */
import { type JetStreamClient, type JetStreamManager, type StoredMsg } from "@nats-io/jetstream"
import { headers as natsHeaders } from "@nats-io/transport-node"
import * as Effect from "effect/Effect"
import type { BrokerUnavailable } from "../../BrokerError.js"
import * as codec from "./codec.js"
import { unavailable } from "./connection.js"
import type * as subjects from "./subjects.js"

/** A dead letter as stored. @internal */
export interface DeadLetter {
  readonly seq: number
  readonly headers: Record<string, string>
  readonly body: Uint8Array
}

/** @internal */
export interface DeadLetters {
  /** Stores the message as a dead letter of the group; the original is acked after this. */
  readonly store: (
    group: string,
    subject: string,
    source: { readonly stream: string; readonly seq: number },
    raw: Record<string, string>,
    body: Uint8Array,
    reason: string,
    attempt: number
  ) => Promise<unknown>
  /** The group's dead letters, oldest first, at most `max`, only those stored when the call started. */
  readonly list: (group: string, max: number) => Effect.Effect<ReadonlyArray<DeadLetter>, BrokerUnavailable>
  readonly redrive: (group: string, max: number) => Effect.Effect<number, BrokerUnavailable>
}

const maxReason = 4096

/** @internal */
export const make = (
  js: JetStreamClient,
  jsm: JetStreamManager,
  names: subjects.Names,
  timeout: number
): DeadLetters => {
  const store: DeadLetters["store"] = (group, subject, source, raw, body, reason, attempt) => {
    const h = natsHeaders()
    for (const key in raw) {
      const value = raw[key]
      if (value === undefined || key.startsWith("Nats-") || key === codec.header.redriveGroup) continue
      h.set(key, value)
    }
    h.set(codec.header.messageId, raw[codec.header.messageId] ?? raw[codec.header.msgId] ?? `${source.seq}`)
    h.set(codec.header.deadReason, reason.slice(0, maxReason).replace(/[\r\n]+/g, " "))
    h.set(codec.header.group, group)
    h.set(codec.header.routingKey, subject)
    h.set(codec.header.attempt, String(attempt))
    // One dead letter per stored message, even if this store is retried.
    h.set(codec.header.msgId, `dlq:${source.stream}:${source.seq}`)
    return js.publish(names.deadLetterSubject(group), body, { headers: h, timeout, retries: 1 })
  }

  const get = (seq: number, subject: string): Promise<StoredMsg | null> =>
    jsm.direct.getMessage(names.deadLetterStream, { seq, next_by_subj: subject })

  const list = (group: string, max: number) =>
    Effect.tryPromise({
      try: async () => {
        const info = await jsm.streams.info(names.deadLetterStream)
        const until = info.state.last_seq
        const subject = names.deadLetterSubject(group)
        const out: Array<DeadLetter> = []
        let seq = info.state.first_seq
        while (out.length < max && seq <= until) {
          const stored = await get(seq, subject).catch((cause: unknown) => {
            // "no message found": none left for this subject.
            if (cause instanceof Error && /no message found/i.test(cause.message)) return null
            throw cause
          })
          if (stored === null || stored.seq > until) break
          out.push({ seq: stored.seq, headers: codec.table(stored.header), body: stored.data })
          seq = stored.seq + 1
        }
        return out
      },
      catch: (cause) => unavailable("connect", `cannot read the dead letters of ${group}`, cause)
    })

  const redrive = (group: string, max: number) =>
    Effect.flatMap(list(group, max), (dead) =>
      Effect.tryPromise({
        try: async () => {
          for (const letter of dead) {
            const h = natsHeaders()
            for (const key in letter.headers) {
              const value = letter.headers[key]
              if (
                value === undefined || key.startsWith("Nats-") || key === codec.header.deadReason ||
                key === codec.header.group || key === codec.header.routingKey || key === codec.header.attempt
              ) continue
              h.set(key, value)
            }
            h.set(codec.header.redriveGroup, group)
            // A retried redrive of the same dead letter is dropped by the duplicate window.
            h.set(codec.header.msgId, `redrive:${names.deadLetterStream}:${letter.seq}`)
            const topic = letter.headers[codec.header.routingKey] ?? ""
            await js.publish(topic, letter.body, { headers: h, timeout, retries: 1 })
            await jsm.streams.deleteMessage(names.deadLetterStream, letter.seq, false)
          }
          return dead.length
        },
        catch: (cause) => unavailable("connect", `cannot redrive the dead letters of ${group}`, cause)
      }))

  return { store, list, redrive }
}
