/**
 * What the soak suites share: the heap after a full GC, and how a run's windows are judged (the
 * first window is warm-up; the first and last thirds of the rest are compared, so one slow
 * window on this shared machine is not read as a trend).
 */
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { median } from "./report.js"

// A full GC on demand, without starting node with --expose-gc.
setFlagsFromString("--expose-gc")
const gc: () => void = runInNewContext("gc")

/** MiB of heap in use after a full GC: what stays reachable. */
export const heapAfterGcMiB = (): number => {
  gc()
  return process.memoryUsage().heapUsed / 1024 / 1024
}

/** The first and last thirds of the windows after the first. */
export const thirds = <W>(windows: ReadonlyArray<W>): { readonly first: Array<W>; readonly last: Array<W> } => {
  const warm = windows.slice(1)
  const third = Math.max(1, Math.floor(warm.length / 3))
  return { first: warm.slice(0, third), last: warm.slice(-third) }
}

/** Growth (%) of the heap floor (lowest after-GC heap) from the first third to the last. */
export const heapGrowthPct = (windows: ReadonlyArray<{ readonly heapMiB: number }>): number => {
  const { first, last } = thirds(windows)
  return (Math.min(...last.map((w) => w.heapMiB)) / Math.min(...first.map((w) => w.heapMiB)) - 1) * 100
}

/** Median of `pick` over the first third and over the last third of the windows. */
export const firstAndLast = <W>(windows: ReadonlyArray<W>, pick: (w: W) => number) => {
  const { first, last } = thirds(windows)
  return { first: median(first.map(pick)), last: median(last.map(pick)) }
}

/** Counts the arrivals of messages numbered 0 … size - 1: each one's first, and any repeat. */
export const arrivals = (size: number) => {
  const seen = new Uint8Array(size)
  const counts = { handled: 0, duplicates: 0 }
  const hit = (n: number): void => {
    if (seen[n] === 1) {
      counts.duplicates++
      return
    }
    seen[n] = 1
    counts.handled++
  }
  return { counts, hit }
}
