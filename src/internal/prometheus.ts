import type * as MetricPair from "effect/MetricPair"
import * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"

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

const escapeLabelValue = (value: string): string =>
  value.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n")

const escapeHelp = (value: string): string => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

const formatLabels = (labels: Labels): string =>
  labels.length === 0
    ? ""
    : `{${labels.map(([key, value]) => `${labelName(key)}="${escapeLabelValue(value)}"`).join(",")}}`

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

/**
 * Renders a metric snapshot in the Prometheus text exposition format (version 0.0.4): one
 * family per metric name, histograms with cumulative `le` buckets, summaries with quantiles,
 * frequencies as a counter labelled by `key`.
 *
 * @internal
 */
export const format = (snapshot: Iterable<MetricPair.MetricPair.Untyped>): string => {
  const families = new Map<string, Family>()
  const familyOf = (name: string, type: Family["type"], help: string | undefined): Family => {
    const existing = families.get(name)
    if (existing !== undefined) return existing
    const family: Family = { type, help, lines: [] }
    families.set(name, family)
    return family
  }

  for (const pair of snapshot) {
    const key = pair.metricKey
    const name = metricName(key.name)
    const help = Option.getOrUndefined(key.description)
    const labels: Labels = key.tags.map((tag) => [tag.key, tag.value] as const)
    const state: unknown = pair.metricState
    if (MetricState.isCounterState(state)) {
      familyOf(name, "counter", help).lines.push(sample(name, labels, state.count))
    } else if (MetricState.isGaugeState(state)) {
      familyOf(name, "gauge", help).lines.push(sample(name, labels, state.value))
    } else if (MetricState.isHistogramState(state)) {
      const lines = familyOf(name, "histogram", help).lines
      for (const [boundary, count] of state.buckets) {
        if (boundary === Infinity) continue
        lines.push(sample(`${name}_bucket`, [...labels, ["le", formatValue(boundary)]], count))
      }
      lines.push(sample(`${name}_bucket`, [...labels, ["le", "+Inf"]], state.count))
      lines.push(sample(`${name}_sum`, labels, state.sum))
      lines.push(sample(`${name}_count`, labels, state.count))
    } else if (MetricState.isSummaryState(state)) {
      const lines = familyOf(name, "summary", help).lines
      for (const [quantile, value] of state.quantiles) {
        lines.push(sample(name, [...labels, ["quantile", formatValue(quantile)]], Option.getOrElse(value, () => NaN)))
      }
      lines.push(sample(`${name}_sum`, labels, state.sum))
      lines.push(sample(`${name}_count`, labels, state.count))
    } else if (MetricState.isFrequencyState(state)) {
      const lines = familyOf(name, "counter", help).lines
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
