import specs from "@asyncapi/specs"
import { assert, describe, it } from "@effect/vitest"
import { Ajv } from "ajv"
import addFormatsModule from "ajv-formats"
import { Effect, Schema } from "effect"
import * as AsyncApi from "../../src/AsyncApi.js"
import * as Broker from "../../src/Broker.js"
import * as Task from "../../src/Task.js"

const validate = (document: unknown) => {
  // The AsyncAPI schema embeds its own copy of the draft-07 meta-schema.
  const ajv = new Ajv({ strict: false, allErrors: true, meta: false, validateSchema: false })
  addFormatsModule.default(ajv)
  const schema: Record<string, unknown> = { ...specs.schemas["3.0.0"] }
  const check = ajv.compile(schema)
  const valid = check(document)
  return { valid, errors: ajv.errorsText(check.errors, { separator: "\n" }) }
}

const resolve = (root: unknown, ref: string): unknown => {
  assert.isTrue(ref.startsWith("#/"), `local ref ${ref}`)
  let node: unknown = root
  for (const raw of ref.slice(2).split("/")) {
    const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~")
    assert.isTrue(typeof node === "object" && node !== null && key in node, `${ref} resolves (missing ${key})`)
    node = (node as Record<string, unknown>)[key]
  }
  return node
}

const refsIn = (node: unknown, out: Array<string> = []): Array<string> => {
  if (Array.isArray(node)) node.forEach((item) => refsIn(item, out))
  else if (typeof node === "object" && node !== null) {
    for (const [key, value] of Object.entries(node)) {
      if (key === "$ref" && typeof value === "string") out.push(value)
      else refsIn(value, out)
    }
  }
  return out
}

class Address extends Schema.Class<Address>("Address")({
  street: Schema.String,
  zip: Schema.String.pipe(Schema.pattern(/^\d{5}$/))
}) {}

const OrderPlaced = Schema.Struct({
  orderId: Schema.UUID,
  items: Schema.Array(Schema.Struct({ sku: Schema.String, quantity: Schema.Int.pipe(Schema.positive()) })),
  shipTo: Address,
  billTo: Schema.optional(Address),
  placedAt: Schema.Date,
  channel: Schema.Literal("web", "store")
}).annotations({ description: "An order was accepted" })

class InvalidAddress extends Schema.TaggedError<InvalidAddress>()("InvalidAddress", { address: Schema.String }) {}

const ordersPlaced = Broker.topic("orders.placed", OrderPlaced)
const ordersShipped = Broker.topic("orders.shipped", Schema.Struct({ orderId: Schema.String, carrier: Schema.String }))
const anyOrder = Broker.pattern("orders.#", Schema.Unknown)
const sendConfirmation = Task.make("send_confirmation", {
  payload: Schema.Struct({ orderId: Schema.String, email: Schema.String }),
  success: Schema.Struct({ messageId: Schema.String }),
  failure: InvalidAddress
})
const heartbeat = Task.make("heartbeat", { payload: Schema.Struct({ at: Schema.String }), delivery: "transient" })

