import type * as Amqp from "amqplib"
import * as Effect from "effect/Effect"
import { execFile } from "node:child_process"
import { rabbitmqUrl } from "../../test/fixtures/env.js"

const rabbitmqctl = (...args: ReadonlyArray<string>) =>
  Effect.async<string, Error>((resume) => {
    execFile("rabbitmqctl", [...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      if (error !== null) resume(Effect.fail(new Error(`rabbitmqctl ${args.join(" ")}: ${error.message} ${stderr}`)))
      else resume(Effect.succeed(stdout))
    })
  })

/**
 * A vhost of the bench's own (its queues may hold a million messages), deleted with everything
 * in it when the scope closes; returns its URL.
 */
export const scopedVhost = (name: string) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const user = decodeURIComponent(new URL(rabbitmqUrl).username || "guest")
      yield* rabbitmqctl("add_vhost", name)
      yield* rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
      const url = new URL(rabbitmqUrl)
      url.pathname = `/${encodeURIComponent(name)}`
      return url.toString()
    }),
    () => Effect.orDie(rabbitmqctl("delete_vhost", name))
  )

/**
 * The raw amqplib baseline every bench compares against: `count` persistent messages with up to
 * `window` confirms in flight, pausing on write backpressure ('drain'). Resolves once all are
 * confirmed; rejects on the first nack.
 */
export const publishConfirmedWindow = (
  channel: Amqp.ConfirmChannel,
  target: {
    readonly exchange: string
    readonly routingKey: string
    readonly mandatory: boolean
    /** The properties RabbitMQBroker puts on every message: a UUID message id. */
    readonly oursProperties?: boolean
  },
  count: number,
  window: number,
  body: (n: number) => Buffer
): Promise<void> =>
  new Promise<void>((resolve, reject) => {
    let sent = 0
    let confirmed = 0
    let inFlight = 0
    let blocked = false
    const pump = () => {
      while (!blocked && inFlight < window && sent < count) {
        const n = sent++
        inFlight++
        const options: Amqp.Options.Publish = {
          persistent: true,
          contentType: "application/json",
          messageId: `raw-${n}`
        }
        if (target.mandatory) options.mandatory = true
        if (target.oursProperties === true) options.messageId = crypto.randomUUID()
        const ok = channel.publish(target.exchange, target.routingKey, body(n), options, (error) => {
          if (error !== null && error !== undefined) return reject(error)
          inFlight--
          if (++confirmed === count) resolve()
          else pump()
        })
        if (!ok) blocked = true
      }
    }
    const onDrain = () => {
      blocked = false
      pump()
    }
    channel.on("drain", onDrain)
    pump()
  }).finally(() => channel.removeAllListeners("drain"))
