import specs from "@asyncapi/specs"
import { assert, describe, it } from "@effect/vitest"
import { Ajv } from "ajv"
import addFormatsModule from "ajv-formats"
import { Effect, Schema } from "effect"
import * as AsyncApi from "../../src/AsyncApi.js"
import * as Broker from "../../src/Broker.js"
import * as Task from "../../src/Task.js"

const validate = (document: unknown) => {
  const ajv = new Ajv({ strict: false, allErrors: true, meta: false, validateSchema: false })
  addFormatsModule.default(ajv)
  const schema: Record<string, unknown> = { ...specs.schemas["3.0.0"] }
  const check = ajv.compile(schema)
  const valid = check(document)
  return { valid, errors: ajv.errorsText(check.errors, { separator: "\n" }) }
}

const ordersPlaced = Broker.topic("orders.placed", Schema.Struct({ orderId: Schema.String }))
const sendConfirmation = Task.make("send_confirmation", { payload: Schema.Struct({ email: Schema.String }) })

describe("AsyncApi on NATS", () => {
  it.effect("documents the channels with NATS bindings: the stream on every operation, the durable consumer of a task", () =>
    Effect.gen(function*() {
      const document = yield* AsyncApi.make({
        info: { title: "Orders", version: "1.0.0" },
        topics: [ordersPlaced],
        tasks: [sendConfirmation],
        transport: "nats",
        stream: "ORDERS",
        servers: { local: { host: "127.0.0.1:4222", protocol: "nats" } }
      })
      const json: unknown = JSON.parse(JSON.stringify(document))
      const { errors, valid } = validate(json)
      assert.isTrue(valid, errors)
      const text = JSON.stringify(document)
      assert.notInclude(text, "\"amqp\"", "no AMQP binding")
      const operations = document.operations as Record<string, { bindings?: { nats?: Record<string, unknown> } }>
      const send = operations["orders.placed.send"]
      assert.strictEqual(send?.bindings?.nats?.["x-jetstream-stream"], "ORDERS")
      const taskReceive = Object.entries(operations).find(([key]) =>
        key.includes("send_confirmation") && key.endsWith(".receive")
      )?.[1]
      assert.strictEqual(taskReceive?.bindings?.nats?.["x-jetstream-stream"], "ORDERS")
      assert.isString(taskReceive?.bindings?.nats?.["x-jetstream-consumer"])
    }))
})
