/**
 * `npm run asyncapi -- examples/orders/contracts.ts` end to end: the script runs under tsx (which
 * resolves `effect-background` through tsconfig paths, as the examples do) and its output is checked.
 */
import specs from "@asyncapi/specs"
import { assert, describe, it } from "@effect/vitest"
import { Ajv } from "ajv"
import addFormatsModule from "ajv-formats"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")

interface Document {
  readonly info: { readonly title: string }
  readonly channels: Record<string, { readonly address: string }>
  readonly components: {
    readonly messages: Record<
      string,
      { readonly payload: { readonly $ref?: string; readonly required?: Array<string> } }
    >
    readonly schemas: Record<string, { readonly required?: Array<string> }>
  }
}

describe("AsyncApi of the orders example", () => {
  it("the script lists every topic and task of the example with its payload schema, as valid AsyncAPI 3.0", {
    timeout: 120_000
  }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eb-asyncapi-"))
    try {
      const out = path.join(dir, "asyncapi.json")
      const { stdout } = await promisify(execFile)(
        process.execPath,
        [
          path.join(root, "node_modules/tsx/dist/cli.mjs"),
          "scripts/asyncapi.ts",
          "examples/orders/contracts.ts",
          "--out",
          out
        ],
        { cwd: root, encoding: "utf8", timeout: 110_000 }
      )
      assert.include(stdout, "5 channels")
      const json: unknown = JSON.parse(fs.readFileSync(out, "utf8"))

      const ajv = new Ajv({ strict: false, allErrors: true, meta: false, validateSchema: false })
      addFormatsModule.default(ajv)
      const schema: Record<string, unknown> = { ...specs.schemas["3.0.0"] }
      const validate = ajv.compile(schema)
      assert.isTrue(validate(json), ajv.errorsText(validate.errors))

      const document = json as Document
      assert.strictEqual(document.info.title, "Orders example")
      const expected: Record<string, Array<string>> = {
        "orders.placed": ["email", "orderId", "placedAt", "totalCents"],
        "tasks.send_confirmation": ["email", "orderId"],
        "tasks.daily_digest": ["reason"],
        "tasks.heartbeat": ["from"],
        "tasks.outbox_retention": ["maxAgeMinutes"]
      }
      assert.deepStrictEqual(Object.keys(document.channels).sort(), Object.keys(expected).sort())
      for (const [channel, required] of Object.entries(expected)) {
        const payload = document.components.messages[channel]?.payload
        const resolved = payload?.$ref !== undefined
          ? document.components.schemas[payload.$ref.replace("#/components/schemas/", "")]
          : payload
        assert.deepStrictEqual([...(resolved?.required ?? [])].sort(), required, channel)
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
