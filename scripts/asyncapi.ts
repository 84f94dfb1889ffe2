/**
 * Writes the AsyncAPI 3.0 document of a module's Topics and Tasks.
 *
 *   npm run asyncapi -- <module> [--out asyncapi.json] [--title "Orders"] [--version 1.0.0]
 *
 * `-` as `--out` prints to stdout. A module may export `asyncapiInfo` ({ title, version,
 * description }) and `asyncapiServers` to fill those sections.
 */
import { Console, Effect } from "effect"
import { readFileSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { parseArgs } from "node:util"
import * as AsyncApi from "../src/AsyncApi.js"

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    out: { type: "string", default: "asyncapi.json" },
    title: { type: "string" },
    version: { type: "string" }
  }
})

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null

const program = Effect.gen(function*() {
  const target = positionals[0]
  if (target === undefined) {
    return yield* Effect.fail(new Error("usage: asyncapi <module> [--out file|-] [--title T] [--version V]"))
  }
  const url = pathToFileURL(path.resolve(target)).href
  const module: unknown = yield* Effect.tryPromise({
    try: () => import(url),
    catch: (cause) => new Error(`cannot import ${target}: ${String(cause)}`)
  })
  if (!isRecord(module)) return yield* Effect.fail(new Error(`${target} has no exports`))
  const packageJson: unknown = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"))
  const packageVersion = isRecord(packageJson) && typeof packageJson["version"] === "string"
    ? packageJson["version"]
    : "0.0.0"
  const declared = isRecord(module["asyncapiInfo"]) ? module["asyncapiInfo"] : {}
  const info: AsyncApi.Info = {
    title: values.title ?? (typeof declared["title"] === "string" ? declared["title"] : path.parse(target).name),
    version: values.version ?? (typeof declared["version"] === "string" ? declared["version"] : packageVersion),
    ...(typeof declared["description"] === "string" ? { description: declared["description"] } : {})
  }
  const servers = module["asyncapiServers"]
  const document = yield* AsyncApi.fromModule(module, {
    info,
    ...(isRecord(servers) ? { servers: servers as Record<string, AsyncApi.Server> } : {})
  })
  const text = `${JSON.stringify(document, null, 2)}\n`
  const channels = Object.keys(document.channels).length
  if (values.out === "-") {
    process.stdout.write(text)
  } else {
    writeFileSync(values.out, text)
    yield* Console.log(`wrote ${values.out}: AsyncAPI 3.0.0, ${channels} channels`)
  }
  if (channels === 0) yield* Console.error(`warning: ${target} exports no Topic or Task`)
})

Effect.runPromise(program).catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`)
  process.exitCode = 1
})
