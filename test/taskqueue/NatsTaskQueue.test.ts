/** The TaskQueue contract on NATS JetStream, on streams of this file's own, deleted afterwards. */
import { Effect, Layer, Redacted } from "effect"
import * as NatsBroker from "../../src/layers/NatsBroker.js"
import { runId } from "../fixtures/env.js"
import { natsUrl, probeLayer, scopedStreams } from "../support/nats.js"
import { taskQueueContract } from "./contract.js"

const stream = `Q${runId}`
const maxMessageBytes = 256 * 1024

const live = Layer.unwrapScoped(
  Effect.map(scopedStreams(stream), () =>
    Layer.merge(
      NatsBroker.layer({ url: Redacted.make(natsUrl), stream, maxMessageBytes, shutdownTimeout: "2 seconds" }),
      probeLayer(stream, maxMessageBytes)
    ))
).pipe(Layer.orDie)

taskQueueContract("NATS", live, { real: true, priority: false })
