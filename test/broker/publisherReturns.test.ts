/**
 * The RabbitMQ publisher kernel matches each `basic.return` to its own publish, on a fake confirm
 * channel that replays an order RabbitMQ may use: the return of one publish, then one confirm
 * covering it and an earlier, routed publish with the same message id.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as Amqp from "amqplib"
import { Deferred, Duration, Effect, Fiber, SubscriptionRef } from "effect"
import { EventEmitter } from "node:events"
import type * as connection from "../../src/internal/rabbitmq/connection.js"
import * as publisher from "../../src/internal/rabbitmq/publisher.js"

interface Written {
  readonly routingKey: string
  readonly messageId: string
  readonly confirm: (error: unknown) => void
}

/** A confirm channel that records publishes and lets the test send returns and confirms. */
const fakeChannel = () => {
  const emitter = new EventEmitter()
  const written: Array<Written> = []
  const channel = Object.assign(emitter, {
    publish: (
      exchange: string,
      routingKey: string,
      _content: Buffer,
      options: Amqp.Options.Publish,
      confirm: (error: unknown) => void
    ) => {
      written.push({ routingKey, messageId: String(options.messageId), confirm })
      return true
    },
    returnOf: (exchange: string, item: Written) =>
      emitter.emit("return", {
        fields: { exchange, routingKey: item.routingKey, replyCode: 312, replyText: "NO_ROUTE" },
        properties: { messageId: item.messageId },
        content: Buffer.alloc(0)
      })
  })
  return { channel, written }
}

const managerOf = (channel: unknown) =>
  Effect.gen(function*() {
    const closed = yield* Deferred.make<string>()
    const open: connection.Connection = {
      model: { createConfirmChannel: () => Promise.resolve(channel) } as unknown as Amqp.ChannelModel,
      generation: 1,
      closed,
      blocked: { current: undefined }
    }
    const manager: connection.Manager = {
      endpoint: undefined as unknown as connection.Manager["endpoint"],
      state: yield* SubscriptionRef.make<connection.State>({ _tag: "Open", connection: open }),
      awaitOpen: () => Effect.succeed(open),
      log: () => undefined,
      describeError: (error) => String(error),
      lastError: () => undefined
    }
    return manager
  })

const message = (routingKey: string, messageId: string): publisher.OutMessage => ({
  exchange: "eb.topics",
  routingKey,
  content: Buffer.from("{}"),
  options: { messageId, mandatory: true },
  topic: routingKey,
  messageId
})

const outcomeOf = (outcome: publisher.Outcome) =>
  outcome === undefined ? "ok" : outcome._tag === "PublishRejected" ? outcome.reason : outcome._tag

describe("RabbitMQ publisher: returns", () => {
  for (const lostFirst of [false, true]) {
    it.effect(`two publishes share an id, the ${lostFirst ? "first" : "second"} is returned: each gets its own outcome`, () =>
      Effect.gen(function*() {
        const { channel, written } = fakeChannel()
        const kernel = yield* publisher.make(yield* managerOf(channel), Duration.seconds(5))
        const keys = lostFirst ? ["nobody", "orders"] : ["orders", "nobody"]
        const publishing = yield* Effect.fork(
          kernel.publish(publisher.Feed.of(keys.map((key) => message(key, "same-id"))), 10)
        )
        while (written.length < 2) yield* Effect.yieldNow()
        const lost = written.find((item) => item.routingKey === "nobody")
        assert.isDefined(lost)
        if (lost === undefined) return
        channel.returnOf("eb.topics", lost)
        // One confirm (multiple) for both: amqplib calls back in publish order.
        for (const item of written) item.confirm(null)
        const outcomes = (yield* Fiber.join(publishing)).map(outcomeOf)
        assert.deepStrictEqual(outcomes, keys.map((key) => key === "nobody" ? "unroutable" : "ok"))
      }))
  }
})
