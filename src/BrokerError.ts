/**
 * Tagged errors of the Broker. They are Schemas, so they cross the wire into dead-letter
 * headers and result stores.
 *
 * @since 0.1.0
 */
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import type { InvalidOptions } from "./InvalidOptions.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const ErrorTypeId: unique symbol = Symbol.for("effect-background/Broker/Error")

/**
 * @since 0.1.0
 * @category type ids
 */
export type ErrorTypeId = typeof ErrorTypeId

/**
 * The broker could not be reached, refused us, or the connection is down: retrying later may
 * succeed (`reason: "auth"` needs a fix of the credentials first). A malformed URL or another bad
 * option fails `InvalidOptions` instead.
 *
 * @since 0.1.0
 * @category errors
 */
export class BrokerUnavailable extends Schema.TaggedError<BrokerUnavailable>()("BrokerUnavailable", {
  reason: Schema.Literal("connect", "auth", "timeout", "closed"),
  detail: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `broker unavailable (${this.reason}): ${this.detail}`
  }
}

/**
 * The broker did not accept a message. `ambiguous` is true when the channel closed before the
 * confirm arrived: the message may have been stored anyway (publish again and expect a duplicate).
 *
 * @since 0.1.0
 * @category errors
 */
export class PublishRejected extends Schema.TaggedError<PublishRejected>()("PublishRejected", {
  topic: Schema.String,
  messageId: Schema.String,
  reason: Schema.Literal("nacked", "unroutable", "channel-closed", "too-large", "invalid", "timeout"),
  ambiguous: Schema.Boolean,
  detail: Schema.String
}) {
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `publish to "${this.topic}" rejected (${this.reason}${
      this.ambiguous ? ", may have been stored" : ""
    }): ${this.detail}`
  }
}

/**
 * The message did not match the topic's Schema on the way out; nothing was sent.
 *
 * @since 0.1.0
 * @category errors
 */
export class EncodeError extends Schema.TaggedError<EncodeError>()("EncodeError", {
  topic: Schema.String,
  issue: Schema.String
}) {
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `cannot encode message for "${this.topic}": ${this.issue}`
  }
}

/**
 * A delivered payload did not decode with the topic's Schema (poison). It is dead-lettered with
 * this error as the reason and never retried.
 *
 * @since 0.1.0
 * @category errors
 */
export class DecodeError extends Schema.TaggedError<DecodeError>()("DecodeError", {
  topic: Schema.String,
  messageId: Schema.String,
  issue: Schema.String
}) {
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `cannot decode message ${this.messageId} on "${this.topic}": ${this.issue}`
  }
}

/**
 * A topic, pattern, group or header that the broker would reject or silently misread.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidName extends Schema.TaggedError<InvalidName>()("InvalidName", {
  kind: Schema.Literal("topic", "pattern", "group", "header"),
  value: Schema.String,
  reason: Schema.String
}) {
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `invalid ${this.kind} ${JSON.stringify(this.value)}: ${this.reason}`
  }
}

/**
 * The transport underneath cannot honour what was asked (a delay, a priority, a wildcard
 * pattern, redriving dead letters, …): nothing was sent or changed. Pick another transport or
 * drop the option.
 *
 * @since 0.1.0
 * @category errors
 */
export class Unsupported extends Schema.TaggedError<Unsupported>()("Unsupported", {
  transport: Schema.String,
  feature: Schema.String,
  detail: Schema.String
}) {
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `the ${this.transport} transport does not support ${this.feature}: ${this.detail}`
  }
}

/**
 * A group's queue already exists with other arguments (RabbitMQ's 406 PRECONDITION_FAILED on a
 * redeclare, e.g. another `maxPriority`): retrying will not help; change the option back or
 * delete the queue.
 *
 * @since 0.1.0
 * @category errors
 */
export class DeclareConflict extends Schema.TaggedError<DeclareConflict>()("DeclareConflict", {
  group: Schema.String,
  detail: Schema.String
}) {
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `group "${this.group}" exists with other arguments: ${this.detail}`
  }
}

/**
 * @since 0.1.0
 * @category errors
 */
export type PublishError =
  | BrokerUnavailable
  | PublishRejected
  | EncodeError
  | InvalidName
  | InvalidOptions
  | Unsupported

/**
 * @since 0.1.0
 * @category errors
 */
export type SubscribeError = BrokerUnavailable | InvalidName | InvalidOptions | Unsupported | DeclareConflict

/**
 * @since 0.1.0
 * @category errors
 */
export type BrokerError =
  | BrokerUnavailable
  | PublishRejected
  | EncodeError
  | DecodeError
  | InvalidName
  | Unsupported
  | DeclareConflict
  | HandlerDefect

/**
 * @since 0.1.0
 * @category guards
 */
export const isBrokerError = (u: unknown): u is BrokerError => Predicate.hasProperty(u, ErrorTypeId)

/**
 * A handler died (threw, or `Effect.die`): retried like a failure, with this as its input.
 *
 * @since 0.1.0
 * @category errors
 */
export class HandlerDefect extends Schema.TaggedError<HandlerDefect>()("HandlerDefect", {
  detail: Schema.String
}) {
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `handler died: ${this.detail}`
  }
}
