/**
 * `npm run bench -- nats-pack`: what packing could gain on JetStream, measured on the raw client
 * alone (NatsBroker does not pack yet). N tasks (~150 B JSON each) published with 1,000 PubAcks
 * in flight, then read back with `consume()` (100 per pull) acking each JetStream message: one
 * task per message against 100 tasks per message (a JSON array), in the same run. The figure is
 * the ceiling a pack could reach, before the library's own cost per task.
 */
import { AckPolicy } from "@nats-io/jetstream"
import { Effect } from "effect"
import { runId } from "../test/fixtures/env.js"
import { rawJetStream } from "./support/nats.js"
import { log, median, print, ratio } from "./support/report.js"

const N = Number(process.env["BENCH_NATS_PACK_N"] ?? 20_000)
const ROUNDS = Number(process.env["BENCH_NATS_ROUNDS"] ?? 5)
const PACK = 100
const WINDOW = 1_000
const stream = `BENCHPACK${runId}`
const encoder = new TextEncoder()
const decoder = new TextDecoder()
const task = (n: number) => ({ id: `t-${n}`, note: `note ${n} ${"x".repeat(120)}` })

const main = Effect.gen(function*() {
  const { js, jsm } = yield* rawJetStream
  yield* Effect.acquireRelease(
    Effect.promise(() => jsm.streams.add({ name: stream, subjects: [`${stream}.>`] })),
    () => Effect.promise(() => jsm.streams.delete(stream).catch(() => false))
  )

  /** Publishes then consumes N tasks, `per` to a JetStream message; tasks per second. */
  const run = (per: number, round: number) =>
    Effect.promise(async () => {
      const durable = `p${per}r${round}`
      const subject = `${stream}.${durable}`
      await jsm.consumers.add(stream, {
        durable_name: durable,
        ack_policy: AckPolicy.Explicit,
        filter_subject: subject
      })
      const started = performance.now()
      const bodies: Array<Uint8Array> = []
      for (let n = 0; n < N; n += per) {
        const tasks = Array.from({ length: Math.min(per, N - n) }, (_, i) => task(n + i))
        bodies.push(encoder.encode(JSON.stringify(per === 1 ? tasks[0] : tasks)))
      }
      let next = 0
      let inFlight = 0
      await new Promise<void>((resolve, reject) => {
        const pump = () => {
          while (inFlight < WINDOW && next < bodies.length) {
            const body = bodies[next++]
            if (body === undefined) break
            inFlight++
            js.publish(subject, body, { msgID: crypto.randomUUID() }).then(() => {
              inFlight--
              if (next >= bodies.length && inFlight === 0) resolve()
              else pump()
            }, reject)
          }
        }
        pump()
      })
      const messages = await (await js.consumers.get(stream, durable)).consume({ max_messages: 100 })
      let handled = 0
      for await (const msg of messages) {
        const parsed: unknown = JSON.parse(decoder.decode(msg.data))
        handled += Array.isArray(parsed) ? parsed.length : 1
        msg.ack()
        if (handled >= N) break
      }
      await messages.close()
      return N / ((performance.now() - started) / 1000)
    })

  const single: Array<number> = []
  const packed: Array<number> = []
  for (let round = 0; round < ROUNDS; round++) {
    if (round % 2 === 0) {
      single.push(yield* run(1, round))
      packed.push(yield* run(PACK, round))
    } else {
      packed.push(yield* run(PACK, round))
      single.push(yield* run(1, round))
    }
    log(
      `round ${round + 1}: one per message ${single[round]?.toFixed(0)}/s, ${PACK} per message ${
        packed[round]?.toFixed(0)
      }/s`
    )
  }
  print("nats.pack.single_tasks_per_s", Math.round(median(single)), "tasks/s")
  print("nats.pack.packed_tasks_per_s", Math.round(median(packed)), "tasks/s")
  print("nats.pack.ratio_vs_single", ratio(packed, single), "x")
})

await Effect.runPromise(Effect.scoped(main))
