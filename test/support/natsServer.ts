/** A nats-server of the test's own (own port, own storage directory), with JetStream. */
import { Effect, type Scope } from "effect"
import { type OwnProcess, ownProcess } from "./ownProcess.js"

export interface NatsServer extends OwnProcess {
  readonly url: string
}

export const natsServer: Effect.Effect<NatsServer, Error, Scope.Scope> = Effect.map(
  ownProcess("/usr/sbin/nats-server", (port, dir) => ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir]),
  (server) => ({ ...server, url: `nats://127.0.0.1:${server.port}` })
)
