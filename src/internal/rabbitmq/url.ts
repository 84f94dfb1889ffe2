import * as Either from "effect/Either"
import type { InvalidOptions } from "../../InvalidOptions.js"
import * as checks from "../options.js"

/**
 * A parsed `amqp://` / `amqps://` URL. The password stays in this object only; everything
 * shown to users (errors, logs, health) goes through `describe` and `scrub`.
 *
 * @internal
 */
export interface Endpoint {
  readonly protocol: "amqp" | "amqps"
  readonly hostname: string
  readonly port: number
  readonly username: string
  readonly password: string
  readonly vhost: string
}

// The value shown is never the URL: it may hold the password.
const invalid = (detail: string) => Either.left(checks.invalid("RabbitMQBroker", "url", "<redacted>", detail))

/** @internal */
export const parse = (url: string): Either.Either<Endpoint, InvalidOptions> => {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    // The WHATWG parser's message echoes the input, password included: report without it.
    return invalid("not a URL (expected amqp://user:password@host:port/vhost)")
  }
  const protocol = parsed.protocol === "amqp:" ? "amqp" : parsed.protocol === "amqps:" ? "amqps" : undefined
  if (protocol === undefined) return invalid(`unsupported protocol "${parsed.protocol}" (expected amqp: or amqps:)`)
  const hostname = parsed.hostname.replace(/^\[|\]$/g, "")
  if (hostname.length === 0) return invalid("the URL has no host")
  const port = parsed.port === "" ? (protocol === "amqp" ? 5672 : 5671) : Number(parsed.port)
  if (!Number.isInteger(port) || port < 1 || port > 65535) return invalid("the port is not a number from 1 to 65535")
  let username: string
  let password: string
  let vhost: string
  try {
    // amqplib defaults to guest/guest only when both are absent; so do we.
    const absent = parsed.username === "" && parsed.password === ""
    username = absent ? "guest" : decodeURIComponent(parsed.username)
    password = absent ? "guest" : decodeURIComponent(parsed.password)
    vhost = parsed.pathname.length > 1 ? decodeURIComponent(parsed.pathname.slice(1)) : "/"
  } catch {
    return invalid("the user, password or vhost is not valid percent-encoding")
  }
  return Either.right({ protocol, hostname, port, username, password, vhost })
}

/** `amqp://user@host:5672/vhost` — never the password. @internal */
export const describe = (endpoint: Endpoint): string =>
  `${endpoint.protocol}://${encodeURIComponent(endpoint.username)}@${endpoint.hostname}:${endpoint.port}/${
    encodeURIComponent(endpoint.vhost)
  }`

/**
 * Removes the password from a driver message, in case a driver ever echoes it (defence in
 * depth: amqplib 2.3 does not).
 *
 * @internal
 */
export const scrub = (endpoint: Endpoint, text: string): string => {
  if (endpoint.password.length === 0) return text
  let result = text.split(endpoint.password).join("<redacted>")
  const encoded = encodeURIComponent(endpoint.password)
  if (encoded !== endpoint.password) result = result.split(encoded).join("<redacted>")
  return result
}
