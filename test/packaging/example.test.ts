/**
 * The README's main command, as CI runs it: the orders example with no services configured
 * (embedded PGlite + in-memory broker) runs its scenario and exits 0 with `--once`.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")

describe("examples/orders", () => {
  it("runs the scenario on embedded infrastructure and exits 0 with --once", { timeout: 240_000 }, async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1" }
    delete env["DATABASE_URL"]
    delete env["RABBITMQ_URL"]
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [path.join(root, "node_modules/tsx/dist/cli.mjs"), "examples/orders/main.ts", "--once"],
      { cwd: root, env, encoding: "utf8", timeout: 230_000 }
    )
    const lines = stdout.split("\n")
    assert.isTrue(lines.some((line) => line.includes("(database: embedded PGlite, broker: in-memory)")), stdout)
    assert.isTrue(lines.some((line) => line.startsWith("try: curl -s -XPOST http://localhost:")), stdout)
    const placed = lines.filter((line) => line.startsWith("placed ")).map((line) => line.split(/\s+/)[1])
    const confirmed = lines.filter((line) => line.startsWith("confirmed ")).map((line) => line.split(/\s+/)[1])
    assert.strictEqual(placed.length, 3, stdout)
    assert.deepStrictEqual([...confirmed].sort(), [...placed].sort())
    assert.include(lines, "health    up")
  })
})
