import specs from "@asyncapi/specs"
import { assert, describe, it } from "@effect/vitest"
import { Ajv } from "ajv"
import addFormatsModule from "ajv-formats"
import { Effect, Schema } from "effect"
import * as AsyncApi from "../../src/AsyncApi.js"
import * as Broker from "../../src/Broker.js"

const validate = (document: unknown) => {
  const ajv = new Ajv({ strict: false, allErrors: true, meta: false, validateSchema: false })
  addFormatsModule.default(ajv)
  const schema: Record<string, unknown> = { ...specs.schemas["3.0.0"] }
  const check = ajv.compile(schema)
  const valid = check(document)
  return { valid, errors: ajv.errorsText(check.errors, { separator: "\n" }) }
}

describe("AsyncApi on Redis", () => {
  it.effect("transport redis: channels carry redis bindings and their stream keys; the document is valid", () =>
    Effect.gen(function*() {
      const placed = Broker.topic("orders.placed", Schema.Struct({ id: Schema.String }))
      const document = yield* AsyncApi.make({
        info: { title: "Orders", version: "1.0.0" },
        topics: [placed],
        transport: "redis",
        prefix: "shop",
        servers: { local: { host: "127.0.0.1:6379", protocol: "redis" } }
      })
      const json: unknown = JSON.parse(JSON.stringify(document))
      const { errors, valid } = validate(json)
      assert.isTrue(valid, errors)
      const channel = Object.values(document.channels)[0] as Record<string, unknown>
      assert.deepStrictEqual(channel["bindings"], { redis: { bindingVersion: "0.1.0" } })
      assert.strictEqual((channel["x-eb-redis"] as Record<string, unknown>)["stream"], "shop:s:orders.placed")
      for (const operation of Object.values(document.operations)) {
        assert.notProperty(operation as object, "bindings", "no AMQP bindings on Redis operations")
      }
    }))
})
