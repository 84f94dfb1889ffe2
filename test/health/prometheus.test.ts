/**
 * The `/metrics` text as an independent parser (parse-prometheus-text-format) and Prometheus's
 * own rules read it: hostile user tags and names never yield a duplicate label, a duplicate
 * series or a series under another family's type.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Metric, MetricBoundaries } from "effect"
import { spawnSync } from "node:child_process"
import parse from "parse-prometheus-text-format"
import { Health } from "../../src/index.js"
import { uniqueName } from "../fixtures/env.js"

/** Prometheus's own checks on a text exposition: what would make it reject the scrape or drop series. */
const violations = (text: string): Array<string> => {
  const problems: Array<string> = []
  const types = new Map<string, string>()
  const series = new Set<string>()
  for (const line of text.split("\n")) {
    if (line === "") continue
    const typeLine = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (typeLine !== null) {
      const [, name = "", type = ""] = typeLine
      if (types.has(name)) problems.push(`two TYPE lines for ${name}`)
      types.set(name, type)
      continue
    }
    if (line.startsWith("#")) continue
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line)
    if (sample === null) {
      problems.push(`unparsable line: ${line}`)
      continue
    }
    const [, name = "", , labelText = ""] = sample
    const labelNames = [...labelText.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"/g)].map((m) => m[1] ?? "")
    if (new Set(labelNames).size !== labelNames.length) problems.push(`duplicate label in: ${line}`)
    if (labelNames.some((label) => label.startsWith("__"))) problems.push(`reserved label in: ${line}`)
    const key = `${name}{${
      [...labelText.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((m) => `${m[1]}=${m[2]}`).sort()
        .join(",")
    }}`
    if (series.has(key)) problems.push(`duplicate series: ${key}`)
    series.add(key)
    const family = [...types.keys()].find((family) =>
      name === family || (["_bucket", "_sum", "_count"].some((suffix) => name === family + suffix))
    )
    if (family === undefined) problems.push(`sample without a TYPE: ${line}`)
  }
  return problems
}

/** Debian's promtool (`.ci/run` extracts it and sets PROMTOOL), else one on the PATH. */
const promtool = process.env["PROMTOOL"] ??
  (spawnSync("promtool", ["--version"]).status === 0 ? "promtool" : undefined)

