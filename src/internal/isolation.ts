import type * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Tracer from "effect/Tracer"
import type * as BrokerTransport from "../BrokerTransport.js"
import * as fiberLocal from "./fiberLocal.js"

const ack: Effect.Effect<BrokerTransport.Disposition> = Effect.succeed({ _tag: "Ack" })

/** The fiber locals a delivery may leave changed, as they were before it. */
class Locals {
  readonly context: Context.Context<never>
  readonly annotations: ReturnType<typeof readAnnotations>
  readonly logSpans: ReturnType<typeof readLogSpans>
  readonly labels: ReturnType<typeof readLabels>
  constructor(readonly fiber: Fiber.RuntimeFiber<unknown, unknown>) {
    this.context = fiber.getFiberRef(FiberRef.currentContext)
    this.annotations = readAnnotations(fiber)
    this.logSpans = readLogSpans(fiber)
    this.labels = readLabels(fiber)
  }

  /** `next`, after putting back what changed (nothing, on the usual path: no allocation). */
  putBack<A>(next: Effect.Effect<A>): Effect.Effect<A> {
    const fiber = this.fiber
    let restoring: Effect.Effect<void> | undefined
    if (fiber.getFiberRef(FiberRef.currentContext) !== this.context) {
      restoring = FiberRef.set(FiberRef.currentContext, this.context)
    }
    if (readAnnotations(fiber) !== this.annotations) {
      restoring = then(restoring, FiberRef.set(FiberRef.currentLogAnnotations, this.annotations))
    }
    if (readLogSpans(fiber) !== this.logSpans) {
      restoring = then(restoring, FiberRef.set(FiberRef.currentLogSpan, this.logSpans))
    }
    if (readLabels(fiber) !== this.labels) {
      restoring = then(restoring, FiberRef.set(FiberRef.currentMetricLabels, this.labels))
    }
    return restoring === undefined ? next : Effect.zipRight(restoring, next)
  }
}

const readAnnotations = (fiber: Fiber.RuntimeFiber<unknown, unknown>) =>
  fiber.getFiberRef(FiberRef.currentLogAnnotations)
const readLogSpans = (fiber: Fiber.RuntimeFiber<unknown, unknown>) => fiber.getFiberRef(FiberRef.currentLogSpan)
const readLabels = (fiber: Fiber.RuntimeFiber<unknown, unknown>) => fiber.getFiberRef(FiberRef.currentMetricLabels)

const then = (first: Effect.Effect<void> | undefined, second: Effect.Effect<void>): Effect.Effect<void> =>
  first === undefined ? second : Effect.zipRight(first, second)

/**
 * Runs one delivery's handler with the subscriber's `context` (plus the producer's span as
 * parent), decides its disposition (Ack on success, `onFailure` otherwise, still inside the
 * delivery's context) and puts the calling fiber's context, log annotations, log spans and metric
 * labels back, so a transport may run deliveries one after another on one fiber without anything
 * leaking from one into the next.
 *
 * One fiber-runtime step and one match per delivery: the continuations run on the fiber that
 * started the delivery, so they read and compare its locals directly instead of through
 * `FiberRef.get` effects; a fiber interrupted mid-delivery runs no further delivery, so nothing
 * needs putting back then.
 *
 * @internal
 */
export const run = <E, R>(
  effect: Effect.Effect<void, E, R>,
  context: Context.Context<R>,
  parent: Tracer.AnySpan | undefined,
  onFailure: (cause: Cause.Cause<E>) => Effect.Effect<BrokerTransport.Disposition>
): Effect.Effect<BrokerTransport.Disposition> =>
  Effect.withFiberRuntime((fiber) => {
    const locals = new Locals(fiber)
    const deliveryContext = parent === undefined ? context : Context.add(context, Tracer.ParentSpan, parent)
    // Sound: the context `effect` runs with is `deliveryContext`, which holds R.
    const body = (deliveryContext as Context.Context<never>) === locals.context
      ? effect as Effect.Effect<void, E>
      : fiberLocal.provideContext(effect, deliveryContext)
    return Effect.matchCauseEffect(body, {
      onSuccess: () => locals.putBack(ack),
      onFailure: (cause) =>
        Effect.flatMap(onFailure(cause), (disposition) => locals.putBack(Effect.succeed(disposition)))
    })
  })