describe("AsyncApi", () => {
  it.effect("generates a valid AsyncAPI 3.0 document with one channel per topic and task", () =>
    Effect.gen(function*() {
      const document = yield* AsyncApi.make({
        info: { title: "Orders", version: "1.2.3", description: "Order events" },
        servers: { rabbitmq: { host: "localhost:5672", protocol: "amqp" } },
        topics: [ordersPlaced, ordersShipped, anyOrder],
        tasks: [sendConfirmation, heartbeat]
      })
      const json: unknown = JSON.parse(JSON.stringify(document))
      const { errors, valid } = validate(json)
      assert.isTrue(valid, errors)
      // The validator does reject what the specification forbids.
      assert.isFalse(validate({ ...document, channels: { bad: { address: 1 } } }).valid)
      assert.isFalse(validate({ ...document, operations: { op: { action: "publish" } } }).valid)

      const addresses = Object.values(document.channels).map((channel) => (channel as { address: string }).address)
      assert.deepStrictEqual(addresses.sort(), [
        "orders.placed",
        "orders.shipped",
        "tasks.heartbeat",
        "tasks.send_confirmation"
      ])
      for (const ref of refsIn(json)) resolve(json, ref)

      // Every channel lists its message, and the message carries the payload's JSON Schema.
      for (const [id, channel] of Object.entries(document.channels)) {
        const messageRefs = refsIn((channel as { messages: unknown }).messages)
        assert.strictEqual(messageRefs.length, 1, id)
        const message = resolve(json, messageRefs[0] ?? "") as { payload: { type?: string; required?: Array<string> } }
        assert.strictEqual(message.payload.type, "object", id)
        assert.isAbove(message.payload.required?.length ?? 0, 0, id)
        assert.strictEqual(
          Object.values(document.operations).filter((op) =>
            (op as { channel: { $ref: string } }).channel.$ref === `#/channels/${id}`
          ).length,
          2
        )
      }
    }))

  it.effect("payload schemas follow the effect Schemas, sharing named classes as components", () =>
    Effect.gen(function*() {
      const document = yield* AsyncApi.make({ info: { title: "Orders", version: "1" }, topics: [ordersPlaced] })
      const message = document.components.messages["orders.placed"] as {
        payload: { description: string; properties: Record<string, unknown>; required: Array<string> }
      }
      assert.strictEqual(message.payload.description, "An order was accepted")
      assert.deepStrictEqual(message.payload.required.sort(), ["channel", "items", "orderId", "placedAt", "shipTo"])
      assert.deepStrictEqual(message.payload.properties["shipTo"], { $ref: "#/components/schemas/Address" })
      assert.deepInclude(message.payload.properties["channel"], { enum: ["web", "store"] })
      const address = document.components.schemas["Address"] as { properties: Record<string, unknown> }
      assert.deepInclude(address.properties["zip"], { pattern: "^\\d{5}$" })
    }))

  it.effect("a task channel carries its queue group and result schemas", () =>
    Effect.gen(function*() {
      const document = yield* AsyncApi.make({ info: { title: "Tasks", version: "1" }, tasks: [sendConfirmation] })
      const json: unknown = JSON.parse(JSON.stringify(document))
      const channel = document.channels["tasks.send_confirmation"] as {
        "x-eb-task": {
          group: string
          packedContentType: string
          success: { required: Array<string> }
          failure: { $ref: string }
        }
      }
      assert.strictEqual(channel["x-eb-task"].group, "tasks.send_confirmation")
      assert.strictEqual(channel["x-eb-task"].packedContentType, "application/vnd.effect-background.packed")
      assert.deepStrictEqual(channel["x-eb-task"].success.required, ["messageId"])
      const failure = resolve(json, channel["x-eb-task"].failure.$ref) as { required: Array<string> }
      assert.includeMembers(failure.required, ["_tag", "address"])
    }))

  it.effect("send operations state the AMQP delivery mode: persistent, or transient for a transient task", () =>
    Effect.gen(function*() {
      const document = yield* AsyncApi.make({
        info: { title: "Modes", version: "1" },
        topics: [ordersPlaced],
        tasks: [sendConfirmation, heartbeat]
      })
      const modeOf = (id: string) =>
        (document.operations[`${id}.send`] as { bindings: { amqp: { deliveryMode: number; mandatory: boolean } } })
          .bindings.amqp
      assert.deepInclude(modeOf("orders.placed"), { deliveryMode: 2, mandatory: true })
      assert.deepInclude(modeOf("tasks.send_confirmation"), { deliveryMode: 2 })
      assert.deepInclude(modeOf("tasks.heartbeat"), { deliveryMode: 1 })
    }))

  it.effect("collects topics and tasks from a module's exports", () =>
    Effect.gen(function*() {
      const module = { ordersPlaced, anyOrder, sendConfirmation, helper: () => 1, name: "x" }
      const document = yield* AsyncApi.fromModule(module, { info: { title: "M", version: "1" } })
      assert.deepStrictEqual(Object.keys(document.channels).sort(), ["orders.placed", "tasks.send_confirmation"])
    }))

  it.effect("a payload without a JSON Schema form fails with AsyncApiError naming the channel", () =>
    Effect.gen(function*() {
      const opaque = Broker.topic("blobs.stored", Schema.declare((u): u is Uint8Array => u instanceof Uint8Array))
      const error = yield* Effect.flip(AsyncApi.make({ info: { title: "B", version: "1" }, topics: [opaque] }))
      assert.strictEqual(error._tag, "AsyncApiError")
      assert.strictEqual(error.channel, "blobs.stored")
    }))

  it.effect("two addresses on one component key fail typed naming both, never overwrite", () =>
    Effect.gen(function*() {
      const a = Broker.topic("billing:invoice.created", Schema.Struct({ id: Schema.String }))
      const b = Broker.topic("billing_invoice.created", Schema.Struct({ id: Schema.String }))
      const error = yield* Effect.flip(AsyncApi.make({ info: { title: "t", version: "1" }, topics: [a, b] }))
      assert.strictEqual(error._tag, "AsyncApiError")
      assert.include(error.message, "billing:invoice.created")
      assert.include(error.message, "billing_invoice.created")
    }))

  it.effect("two schema identifiers on one component key fail typed naming both", () =>
    Effect.gen(function*() {
      const first = Schema.Struct({ n: Schema.Number }).annotations({ identifier: "Order Line" })
      const second = Schema.Struct({ s: Schema.String }).annotations({ identifier: "Order_Line" })
      const topic = Broker.topic("orders.lines", Schema.Struct({ a: first, b: second }))
      const error = yield* Effect.flip(AsyncApi.make({ info: { title: "t", version: "1" }, topics: [topic] }))
      assert.include(error.message, "Order Line")
      assert.include(error.message, "Order_Line")
    }))

  it.effect("payload schemas carry no $id (it would move the base of relative $refs); every wire header is documented", () =>
    Effect.gen(function*() {
      const anything = Broker.topic("audit.anything", Schema.Unknown)
      const document = yield* AsyncApi.make({ info: { title: "t", version: "1" }, topics: [anything] })
      assert.notInclude(JSON.stringify(document), "\"$id\"")
      const message = Object.values(document.components.messages)[0] as { headers: { properties: object } }
      for (
        const header of [
          "traceparent",
          "x-eb-attempt",
          "x-eb-routing-key",
          "x-eb-last-error",
          "x-eb-dead-reason",
          "x-eb-group",
          "x-eb-delay"
        ]
      ) {
        assert.property(message.headers.properties, header)
      }
      assert.isTrue(validate(document).valid)
    }))
})