/** The families whose name starts with `prefix`: HELP, TYPE and sample lines. */
const familiesOf = (text: string, prefix: string): string =>
  text.split("\n").filter((line) => line.replace(/^# (HELP|TYPE) /, "").startsWith(prefix)).join("\n") + "\n"

/** Reads every library metric once, so each is in the registry; how many there are. */
const touchOwnMetrics = Effect.gen(function*() {
  const { Inbox, Outbox, Scheduler, TaskQueue } = yield* Effect.promise(() => import("../../src/index.js"))
  const own = [
    ...Object.values(TaskQueue.metrics),
    ...Object.values(Outbox.metrics),
    ...Object.values(Scheduler.metrics),
    ...Object.values(Inbox.metrics)
  ]
  for (const metric of own) yield* Metric.value(metric as Metric.Metric<unknown, unknown, unknown>)
  return own.length
})

const familyType = (text: string, name: string) => parse(text).find((family) => family.name === name)?.type

describe("Prometheus exposition", () => {
  it.effect("hostile user tags (le, quantile, key, __x, two tags that sanitise alike) are renamed, never duplicated", () =>
    Effect.gen(function*() {
      const base = uniqueName("hostile")
      const histogram = Metric.histogram(`${base}_h_seconds`, MetricBoundaries.fromIterable([1]), "h").pipe(
        Metric.tagged("le", "user"),
        Metric.tagged("a.b", "1"),
        Metric.tagged("a_b", "2")
      )
      const summary = Metric.summary({
        name: `${base}_s_seconds`,
        maxAge: "1 minute",
        maxSize: 10,
        error: 0.01,
        quantiles: [0.5],
        description: "s"
      }).pipe(Metric.tagged("quantile", "user"))
      const frequency = Metric.frequency(`${base}_f`, { description: "f" }).pipe(Metric.tagged("key", "user"))
      const counter = Metric.counter(`${base}_c_total`, { description: "c", incremental: true }).pipe(
        Metric.tagged("__name__", "evil")
      )
      yield* Metric.update(histogram, 0.5)
      yield* Metric.update(summary, 0.5)
      yield* Metric.update(frequency, "x")
      yield* Metric.increment(counter)
      const text = yield* Health.prometheusText
      assert.deepStrictEqual(violations(text), [])
      const families = parse(text)
      const h = families.find((family) => family.name === `${base}_h_seconds`)
      assert.strictEqual(h?.type, "HISTOGRAM")
      assert.include(text, `exported_le="user"`)
      assert.include(text, `exported_quantile="user"`)
      assert.include(text, `exported_key="user"`)
      assert.include(text, `exported__name__="evil"`)
      assert.match(text, /a_b="1",exported_a_b="2"/)
    }))

  it.effect("a counter that may go down is a gauge; an incremental one a counter", () =>
    Effect.gen(function*() {
      const base = uniqueName("kinds")
      yield* Metric.incrementBy(Metric.counter(`${base}_updown`, { description: "may go down" }), 2)
      yield* Metric.increment(Metric.counter(`${base}_up_total`, { description: "only up", incremental: true }))
      const text = yield* Health.prometheusText
      assert.strictEqual(familyType(text, `${base}_updown`), "GAUGE")
      assert.strictEqual(familyType(text, `${base}_up_total`), "COUNTER")
      assert.deepStrictEqual(violations(text), [])
    }))

  it.effect("names that sanitise alike, or one name with two types, stay apart under their own TYPE", () =>
    Effect.gen(function*() {
      const base = uniqueName("clash")
      yield* Metric.set(Metric.gauge(`${base}.depth`, { description: "dotted" }), 1)
      yield* Metric.set(Metric.gauge(`${base}_depth`, { description: "underscored" }), 2)
      yield* Metric.increment(Metric.counter(`${base}_n`, { description: "counter", incremental: true }))
      yield* Metric.set(Metric.gauge(`${base}_n`, { description: "gauge" }), 5)
      const text = yield* Health.prometheusText
      assert.deepStrictEqual(violations(text), [])
      const families = parse(text).filter((family) => family.name.startsWith(base))
      assert.strictEqual(families.length, 4, families.map((family) => family.name).join(", "))
      const again = yield* Health.prometheusText
      assert.deepStrictEqual(
        parse(again).filter((family) => family.name.startsWith(base)).map((family) => family.name),
        families.map((family) => family.name),
        "the suffixes are stable"
      )
    }))

  it.effect("the library's own metrics: counters end in _total, durations in seconds, every family has HELP", () =>
    Effect.gen(function*() {
      assert.isAbove(yield* touchOwnMetrics, 10)
      const text = yield* Health.prometheusText
      assert.deepStrictEqual(violations(text), [])
      const families = parse(text).filter((family) => family.name.startsWith("effect_background_"))
      assert.isAbove(families.length, 10)
      for (const family of families) {
        assert.isTrue(family.help !== "", `${family.name} has HELP`)
        if (family.type === "COUNTER") assert.isTrue(family.name.endsWith("_total"), `${family.name} ends in _total`)
        assert.notMatch(family.name, /_ms$|_millis/, `${family.name} is in base units`)
      }
    }))

  it.runIf(promtool !== undefined)(
    "promtool check metrics reports nothing for the library's own metrics",
    () =>
      Effect.gen(function*() {
        yield* touchOwnMetrics
        const exposition = familiesOf(yield* Health.prometheusText, "effect_background_")
        assert.include(exposition, "# TYPE effect_background_")
        const checked = spawnSync(promtool ?? "promtool", ["check", "metrics"], { input: exposition, encoding: "utf8" })
        assert.strictEqual(`${checked.stdout}${checked.stderr}`, "")
        assert.strictEqual(checked.status, 0)
      }).pipe(Effect.runPromise)
  )
})
