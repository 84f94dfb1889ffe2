import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as HashMap from "effect/HashMap"

/**
 * Per-delivery fiber locals. The stock combinators (`locallyWith`, `provideService`,
 * `annotateLogs`) wrap the effect in an acquire/use/release and compare the restored value with
 * the current one, ~8-10 µs a message each; these only set the value for the rest of the fiber.
 *
 * Sound because the typed front puts the fiber's context, log annotations, log spans and metric
 * labels back after every delivery (`run` in internal/isolation.ts), whichever fiber the
 * transport runs it on.
 *
 * @internal
 */
export const provideService = <A, E, R, I, S>(
  effect: Effect.Effect<A, E, R>,
  tag: Context.Tag<I, S>,
  service: S
): Effect.Effect<A, E, Exclude<R, I>> =>
  // Sound: the context `effect` runs with holds I.
  Effect.zipRight(
    FiberRef.update(FiberRef.currentContext, (context) => Context.add(context, tag, service)),
    effect
  ) as Effect.Effect<A, E, Exclude<R, I>>

/** Runs `effect` with `context` (see {@link provideService}). @internal */
export const provideContext = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  context: Context.Context<R>
): Effect.Effect<A, E> =>
  // Sound: the context `effect` runs with is `context`.
  Effect.zipRight(FiberRef.set(FiberRef.currentContext, context), effect) as Effect.Effect<A, E>

/** Annotates the logs of the rest of the delivery (see {@link provideService}). @internal */
export const annotateLogs = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  annotations: Readonly<Record<string, unknown>>
): Effect.Effect<A, E, R> =>
  Effect.zipRight(
    FiberRef.update(FiberRef.currentLogAnnotations, (current) => {
      let next = current
      for (const key in annotations) next = HashMap.set(next, key, annotations[key])
      return next
    }),
    effect
  )
