/**
 * RabbitMQ fixtures: `rabbitmqctl`, a vhost per test file (so tests can close exactly their own
 * connections and everything they created disappears with the vhost), and the contract probe that
 * reads a group's dead-letter queue.
 */
import * as Amqp from "amqplib"
import { Effect, Layer } from "effect"
import type { Context, Scope } from "effect"
import { execFile } from "node:child_process"
import type { ContractDeadLetter } from "../broker/contract.js"
import { ContractProbe } from "../broker/contract.js"
import { rabbitmqUrl } from "../fixtures/env.js"

export const rabbitmqctl = (...args: ReadonlyArray<string>): Effect.Effect<string, Error> =>
  Effect.async<string, Error>((resume) => {
    execFile("rabbitmqctl", [...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      if (error !== null) resume(Effect.fail(new Error(`rabbitmqctl ${args.join(" ")}: ${error.message} ${stderr}`)))
      else resume(Effect.succeed(stdout))
    })
  })

/** The URL of `vhost` on the local broker (same user as RABBITMQ_URL). */
export const urlFor = (vhost: string): string => {
  const url = new URL(rabbitmqUrl)
  url.pathname = `/${encodeURIComponent(vhost)}`
  return url.toString()
}

/** A fresh vhost for the scope, with permissions for the URL's user; deleted (with all in it) on close. */
export const scopedVhost = (name: string): Effect.Effect<string, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const user = decodeURIComponent(new URL(rabbitmqUrl).username || "guest")
      yield* rabbitmqctl("add_vhost", name)
      yield* rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
      return name
    }),
    () =>
      rabbitmqctl("delete_vhost", name).pipe(
        Effect.catchAll((error) => Effect.logWarning(`could not delete vhost ${name}: ${error.message}`))
      )
  )

/** An amqplib connection for test-side inspection, closed with the scope. */
export const rawConnection = (url: string): Effect.Effect<Amqp.ChannelModel, unknown, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise(() => Amqp.connect(url)).pipe(
      Effect.tap((model) => Effect.sync(() => model.on("error", () => undefined)))
    ),
    (model) => Effect.promise(() => model.close().catch(() => undefined))
  )

/** Runs `f` on a fresh channel that is closed afterwards; channel errors reject `f`'s promise. */
export const withChannel = <A>(model: Amqp.ChannelModel, f: (channel: Amqp.Channel) => Promise<A>) =>
  Effect.tryPromise(async () => {
    const channel = await model.createChannel()
    channel.on("error", () => undefined)
    try {
      return await f(channel)
    } finally {
      await channel.close().catch(() => undefined)
    }
  })

const headerText = (headers: Record<string, unknown> | undefined): Record<string, string> => {
  const result: Record<string, string> = {}
  for (const [key, value] of Object.entries(headers ?? {})) if (typeof value === "string") result[key] = value
  return result
}

/** Drains a queue with `basic.get` (acking), returning what it held. */
export const drain = (model: Amqp.ChannelModel, queue: string) =>
  withChannel(model, async (channel) => {
    const messages: Array<Amqp.GetMessage> = []
    while (true) {
      const message = await channel.get(queue, { noAck: true })
      if (message === false) return messages
      messages.push(message)
    }
  })

/** The contract probe for a broker built with `prefix`: reads `<prefix>.dlq.<group>`. */
export const probeLayer = (url: string, prefix: string, maxMessageBytes: number) =>
  Layer.scoped(
    ContractProbe,
    Effect.gen(function*() {
      const model = yield* rawConnection(url)
      const seen = new Map<string, Array<ContractDeadLetter>>()
      return {
        maxMessageBytes,
        deadLetters: (group: string) =>
          drain(model, `${prefix}.dlq.${group}`).pipe(
            Effect.map((messages) => {
              const all = seen.get(group) ?? []
              for (const message of messages) {
                const headers = headerText(message.properties.headers)
                all.push({
                  messageId: String(message.properties.messageId ?? ""),
                  reason: headers["x-eb-dead-reason"] ?? "",
                  body: message.content.toString("utf8"),
                  headers
                })
              }
              seen.set(group, all)
              return [...all]
            }),
            // The queue may not exist yet: nothing dead-lettered so far.
            Effect.orElseSucceed(() => [...(seen.get(group) ?? [])])
          )
      } satisfies Context.Tag.Service<ContractProbe>
    })
  )
