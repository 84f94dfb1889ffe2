import * as MetricKeyType from "effect/MetricKeyType"
import type * as MetricPair from "effect/MetricPair"
import * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"
import { createHash } from "node:crypto"

type Labels = ReadonlyArray<readonly [string, string]>

interface Family {
  readonly type: "counter" | "gauge" | "histogram" | "summary"
  readonly help: string | undefined
  readonly lines: Array<string>
}

const invalidNameChars = /[^a-zA-Z0-9_:]/g

/** @internal */
export const metricName = (name: string): string => {
  const sanitized = name.replace(invalidNameChars, "_")
  return /^[0-9]/.test(sanitized) ? `_${sanitized}` : sanitized
}

const labelName = (name: string): string => metricName(name).replace(/:/g, "_")

/**
 * A sample's labels as Prometheus accepts them: unique names, none reserved (`__…`) and none
 * clashing with the labels the format adds (`le`, `quantile`, `key`): a clashing user tag is
 * renamed `exported_<name>` (Prometheus's own convention), so no tag can make the scrape fail.
 */
const userLabels = (tags: Labels, added: ReadonlyArray<string>): Labels => {
  const taken = new Set(added)
  return tags.map(([key, value]) => {
    let name = labelName(key)
    if (name.startsWith("__")) name = `exported${name}`
    while (taken.has(name)) name = `exported_${name}`
    taken.add(name)
    return [name, value] as const
  })
}

const escapeLabelValue = (value: string): string =>
  value.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n")

const escapeHelp = (value: string): string => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

const formatLabels = (labels: Labels): string =>
  labels.length === 0
    ? ""
    : `{${labels.map(([key, value]) => `${key}="${escapeLabelValue(value)}"`).join(",")}}`

/** @internal */
export const formatValue = (value: number | bigint): string => {
  if (typeof value === "bigint") return value.toString()
  if (Number.isNaN(value)) return "NaN"
  if (value === Infinity) return "+Inf"
  if (value === -Infinity) return "-Inf"
  return String(value)
}

const sample = (name: string, labels: Labels, value: number | bigint): string =>
  `${name}${formatLabels(labels)} ${formatValue(value)}`

/** The label each family type adds to its samples. */
const addedLabel = { counter: [], gauge: [], histogram: ["le"], summary: ["quantile"], frequency: ["key"] } as const

type Kind = keyof typeof addedLabel

const kindOf = (pair: MetricPair.MetricPair.Untyped): Kind | undefined => {
  const state: unknown = pair.metricState
  if (MetricState.isCounterState(state)) {
    // Effect lets a non-incremental counter go down: Prometheus calls that a gauge.
    const keyType: unknown = pair.metricKey.keyType
    return MetricKeyType.isCounterKey(keyType) && !keyType.incremental ? "gauge" : "counter"
  }
  if (MetricState.isGaugeState(state)) return "gauge"
  if (MetricState.isHistogramState(state)) return "histogram"
  if (MetricState.isSummaryState(state)) return "summary"
  if (MetricState.isFrequencyState(state)) return "frequency"
  return undefined
}

const stableSuffix = (source: string, kind: Kind): string =>
  createHash("sha1").update(`${kind}\u0000${source}`).digest("hex").slice(0, 6)

/**
 * Renders a metric snapshot in the Prometheus text exposition format (version 0.0.4): one
 * family per metric name, histograms with cumulative `le` buckets, summaries with quantiles,
 * frequencies as a counter labelled by `key`. Names that sanitise to one family name but come
 * from another source name or type get a stable suffix, so no series lands under the wrong
 * `# TYPE` (Prometheus would keep one silently).
 *
 * @internal
 */
export const format = (snapshot: Iterable<MetricPair.MetricPair.Untyped>): string => {
  const families = new Map<string, Family & { readonly source: string; readonly kind: Kind }>()
  const familyOf = (source: string, kind: Kind, help: string | undefined) => {
    const base = metricName(source)
    const existing = families.get(base)
    if (existing === undefined || (existing.source === source && existing.kind === kind)) {
      if (existing !== undefined) return { name: base, family: existing }
      const family = { type: kind === "frequency" ? "counter" as const : kind, help, lines: [], source, kind }
      families.set(base, family)
      return { name: base, family }
    }
    const name = `${base}_x${stableSuffix(source, kind)}`
    const other = families.get(name)
    if (other !== undefined) return { name, family: other }
    const family = { type: kind === "frequency" ? "counter" as const : kind, help, lines: [], source, kind }
    families.set(name, family)
    return { name, family }
  }

  // Sorted by source name and type, so which of two colliding metrics keeps the plain name does
  // not depend on registration order.
  const pairs = [...snapshot].flatMap((pair) => {
    const kind = kindOf(pair)
    return kind === undefined ? [] : [{ pair, kind }]
  }).sort((a, b) =>
    a.pair.metricKey.name < b.pair.metricKey.name
      ? -1
      : a.pair.metricKey.name > b.pair.metricKey.name
      ? 1
      : a.kind < b.kind
      ? -1
      : a.kind > b.kind
      ? 1
      : 0
  )

  for (const { kind, pair } of pairs) {
    const key = pair.metricKey
    const { family, name } = familyOf(key.name, kind, Option.getOrUndefined(key.description))
    const labels = userLabels(key.tags.map((tag) => [tag.key, tag.value] as const), addedLabel[kind])
    const lines = family.lines
    const state: unknown = pair.metricState
    if (MetricState.isCounterState(state)) {
      lines.push(sample(name, labels, state.count))
    } else if (MetricState.isGaugeState(state)) {
      lines.push(sample(name, labels, state.value))
    } else if (MetricState.isHistogramState(state)) {
      for (const [boundary, count] of state.buckets) {
        if (boundary === Infinity) continue
        lines.push(sample(`${name}_bucket`, [...labels, ["le", formatValue(boundary)]], count))
      }
      lines.push(sample(`${name}_bucket`, [...labels, ["le", "+Inf"]], state.count))
      lines.push(sample(`${name}_sum`, labels, state.sum))
      lines.push(sample(`${name}_count`, labels, state.count))
    } else if (MetricState.isSummaryState(state)) {
      for (const [quantile, value] of state.quantiles) {
        lines.push(sample(name, [...labels, ["quantile", formatValue(quantile)]], Option.getOrElse(value, () => NaN)))
      }
      lines.push(sample(`${name}_sum`, labels, state.sum))
      lines.push(sample(`${name}_count`, labels, state.count))
    } else if (MetricState.isFrequencyState(state)) {
      for (const [occurrence, count] of state.occurrences) {
        lines.push(sample(name, [...labels, ["key", occurrence]], count))
      }
    }
  }

  const out: Array<string> = []
  for (const [name, family] of families) {
    if (family.help !== undefined) out.push(`# HELP ${name} ${escapeHelp(family.help)}`)
    out.push(`# TYPE ${name} ${family.type}`)
    for (const line of family.lines) out.push(line)
  }
  return out.length === 0 ? "" : `${out.join("\n")}\n`
}
