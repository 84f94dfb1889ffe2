import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    setupFiles: ["./test/setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: {
          name: "main",
          include: ["test/**/*.test.ts"],
          exclude: ["test/**/*.faults.test.ts"],
          sequence: { groupOrder: 0 }
        }
      },
      {
        // Faults stop and restart shared services: one file at a time, after the main suite.
        extends: true,
        test: {
          name: "faults",
          include: ["test/**/*.faults.test.ts"],
          pool: "forks",
          poolOptions: { forks: { singleFork: true } },
          sequence: { groupOrder: 1 }
        }
      }
    ]
  }
})
