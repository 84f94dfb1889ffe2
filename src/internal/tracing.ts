import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"

/**
 * Effect's built-in tracer records nothing anyone can read; under it a span per message is pure
 * cost (~10 µs, and a traceparent header on every message), so the hot paths only carry the
 * trace context they were given. With a real tracer installed (OpenTelemetry, a test recorder)
 * every publish, delivery, enqueue and outbox row gets its span.
 *
 * @internal
 */
export const builtInTracer: Tracer.Tracer = Effect.runSync(Effect.tracer)

/** W3C traceparent of a span. */
const traceparentOf = (span: Tracer.AnySpan): string => `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

// serviceOption, not currentSpan: a missing span must not cost an exception per message
/** @internal */
export const currentTraceparent: Effect.Effect<string | undefined> = Effect.map(
  Effect.serviceOption(Tracer.ParentSpan),
  Option.match({ onNone: () => undefined, onSome: traceparentOf })
)

/** `Effect.withSpan`, under a real tracer only. @internal */
export const withSpanWhenTraced = (name: string, options: Tracer.SpanOptions) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.tracerWith((tracer) => tracer === builtInTracer ? effect : Effect.withSpan(effect, name, options))

/**
 * Runs `f` with the traceparent to send along: its own span's under a real tracer, the caller's
 * (if any) under the built-in one.
 *
 * @internal
 */
export const withTraceContext = <A, E, R>(
  name: string,
  options: Tracer.SpanOptions,
  f: (traceparent: string | undefined) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.tracerWith((tracer) =>
    tracer === builtInTracer
      ? Effect.flatMap(currentTraceparent, f)
      : Effect.useSpan(name, options, (span) => f(traceparentOf(span)))
  )
