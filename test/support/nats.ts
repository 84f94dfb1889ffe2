/** Test helpers for NATS: a raw connection, cleanup of a broker's streams, the contract probe. */
import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream"
import { connect, type NatsConnection } from "@nats-io/transport-node"
import { type Context, Effect, Layer } from "effect"
import { names } from "../../src/internal/nats/subjects.js"
import { type ContractDeadLetter, ContractProbe } from "../broker/contract.js"

export const natsUrl = process.env["NATS_URL"] ?? "nats://127.0.0.1:4222"

/** A raw connection and JetStream manager, closed with the scope. */
export const rawNats = (url = natsUrl) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const nc = await connect({ servers: url })
      return { nc, jsm: await jetstreamManager(nc) }
    }),
    ({ nc }) => Effect.promise(() => nc.close())
  )

/** Deletes the broker's three streams (and so their consumers). */
export const deleteStreams = (jsm: JetStreamManager, stream: string) =>
  Effect.promise(async () => {
    const n = names(stream)
    for (const name of [n.stream, n.deadLetterStream, n.delayStream]) {
      await jsm.streams.delete(name).catch(() => false)
    }
  })

/** The streams of `stream` exist for the scope's duration and are deleted after it. */
export const scopedStreams = (stream: string, url = natsUrl) =>
  Effect.acquireRelease(
    rawNats(url),
    ({ jsm }) => deleteStreams(jsm, stream)
  )

const text = new TextDecoder()

/** Reads `<stream>_DLQ` for the group (without removing anything). */
export const deadLettersOf = (nc: NatsConnection, jsm: JetStreamManager, stream: string, group: string) =>
  Effect.promise(async () => {
    void nc
    const n = names(stream)
    const out: Array<ContractDeadLetter> = []
    const info = await jsm.streams.info(n.deadLetterStream).catch(() => undefined)
    if (info === undefined) return out
    let seq = info.state.first_seq
    while (seq <= info.state.last_seq) {
      const stored = await jsm.direct.getMessage(n.deadLetterStream, { seq, next_by_subj: n.deadLetterSubject(group) })
        .catch(() => null)
      if (stored === null) break
      const headers: Record<string, string> = {}
      for (const [key, values] of stored.header) {
        const last = values[values.length - 1]
        if (last !== undefined) headers[key] = last
      }
      out.push({
        messageId: headers["x-eb-message-id"] ?? "",
        reason: headers["x-eb-dead-reason"] ?? "",
        body: text.decode(stored.data),
        headers
      })
      seq = stored.seq + 1
    }
    return out
  })

/** The contract probe for a broker on `stream`. */
export const probeLayer = (stream: string, maxMessageBytes: number, url = natsUrl) =>
  Layer.scoped(
    ContractProbe,
    Effect.map(rawNats(url), ({ jsm, nc }) => ({
      maxMessageBytes,
      deadLetters: (group: string) => deadLettersOf(nc, jsm, stream, group)
    } satisfies Context.Tag.Service<ContractProbe>))
  )
