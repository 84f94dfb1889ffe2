/**
 * A dispatcher in its own process, for the SIGKILL fault test: `tsx dispatcher-child.ts <prefix>`.
 * Its "broker" is the parent: each publish is confirmed only once the message id has been handed
 * to the IPC channel, so the parent's ledger is exactly what was confirmed.
 */
import { Effect, Either, Layer } from "effect"
import type { BrokerTransport } from "../../src/index.js"
import { Broker } from "../../src/index.js"
import * as PgOutbox from "../../src/layers/PgOutbox.js"
import { plainCapabilities } from "../fixtures/transport.js"
import { pg } from "./fixtures.js"

const prefix = process.argv[2]
const send = process.send?.bind(process)
if (prefix === undefined || send === undefined) {
  process.stderr.write("usage: fork(dispatcher-child.ts, [prefix]) with an IPC channel\n")
  process.exit(2)
}

process.on("uncaughtException", (error) => send({ _tag: "crash", detail: String(error) }))
process.on("unhandledRejection", (error) => send({ _tag: "crash", detail: String(error) }))

const deliver = (message: BrokerTransport.TransportMessage) =>
  Effect.async<void>((resume) => {
    send({ _tag: "published", id: message.messageId }, undefined, undefined, () => resume(Effect.void))
  })

const transport: BrokerTransport.Transport = {
  publish: deliver,
  // One message at a time with a pause: a batch takes long enough to be killed in the middle.
  publishAll: (batch) =>
    Effect.forEach(Array.from({ length: batch.size }, (_, i) => batch.prepare(i)), (message) =>
      message === undefined
        ? Effect.succeed(Either.void)
        : deliver(message).pipe(Effect.zipLeft(Effect.sleep("1 millis")), Effect.as(Either.void))),
  consume: () => Effect.die("the child broker does not consume"),
  health: Effect.succeed({ status: "up", connection: "open", consumers: 0, detail: "ipc" }),
  capabilities: plainCapabilities("ipc")
}

const main = Layer.launch(
  PgOutbox.dispatcher({ prefix, batchSize: 200, concurrency: 1, pollInterval: "200 millis" }).pipe(
    Layer.provide(Layer.succeed(Broker.Broker, Broker.make(transport))),
    Layer.provide(pg("eb-outbox-dispatch-child"))
  )
)

send({ _tag: "ready" })
Effect.runFork(main)
