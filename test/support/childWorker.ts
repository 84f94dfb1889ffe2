/**
 * Worker child processes for the fault tests: a test script forked with tsx that reports to the
 * parent over IPC, so a test can SIGKILL a real process mid-work and count what it had finished.
 */
import { Effect, Queue } from "effect"
import { type ChildProcess, fork } from "node:child_process"

/** Forks `script` as worker `name`; its IPC messages land in `inbox`; SIGKILLed (if alive) when the scope closes. */
export const forkWorker = <M>(script: string, name: string, env: Record<string, string>, inbox: Queue.Queue<M>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = fork(script, [], {
        execArgv: ["--import", "tsx"],
        env: { ...process.env, ...env, WORKER_NAME: name },
        stdio: ["ignore", "inherit", "inherit", "ipc"]
      })
      child.on("message", (message) => Queue.unsafeOffer(inbox, message as M))
      return child
    }),
    (child: ChildProcess) =>
      Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
  )

/** SIGKILL, resolved once the process is gone (no shutdown, no finalizer, no ack in flight). */
export const killHard = (child: ChildProcess) =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
    child.kill("SIGKILL")
  })

/** In the child: sends `message` to the parent and resumes once it is written (a no-op without a parent). */
export const report = <M>(message: M) =>
  Effect.async<void>((resume) => {
    if (process.send === undefined) return resume(Effect.void)
    process.send(message, undefined, {}, () => resume(Effect.void))
  })

/** In the child: a required environment variable. */
export const requiredEnv = (name: string): string => {
  const value = process.env[name]
  if (value === undefined) throw new Error(`missing ${name}`)
  return value
}

/** In the child: reports uncaught errors as `crash` messages before the process dies of them. */
export const reportCrashes = (crash: (detail: string) => unknown) => {
  const onError = (error: unknown) => void report(crash(String(error))).pipe(Effect.runFork)
  process.on("uncaughtException", onError)
  process.on("unhandledRejection", onError)
}
