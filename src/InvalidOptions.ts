/**
 * The one error every `make` / `layer` / `layerConfig` fails with when an option is out of range,
 * and that definitions (`Task.make`, `Scheduler.cron`, …) report for a bad option: fix the input.
 *
 * @since 0.1.0
 */
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-background/InvalidOptions")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * An option that cannot be honoured: `module` is the module whose constructor refused it
 * (`"RabbitMQBroker"`, `"TaskQueue"`, …), `field` the option's path (`"retention.after"`).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidOptions extends Schema.TaggedError<InvalidOptions>()("InvalidOptions", {
  module: Schema.String,
  field: Schema.String,
  value: Schema.String,
  reason: Schema.String
}) {
  /** @since 0.1.0 */
  readonly [TypeId]: TypeId = TypeId
  /** @since 0.1.0 */
  override get message(): string {
    return `${this.module}: invalid option ${this.field} = ${this.value}: ${this.reason}`
  }
}

/**
 * @since 0.1.0
 * @category guards
 */
export const isInvalidOptions = (u: unknown): u is InvalidOptions => Predicate.hasProperty(u, TypeId)
