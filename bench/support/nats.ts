import { jetstream, jetstreamManager } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import { Effect } from "effect"

/** The NATS server the NATS benchmarks use. */
export const natsUrl = process.env["NATS_URL"] ?? "nats://127.0.0.1:4222"

/** A raw connection for the scope, with its JetStream client and manager. */
export const rawJetStream = Effect.gen(function*() {
  const nc = yield* Effect.acquireRelease(
    Effect.promise(() => connect({ servers: natsUrl })),
    (c) => Effect.promise(() => c.close())
  )
  return { nc, js: jetstream(nc), jsm: yield* Effect.promise(() => jetstreamManager(nc)) }
})
