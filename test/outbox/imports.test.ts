/**
 * The root barrel loads `Outbox`, `OutboxStore` and `OutboxError`: none of them may load
 * `@effect/sql` (or a driver) at runtime, so an app on the in-memory broker never loads them.
 * Type-only imports are erased (`verbatimModuleSyntax`), so the walk follows runtime imports only.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import ts from "typescript"

const src = fileURLToPath(new URL("../../src/", import.meta.url))

/** The specifiers a module loads when it runs. */
const runtimeImports = (file: string): ReadonlyArray<string> => {
  const source = ts.createSourceFile(file, Fs.readFileSync(file, "utf8"), ts.ScriptTarget.Latest)
  const specifiers: Array<string> = []
  for (const statement of source.statements) {
    if (ts.isImportDeclaration(statement)) {
      if (statement.importClause?.isTypeOnly === true) continue
      if (ts.isStringLiteral(statement.moduleSpecifier)) specifiers.push(statement.moduleSpecifier.text)
    } else if (ts.isExportDeclaration(statement)) {
      if (statement.isTypeOnly) continue
      if (statement.moduleSpecifier !== undefined && ts.isStringLiteral(statement.moduleSpecifier)) {
        specifiers.push(statement.moduleSpecifier.text)
      }
    }
  }
  return specifiers
}

/** Every package loaded, transitively, by running `entry`; relative imports are followed. */
const packagesLoadedBy = (entry: string): ReadonlySet<string> => {
  const packages = new Set<string>()
  const seen = new Set<string>()
  const visit = (file: string) => {
    if (seen.has(file)) return
    seen.add(file)
    for (const specifier of runtimeImports(file)) {
      if (specifier.startsWith(".")) visit(Path.resolve(Path.dirname(file), specifier.replace(/\.js$/, ".ts")))
      else packages.add(specifier)
    }
  }
  visit(Path.join(src, entry))
  return packages
}

describe("Outbox modules in the root barrel", () => {
  for (const entry of ["Outbox.ts", "OutboxStore.ts", "OutboxError.ts"]) {
    it(`${entry} loads no @effect/sql, @effect/platform or driver at runtime`, () => {
      const loaded = [...packagesLoadedBy(entry)]
      const forbidden = loaded.filter((name) => /^(@effect\/(sql|platform)|pg$|amqplib$|@electric-sql\/)/.test(name))
      assert.deepStrictEqual(forbidden, [], `loaded: ${loaded.join(", ")}`)
    })
  }

  it("the PostgreSQL layer does load them (the walk sees runtime imports)", () => {
    const loaded = packagesLoadedBy("layers/PgOutbox.ts")
    assert.isTrue(loaded.has("@effect/sql/SqlClient"))
    assert.isTrue(loaded.has("pg"))
  })
})
