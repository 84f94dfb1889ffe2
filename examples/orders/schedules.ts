/**
 * Periodic work: the Scheduler only enqueues tasks (one leader across replicas, each firing keyed
 * by schedule and slot); workers run them.
 */
import { Scheduler } from "effect-background"
import { dailyDigest, heartbeat, outboxRetention } from "./contracts.js"

export const schedules = [
  Scheduler.schedule("daily-digest", dailyDigest, {
    trigger: Scheduler.cron("0 9 * * MON-FRI", { offset: "-03:00" }),
    payload: { reason: "cron" as const },
    missed: Scheduler.catchUp({ max: 1 })
  }),
  Scheduler.schedule("heartbeat", heartbeat, {
    trigger: Scheduler.interval("15 seconds"),
    payload: { from: "orders-example" }
  }),
  // The outbox's retention as a schedule: one replica prunes, not every dispatcher.
  Scheduler.schedule("outbox-retention", outboxRetention, {
    trigger: Scheduler.interval("5 minutes"),
    payload: { maxAgeMinutes: 60 }
  })
]
