/**
 * What a user of the published package gets: build, `npm pack`, `npm install` the tarball into a
 * fresh ESM app that depends on its own `effect` (and the other required peers), type-check and
 * run a program there, and check that
 * - exactly one copy of `effect` is installed and loaded: every `effect` module the program
 *   resolves comes from the app's own `node_modules/effect`, and an error the library makes is an
 *   `instanceof` the app's effect classes;
 * - importing the root `effect-background` loads neither `@effect/platform` nor `@effect/sql`
 *   (nor any driver): a resolve hook records every module the process resolves;
 * - an optional peer the app did not install (`@electric-sql/pglite`) is a typed failure of its
 *   Layer, not an import error.
 *
 * Builds a staged copy of package.json + src so it neither writes this checkout's dist/ nor races
 * other runs. The install asks only the npm registry and prefers npm's local cache, which
 * installing this checkout filled with the same versions (they are pinned to what is installed
 * here).
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { performance } from "node:perf_hooks"
import { fileURLToPath, pathToFileURL } from "node:url"
import { promisify } from "node:util"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")
const tsc = path.join(root, "node_modules/typescript/bin/tsc")

const execFileAsync = promisify(execFile)

// Asynchronous so the test worker keeps answering vitest while the child runs.
const timings: Array<string> = []
const run = async (
  command: string,
  args: ReadonlyArray<string>,
  cwd: string,
  env: NodeJS.ProcessEnv = process.env
): Promise<string> => {
  const start = performance.now()
  try {
    const { stdout } = await execFileAsync(command, args, { cwd, env, encoding: "utf8", timeout: 120_000 })
    return stdout
  } catch (error) {
    const { stderr, stdout } = error as { stdout?: string; stderr?: string }
    throw new Error(`${path.basename(command)} ${args.join(" ")} failed in ${cwd}:\n${stdout ?? ""}${stderr ?? ""}`)
  } finally {
    timings.push(
      `${path.basename(args[0] ?? command)} ${args.slice(1, 3).join(" ")}: ${Math.round(performance.now() - start)} ms`
    )
  }
}

const readJson = (file: string): Record<string, unknown> => JSON.parse(fs.readFileSync(file, "utf8"))

const installedVersion = (name: string): string => {
  const version = readJson(path.join(root, "node_modules", name, "package.json"))["version"]
  assert.isString(version, `${name} is installed in the checkout`)
  return String(version)
}

/** Every directory under `nodeModules` (at any depth) that holds the package `name`. */
const copiesOf = (nodeModules: string, name: string): Array<string> => {
  const found: Array<string> = []
  const visit = (dir: string) => {
    if (fs.existsSync(path.join(dir, name, "package.json"))) found.push(path.join(dir, name))
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      if (!entry.isDirectory() || entry.name.startsWith(".")) continue
      const packages = entry.name.startsWith("@")
        ? fs.readdirSync(path.join(dir, entry.name)).map((inner) => path.join(dir, entry.name, inner))
        : [path.join(dir, entry.name)]
      for (const pkg of packages) {
        const nested = path.join(pkg, "node_modules")
        if (fs.existsSync(nested)) visit(nested)
      }
    }
  }
  visit(nodeModules)
  return found
}

// Records the URL of every module the process resolves, one a line, into the file named in `data`.
const resolveHooks = `
import { appendFileSync } from "node:fs"
let log
export async function initialize(data) { log = data.log }
export async function resolve(specifier, context, nextResolve) {
  const result = await nextResolve(specifier, context)
  appendFileSync(log, result.url + "\\n")
  return result
}
`

const registerHooks = `
import { register } from "node:module"
register("./hooks.mjs", { parentURL: import.meta.url, data: { log: process.env.RESOLVE_LOG } })
`

const consumerProgram = `
import { Cause, Effect, Layer, Queue, Schema } from "effect"
import { Broker, Health, MemoryBroker } from "effect-background"
import * as HealthHttp from "effect-background/HealthHttp"
import * as PgliteClient from "effect-background/layers/PgliteClient"

const Greeting = Broker.topic("greetings.sent", Schema.Struct({ to: Schema.String }))

const program = Effect.gen(function*() {
  const received = yield* Queue.unbounded<string>()
  yield* Broker.subscribe(Greeting, (message) => Queue.offer(received, message.to), { group: "pack-test" })
  yield* Broker.publish(Greeting, { to: "world" })
  const to: string = yield* Queue.take(received)
  const health = yield* Health.make({ broker: Health.broker })
  const report = yield* health.check
  // Made by the library's copy of effect, checked against the app's: true only if they are one.
  const invalid = yield* Effect.flip(Health.make({}, { timeout: "0 millis" }))
  const pglite = yield* Effect.flip(Effect.scoped(Layer.build(PgliteClient.layer())))
  const internal = yield* Effect.promise(() =>
    // @ts-expect-error internal modules are not exported
    import("effect-background/internal/broker").then(() => "importable", (error: { code?: string }) => error.code)
  )
  console.log(JSON.stringify({
    to,
    health: report.status,
    invalid: invalid._tag,
    sameEffect: invalid instanceof Cause.YieldableError,
    router: typeof HealthHttp.router,
    pglite: pglite._tag + ": " + pglite.message,
    internal
  }))
})

Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(MemoryBroker.layer())))
`

const rootOnlyProgram = `
import * as EffectBackground from "effect-background"
console.log(JSON.stringify(Object.keys(EffectBackground).sort()))
`

