/**
 * Health checks of the example: broker, database, outbox lag, scheduler role, workers.
 */
import { Effect } from "effect"
import { Broker, Outbox, Scheduler } from "effect-background"

const maxLagMs = 30_000

export const outbox = Effect.map(Outbox.stats, (stats) => ({
  status: stats.oldestPendingAgeMs > maxLagMs ? "down" as const : "up" as const,
  detail: `${stats.pending} pending, oldest ${stats.oldestPendingAgeMs} ms, ${stats.dead} dead`,
  ...stats
}))

export const scheduler = Effect.flatMap(Scheduler.Scheduler, (scheduler) => scheduler.status).pipe(
  Effect.map((status) => ({
    // A standby is healthy: it takes over when the leader's lease runs out.
    status: "up" as const,
    detail: status.role,
    role: status.role,
    schedules: status.schedules.map((s) => ({
      name: s.name,
      nextFire: s.nextFire._tag === "Some" ? s.nextFire.value.toISOString() : null
    }))
  }))
)

export const workers = (expected: number) =>
  Effect.map(Broker.health, (health) => ({
    status: health.status === "up" && health.consumers >= expected ? "up" as const : "down" as const,
    detail: `${health.consumers} of ${expected} consumers attached`
  }))
