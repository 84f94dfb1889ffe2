import { assert, describe, it, layer } from "@effect/vitest"
import * as Amqp from "amqplib"
import { Deferred, Duration, Effect, Either, Layer, Logger, Queue, Redacted, Schedule, Schema, Scope } from "effect"
import * as Broker from "../../src/Broker.js"
import * as RabbitMQBroker from "../../src/layers/RabbitMQBroker.js"
import { rabbitmqUrl, runId, uniqueName } from "../fixtures/env.js"
import { probeLayer, rabbitmqctl, rawConnection, scopedVhost, urlFor, withChannel } from "../support/rabbitmq.js"
import { tcpProxy } from "../support/tcpProxy.js"
import { brokerContract } from "./contract.js"

const vhost = `eb-test-${runId}`
const prefix = `t${runId}`
const maxMessageBytes = 256 * 1024

/** The broker and its probe in a vhost of this file's own, deleted (with every queue) afterwards. */
const live = Layer.unwrapScoped(
  Effect.map(scopedVhost(vhost), (name) => {
    const url = urlFor(name)
    return Layer.merge(
      RabbitMQBroker.layer({ url: Redacted.make(url), prefix, maxMessageBytes }),
      probeLayer(url, prefix, maxMessageBytes)
    )
  })
).pipe(Layer.orDie)

brokerContract("RabbitMQ", live, { real: true })
