/**
 * The NATS JetStream transport: the connection, the streams (see `topology.ts`), the delay mover,
 * and the port's operations over them.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as Broker from "../../Broker.js"
import type { BrokerUnavailable, DeclareConflict } from "../../BrokerError.js"
import type * as BrokerTransport from "../../BrokerTransport.js"
import * as connection from "./connection.js"
import * as consumer from "./consumer.js"
import * as deadLetters from "./deadLetters.js"
import * as mover from "./mover.js"
import * as publisher from "./publisher.js"
import * as subjects from "./subjects.js"
import * as topology from "./topology.js"

/** Options after validation. @internal */
export interface Resolved {
  readonly connect: connection.ConnectOptions
  readonly stream: string
  readonly streamSettings: topology.StreamSettings
  readonly consumerSettings: topology.ConsumerSettings
  readonly maxDeliver: number
  readonly maxMessageBytes: number
  readonly shutdownTimeout: Duration.Duration
  readonly publishTimeout: Duration.Duration
}

/** Room left for headers (user headers and metadata are limited to 32 KiB) within `max_payload`. */
const headerRoom = 34 * 1024

/** @internal */
export interface NatsTransport {
  readonly transport: BrokerTransport.Transport
  readonly connection: connection.Connection
  readonly names: subjects.Names
  readonly deadLetters: deadLetters.DeadLetters
}

/** @internal */
export const make = (
  options: Resolved
): Effect.Effect<NatsTransport, BrokerUnavailable | DeclareConflict, Scope.Scope> =>
  Effect.gen(function*() {
    const conn = yield* connection.open(options.connect)
    const names = subjects.names(options.stream)
    const timeout = Duration.toMillis(options.publishTimeout)
    const topo = topology.make(conn.jsm, names, options.streamSettings, options.consumerSettings)
    yield* topo.prepare
    yield* mover.start(conn.js, conn.jsm, names, timeout)
    const dead = deadLetters.make(conn.js, conn.jsm, names, timeout)
    const pub = publisher.make(conn.js, names, timeout, Date.now)
    const active = new Set<object>()
    const serverMax = conn.nc.info?.max_payload ?? 1024 * 1024

    const health: Effect.Effect<Broker.Health> = Effect.sync(() => {
      const state = conn.state()
      const error = conn.lastError()
      return {
        status: state === "open" ? "up" : "down",
        connection: state,
        consumers: active.size,
        detail: `NATS ${conn.nc.getServer()} (server ${conn.nc.info?.version ?? "?"}), stream ${names.stream}${
          error === undefined ? "" : `; last error: ${error}`
        }`
      }
    })

    const deps: consumer.ConsumerDeps = {
      js: conn.js,
      topology: topo,
      deadLetters: dead,
      names,
      ackWait: options.consumerSettings.ackWait,
      maxDeliver: options.maxDeliver,
      shutdownTimeout: options.shutdownTimeout,
      active
    }

    const transport: BrokerTransport.Transport = {
      publish: pub.publish,
      publishAll: (batch, window) => pub.publishAll(batch, window),
      consume: (subscription, handle) => consumer.consume(deps, subscription, handle),
      declare: (subscription) => Effect.asVoid(topo.declareGroup(subscription.group, subscription.pattern)),
      redrive: dead.redrive,
      health,
      capabilities: {
        name: "nats",
        delay: true,
        // JetStream keeps one order per stream; there is no priority to honour.
        priority: false,
        expiration: true,
        wildcards: true,
        // One JetStream message each for now; packing would pay here (see `npm run bench -- nats-pack`).
        packedContentType: undefined,
        // The stream's storage decides (`storage: "memory"`); a message cannot choose.
        transient: false,
        redrive: true,
        maxMessageBytes: Math.min(options.maxMessageBytes, serverMax - headerRoom)
      }
    }
    return { transport, connection: conn, names, deadLetters: dead }
  })
