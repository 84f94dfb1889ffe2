/**
 * What a user of the published package gets: build, `npm pack`, unpack the tarball into a fresh
 * project, type-check and run an ESM program importing `effect-background` and a sub-path layer.
 *
 * Builds a staged copy of package.json + src so it neither writes this checkout's dist/ nor races
 * other runs. The fresh project links the tarball's declared dependencies from this checkout's
 * node_modules (offline and fast) instead of `npm install`, so an undeclared import still fails.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
const tsc = path.join(root, "node_modules/typescript/bin/tsc")

const execFileAsync = promisify(execFile)

// Asynchronous so the test worker keeps answering vitest while the child runs.
const timings: Array<string> = []
const run = async (command: string, args: ReadonlyArray<string>, cwd: string): Promise<string> => {
  const start = Date.now()
  try {
    const { stdout } = await execFileAsync(command, args, { cwd, encoding: "utf8", timeout: 90_000 })
    return stdout
  } catch (error) {
    const { stderr, stdout } = error as { stdout?: string; stderr?: string }
    throw new Error(`${path.basename(command)} ${args.join(" ")} failed in ${cwd}:\n${stdout ?? ""}${stderr ?? ""}`)
  } finally {
    timings.push(`${path.basename(args[0] ?? command)} ${args.slice(1, 3).join(" ")}: ${Date.now() - start} ms`)
  }
}

const readJson = (file: string): Record<string, unknown> => JSON.parse(fs.readFileSync(file, "utf8"))

const linkDependency = (nodeModules: string, name: string) => {
  const target = path.join(root, "node_modules", name)
  assert.isTrue(fs.existsSync(target), `dependency ${name} is installed in the checkout`)
  const link = path.join(nodeModules, name)
  fs.mkdirSync(path.dirname(link), { recursive: true })
  if (!fs.existsSync(link)) fs.symlinkSync(target, link, "dir")
}

const consumerProgram = `
import { Effect, Queue, Schema } from "effect"
import { Broker, MemoryBroker } from "effect-background"
import * as Health from "effect-background/Health"

const Greeting = Broker.topic("greetings.sent", Schema.Struct({ to: Schema.String }))

const program = Effect.gen(function*() {
  const received = yield* Queue.unbounded<string>()
  yield* Broker.subscribe(Greeting, (message) => Queue.offer(received, message.to), { group: "pack-test" })
  yield* Broker.publish(Greeting, { to: "world" })
  const to: string = yield* Queue.take(received)
  const health = yield* Health.make({ broker: Health.broker })
  const report = yield* health.check
  const internal = yield* Effect.promise(() =>
    // @ts-expect-error internal modules are not exported
    import("effect-background/internal/broker").then(() => "importable", (error: { code?: string }) => error.code)
  )
  console.log(JSON.stringify({ to, health: report.status, internal }))
})

Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(MemoryBroker.layer())))
`

describe("packaging", () => {
  it("the packed tarball installs into a fresh ESM project, type-checks and runs", { timeout: 180_000 }, async () => {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), "eb-pack-"))
    try {
      // 1. build a staged copy
      const stage = path.join(work, "stage")
      fs.mkdirSync(stage)
      for (const file of ["package.json", "tsconfig.base.json", "tsconfig.build.json", "README.md", "LICENSE"]) {
        if (fs.existsSync(path.join(root, file))) fs.copyFileSync(path.join(root, file), path.join(stage, file))
      }
      fs.cpSync(path.join(root, "src"), path.join(stage, "src"), { recursive: true })
      fs.symlinkSync(path.join(root, "node_modules"), path.join(stage, "node_modules"), "dir")
      await run(process.execPath, [tsc, "-p", "tsconfig.build.json"], stage)
      assert.isTrue(fs.existsSync(path.join(stage, "dist/index.js")))
      assert.isTrue(fs.existsSync(path.join(stage, "dist/index.d.ts")))

      // 2. npm pack
      const packed = JSON.parse(await run("npm", ["pack", "--json", "--pack-destination", work], stage)) as Array<{
        filename: string
        files: Array<{ path: string }>
      }>
      const tarball = packed[0]
      assert.isDefined(tarball)
      if (tarball === undefined) return
      const files = tarball.files.map((file) => file.path)
      assert.include(files, "package.json")
      assert.include(files, "dist/index.js")
      assert.include(files, "dist/layers/MemoryBroker.d.ts")
      assert.isFalse(files.some((file) => file.startsWith("test/") || file.startsWith("bench/")), "no tests or benches")
      assert.isFalse(files.some((file) => file.includes("node_modules")), "no node_modules")

      // 3. a fresh project with the tarball unpacked and its declared dependencies linked
      const consumer = path.join(work, "consumer")
      const nodeModules = path.join(consumer, "node_modules")
      const installed = path.join(nodeModules, "effect-background")
      fs.mkdirSync(installed, { recursive: true })
      await run("tar", ["-xzf", path.join(work, tarball.filename), "--strip-components=1", "-C", installed], work)
      const manifest = readJson(path.join(installed, "package.json"))
      const declared = new Set<string>(["@types/node"])
      for (const field of ["dependencies", "peerDependencies", "optionalDependencies"]) {
        const deps = manifest[field]
        if (typeof deps === "object" && deps !== null) for (const name of Object.keys(deps)) declared.add(name)
      }
      for (const name of declared) linkDependency(nodeModules, name)
      fs.writeFileSync(
        path.join(consumer, "package.json"),
        JSON.stringify({ name: "consumer", private: true, type: "module" }, null, 2)
      )
      fs.writeFileSync(
        path.join(consumer, "tsconfig.json"),
        JSON.stringify({
          compilerOptions: {
            target: "ES2022",
            module: "NodeNext",
            moduleResolution: "NodeNext",
            strict: true,
            exactOptionalPropertyTypes: true,
            types: ["node"],
            outDir: "out",
            // Our .d.ts come from tsc already; checking every library declaration costs ~30 s.
            skipLibCheck: true
          },
          include: ["main.ts"]
        })
      )
      fs.writeFileSync(path.join(consumer, "main.ts"), consumerProgram)

      // 4. types resolve through the exports map (tsc fails the test otherwise), then it runs
      await run(process.execPath, [tsc, "-p", "tsconfig.json"], consumer)
      const output = await run(process.execPath, [path.join(consumer, "out/main.js")], consumer)
      assert.deepStrictEqual(JSON.parse(output.trim().split("\n").at(-1) ?? "{}"), {
        to: "world",
        health: "up",
        internal: "ERR_PACKAGE_PATH_NOT_EXPORTED"
      })
    } finally {
      process.stdout.write(`packaging steps: ${timings.join(", ")}\n`)
      fs.rmSync(work, { recursive: true, force: true })
    }
  })
})
