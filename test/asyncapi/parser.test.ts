/**
 * The documents as the AsyncAPI tooling reads them: `@asyncapi/parser` (the parser behind the
 * AsyncAPI CLI, Studio and generators, with its Spectral rules) must report no error for a
 * document of each transport, with topics, tasks, shared schema components and an Unknown payload.
 */
import { Parser } from "@asyncapi/parser"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as AsyncApi from "../../src/AsyncApi.js"
import * as Broker from "../../src/Broker.js"
import * as Task from "../../src/Task.js"

class Money extends Schema.Class<Money>("Money")({ amount: Schema.Int, currency: Schema.String }) {}
const placed = Broker.topic("orders.placed", Schema.Struct({ id: Schema.String, total: Money }))
const audit = Broker.topic("audit.anything", Schema.Unknown)
const charge = Task.make("charge", {
  payload: Schema.Struct({ orderId: Schema.String, total: Money }),
  success: Schema.Struct({ receipt: Schema.String }),
  failure: Schema.Struct({ reason: Schema.String })
})

// Error severity in Spectral's diagnostics.
const errorSeverity = 0

describe("AsyncApi documents under @asyncapi/parser", () => {
  for (const transport of ["rabbitmq", "nats", "redis"] as const) {
    it.effect(`a ${transport} document parses with no error diagnostics`, () =>
      Effect.gen(function*() {
        const document = yield* AsyncApi.make({
          info: { title: "orders", version: "1.0.0" },
          topics: [placed, audit],
          tasks: [charge],
          transport
        })
        const { diagnostics, document: parsed } = yield* Effect.promise(() =>
          new Parser().parse(JSON.stringify(document))
        )
        const errors = diagnostics.filter((diagnostic) => diagnostic.severity === errorSeverity)
        assert.deepStrictEqual(
          errors.map((error) => `${error.code}: ${error.message} at ${error.path.join(".")}`),
          []
        )
        assert.isDefined(parsed)
        assert.strictEqual(parsed?.channels().length, 3)
      }))
  }
})