/** The package directory of a resolved `file:` URL inside `node_modules`, e.g. `…/node_modules/@effect/sql`. */
const packageOf = (url: string): string | undefined => {
  const match = /^(file:\/\/.*\/node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(url)
  return match?.[1]
}

describe("packaging", () => {
  it("the packed tarball installs into a fresh app with its own effect: one effect, a root without platform or sql", {
    timeout: 300_000
  }, async () => {
    const work = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), "eb-pack-")))
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
      assert.include(files, "dist/HealthHttp.js")
      assert.include(files, "dist/layers/MemoryBroker.d.ts")
      assert.isFalse(files.some((file) => file.startsWith("test/") || file.startsWith("bench/")), "no tests or benches")
      assert.isFalse(files.some((file) => file.includes("node_modules")), "no node_modules")
      const manifest = readJson(path.join(stage, "package.json"))
      const peers = manifest["peerDependencies"]
      assert.isObject(peers)
      assert.includeMembers(Object.keys(peers as object), ["effect", "@effect/platform", "@effect/sql"])
      assert.notProperty(manifest["dependencies"], "effect", "effect is a peer, never a dependency")

      // 3. a fresh app that depends on its own effect and the required peers, installed by npm
      const app = path.join(work, "app")
      fs.mkdirSync(app)
      const own = ["effect", "@effect/platform", "@effect/sql", "@effect/experimental"]
      fs.writeFileSync(
        path.join(app, "package.json"),
        JSON.stringify(
          {
            name: "app",
            private: true,
            type: "module",
            dependencies: {
              "effect-background": `file:${path.join(work, tarball.filename)}`,
              ...Object.fromEntries(own.map((name) => [name, installedVersion(name)]))
            }
          },
          null,
          2
        )
      )
      await run(
        "npm",
        ["install", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
        app
      )
      const nodeModules = path.join(app, "node_modules")
      assert.deepStrictEqual(
        copiesOf(nodeModules, "effect"),
        [path.join(nodeModules, "effect")],
        "one effect installed"
      )
      for (const optional of ["amqplib", "pg", "@effect/sql-pg", "@electric-sql/pglite"]) {
        assert.isFalse(
          fs.existsSync(path.join(nodeModules, optional)),
          `${optional} is an optional peer: not installed`
        )
      }

      // 4. types resolve through the exports map (tsc fails the test otherwise)
      fs.writeFileSync(
        path.join(app, "tsconfig.json"),
        JSON.stringify({
          compilerOptions: {
            target: "ES2022",
            module: "NodeNext",
            moduleResolution: "NodeNext",
            strict: true,
            exactOptionalPropertyTypes: true,
            types: ["node"],
            typeRoots: [path.join(root, "node_modules/@types")],
            outDir: "out",
            // Our .d.ts come from tsc already; checking every library declaration costs ~30 s.
            skipLibCheck: true
          },
          include: ["main.ts"]
        })
      )
      fs.writeFileSync(path.join(app, "main.ts"), consumerProgram)
      fs.writeFileSync(path.join(app, "root.mjs"), rootOnlyProgram)
      fs.writeFileSync(path.join(app, "hooks.mjs"), resolveHooks)
      fs.writeFileSync(path.join(app, "register.mjs"), registerHooks)
      await run(process.execPath, [tsc, "-p", "tsconfig.json"], app)

      // 5. the program runs on one effect
      const runLogged = async (entry: string, log: string) => {
        const output = await run(
          process.execPath,
          ["--import", "./register.mjs", entry],
          app,
          { ...process.env, RESOLVE_LOG: path.join(app, log) }
        )
        const resolved = fs.readFileSync(path.join(app, log), "utf8").split("\n").filter((line) => line.length > 0)
        return { output: JSON.parse(output.trim().split("\n").at(-1) ?? "null") as unknown, resolved }
      }
      const main = await runLogged("out/main.js", "main.log")
      assert.deepInclude(main.output, {
        to: "world",
        health: "up",
        invalid: "InvalidOptions",
        sameEffect: true,
        router: "object",
        internal: "ERR_PACKAGE_PATH_NOT_EXPORTED"
      })
      assert.include(
        String((main.output as { pglite?: unknown }).pglite),
        "SqlError: PgliteClient: cannot load @electric-sql/pglite"
      )
      const effectRoots = new Set(main.resolved.filter((url) => packageOf(url)?.endsWith("/effect")).map(packageOf))
      assert.deepStrictEqual([...effectRoots], [pathToFileURL(path.join(nodeModules, "effect")).href])
      assert.isTrue(
        main.resolved.some((url) => url.includes("/node_modules/@effect/platform/")),
        "the hook sees sub-paths"
      )

      // 6. the root entry point loads effect (and cron-parser for schedules) but no platform, sql or driver
      const rootOnly = await runLogged("root.mjs", "root.log")
      assert.includeMembers(rootOnly.output as Array<string>, [
        "Broker",
        "Health",
        "MemoryBroker",
        "Outbox",
        "TaskQueue"
      ])
      const loaded = new Set(rootOnly.resolved.map(packageOf).filter((pkg) => pkg !== undefined))
      for (
        const forbidden of [
          "@effect/platform",
          "@effect/sql",
          "@effect/sql-pg",
          "@effect/experimental",
          "amqplib",
          "pg"
        ]
      ) {
        const url = pathToFileURL(path.join(nodeModules, forbidden)).href
        assert.isFalse(loaded.has(url), `the root entry point loads ${forbidden}`)
      }
      assert.isTrue(loaded.has(pathToFileURL(path.join(nodeModules, "effect")).href))
    } finally {
      process.stdout.write(`packaging steps: ${timings.join(", ")}\n`)
      fs.rmSync(work, { recursive: true, force: true })
    }
  })
})
