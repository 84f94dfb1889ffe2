import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"

/**
 * Effect's built-in tracer records nothing anyone can read; under it a span per message is pure
 * cost (~10 µs), so the hot paths only carry the trace context they were given, and only when
 * someone recorded it: one header on a message cost raw amqplib a quarter of its confirmed
 * publish rate here (RabbitMQ 3.10 decodes the table). With a real tracer installed
 * (OpenTelemetry, a test recorder) every publish, delivery, enqueue and outbox row gets its span.
 *
 * @internal
 */
export const builtInTracer: Tracer.Tracer = Effect.runSync(Effect.tracer)

/** W3C traceparent of a span. */
const traceparentOf = (span: Tracer.AnySpan): string =>
  `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

/**
 * Under the built-in tracer only a context from outside (an incoming request's traceparent, a
 * consumed message's) is worth passing on: the ids of Effect's own spans name spans nobody
 * recorded. It is passed on unchanged, as an uninstrumented hop would.
 */
const recordedAncestor = (span: Tracer.AnySpan): Tracer.ExternalSpan | undefined => {
  let current: Tracer.AnySpan | undefined = span
  while (current !== undefined) {
    if (current._tag === "ExternalSpan") return current
    current = Option.getOrUndefined(current.parent)
  }
  return undefined
}

const propagated = (tracer: Tracer.Tracer, span: Tracer.AnySpan): string | undefined => {
  if (tracer !== builtInTracer) return traceparentOf(span)
  const recorded = recordedAncestor(span)
  return recorded === undefined ? undefined : traceparentOf(recorded)
}

// serviceOption, not currentSpan: a missing span must not cost an exception per message
const traceparentUnder = (tracer: Tracer.Tracer): Effect.Effect<string | undefined> =>
  Effect.map(
    Effect.serviceOption(Tracer.ParentSpan),
    Option.match({ onNone: () => undefined, onSome: (span) => propagated(tracer, span) })
  )

/**
 * The traceparent a message published here carries: the current span under a real tracer; under
 * the built-in one, the trace context that came from outside, if any.
 *
 * @internal
 */
export const currentTraceparent: Effect.Effect<string | undefined> = Effect.tracerWith(traceparentUnder)

/** `Effect.withSpan`, under a real tracer only. @internal */
export const withSpanWhenTraced =
  (name: string, options: Tracer.SpanOptions) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.tracerWith((tracer) => tracer === builtInTracer ? effect : Effect.withSpan(effect, name, options))

/**
 * Runs `f` with the traceparent to send along: its own span's under a real tracer, the one from
 * outside the process (if any) under the built-in one.
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
      ? Effect.flatMap(traceparentUnder(tracer), f)
      : Effect.useSpan(name, options, (span) => f(traceparentOf(span)))
  )

/** Parses a W3C traceparent into a span (a parent, a link); undefined when malformed. @internal */
export const spanOfTraceparent = (traceparent: string | undefined): Tracer.ExternalSpan | undefined => {
  if (traceparent === undefined) return undefined
  const parts = traceparent.split("-")
  const [version, traceId, spanId, flags] = parts
  if (
    parts.length < 4 || version === undefined || traceId?.length !== 32 || spanId?.length !== 16 || flags === undefined
  ) {
    return undefined
  }
  return Tracer.externalSpan({ traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1 })
}
