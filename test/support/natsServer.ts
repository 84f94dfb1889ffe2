/**
 * A nats-server of the test's own (own port, own storage directory), so fault tests can kill -9
 * and restart it while the shared server stays up.
 */
import { Effect, Schedule, type Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"

export interface NatsServer {
  readonly port: number
  readonly url: string
  /** kill -9: no shutdown, no flush beyond what the OS already has. */
  readonly kill: Effect.Effect<void>
  readonly start: Effect.Effect<void>
}

const freePort = Effect.async<number, Error>((resume) => {
  const server = net.createServer()
  server.once("error", (error) => resume(Effect.fail(error)))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** Resolves once the port accepts connections. */
const listening = (port: number) =>
  Effect.async<boolean>((resume) => {
    const socket = net.connect(port, "127.0.0.1")
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(true))
    })
    socket.once("error", () => resume(Effect.succeed(false)))
  }).pipe(
    Effect.repeat({ until: (up) => up, schedule: Schedule.spaced("50 millis") }),
    Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error(`nats-server not listening on ${port}`) }),
    Effect.orDie
  )

export const natsServer: Effect.Effect<NatsServer, Error, Scope.Scope> = Effect.gen(function*() {
  const port = yield* freePort
  const dir = mkdtempSync(join(tmpdir(), "eb-nats-"))
  let child: ChildProcess | undefined
  const start = Effect.suspend(() => {
    child = spawn("/usr/sbin/nats-server", ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir], {
      stdio: "ignore"
    })
    child.on("error", () => undefined)
    return listening(port)
  }).pipe(Effect.asVoid)
  const kill = Effect.async<void>((resume) => {
    const running = child
    if (running === undefined || running.exitCode !== null) return resume(Effect.void)
    running.once("exit", () => resume(Effect.void))
    running.kill("SIGKILL")
  })
  yield* Effect.acquireRelease(
    start,
    () => Effect.zipRight(kill, Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
  )
  return { port, url: `nats://127.0.0.1:${port}`, kill, start }
})
