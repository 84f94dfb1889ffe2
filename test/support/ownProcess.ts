/**
 * A server process of a test's own (own loopback port, own data directory), so fault tests can
 * kill -9 and restart it while the shared server stays up.
 */
import { Effect, Schedule, type Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"

export interface OwnProcess {
  readonly port: number
  /** kill -9: no shutdown, no flush beyond what the OS already has. */
  readonly kill: Effect.Effect<void>
  /** Starts it again (same port, same directory); done once it accepts connections. */
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
const listening = (port: number, name: string) =>
  Effect.async<boolean>((resume) => {
    const socket = net.connect(port, "127.0.0.1")
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(true))
    })
    socket.once("error", () => {
      socket.destroy()
      resume(Effect.succeed(false))
    })
  }).pipe(
    Effect.repeat({ until: (up) => up, schedule: Schedule.spaced("50 millis") }),
    Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error(`${name} not listening on ${port}`) }),
    Effect.orDie
  )

/** `command` run with `args(port, dir)`, started now, SIGKILLed and its directory removed with the scope. */
export const ownProcess = (
  command: string,
  args: (port: number, dir: string) => ReadonlyArray<string>
): Effect.Effect<OwnProcess, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const port = yield* freePort
    const dir = mkdtempSync(join(tmpdir(), "eb-server-"))
    const name = command.split("/").pop() ?? command
    let child: ChildProcess | undefined
    const start = Effect.suspend(() => {
      child = spawn(command, args(port, dir), { stdio: "ignore" })
      child.on("error", () => undefined)
      return listening(port, name)
    }).pipe(Effect.asVoid)
    const kill = Effect.async<void>((resume) => {
      const running = child
      if (running === undefined || running.exitCode !== null || running.signalCode !== null) {
        return resume(Effect.void)
      }
      running.once("exit", () => resume(Effect.void))
      running.kill("SIGKILL")
    })
    yield* Effect.acquireRelease(
      start,
      () => Effect.zipRight(kill, Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    )
    return { port, kill, start }
  })
