/**
 * Seeded randomness for the kernels' stress tests: every run prints its seed, and
 * `STRESS_SEED=<n>` replays it (the iterations of a test use seeds n, n+1, …).
 */

/** A seeded generator (mulberry32): small, fast and good enough to pick interleavings. */
export interface Rng {
  /** Uniform in [0, 1). */
  readonly next: () => number
  /** Uniform integer in [min, max]. */
  readonly int: (min: number, max: number) => number
  readonly chance: (probability: number) => boolean
  readonly pick: <A>(items: ReadonlyArray<A>) => A
}

export const rng = (seed: number): Rng => {
  let state = seed >>> 0
  const next = () => {
    state = (state + 0x6D2B79F5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1))
  return {
    next,
    int,
    chance: (probability) => next() < probability,
    pick: <A>(items: ReadonlyArray<A>): A => {
      const item = items[int(0, items.length - 1)]
      if (item === undefined) throw new Error("pick from an empty list")
      return item
    }
  }
}

/** A stable value in [0, 1) for a tuple (FNV-1a): decides a handler's behaviour per (seed, id, attempt). */
export const hash01 = (...parts: ReadonlyArray<string | number>): number => {
  let h = 0x811C9DC5
  for (const char of parts.join("|")) {
    h ^= char.charCodeAt(0)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  // One more avalanche round: FNV's low bits alone are weak.
  h ^= h >>> 16
  h = Math.imul(h, 0x85EBCA6B) >>> 0
  h ^= h >>> 13
  return (h >>> 0) / 4294967296
}

/** The base seed of a test file: `STRESS_SEED` when set, else a fresh one (printed by `announce`). */
export const stressSeed = (): number => {
  const fixed = Number(process.env["STRESS_SEED"])
  return Number.isInteger(fixed) ? fixed : Math.floor(Math.random() * 2 ** 31)
}

/** Prints the seed so a failing run can be replayed. */
export const announce = (file: string, seed: number): void => {
  console.log(`${file}: stress seed ${seed} (replay with STRESS_SEED=${seed})`)
}
