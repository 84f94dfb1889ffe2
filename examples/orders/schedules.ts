/**
 * Periodic work: the Scheduler only enqueues tasks (one leader across replicas, each firing keyed
 * by schedule and slot); workers run them.
 */
import { Scheduler, Trigger } from "effect-background"
import { dailyDigest, heartbeat, outboxRetention } from "./contracts.js"

export const schedules = [
  Scheduler.schedule("daily-digest", dailyDigest, {
    trigger: Trigger.cron("0 9 * * MON-FRI", { offset: "-03:00" }),
    payload: { reason: "cron" as const },
    missed: Scheduler.catchUp({ max: 1 })
  }),
  Scheduler.schedule("heartbeat", heartbeat, {
    trigger: Trigger.interval("15 seconds"),
    payload: { from: "orders-example" }
  }),
  // The outbox's retention as a schedule: one replica prunes, not every dispatcher.
  Scheduler.schedule("outbox-retention", outboxRetention, {
    trigger: Trigger.interval("5 minutes"),
    payload: { maxAgeMinutes: 60 }
  })
]
