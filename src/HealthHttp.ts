/**
 * Health over HTTP on an `@effect/platform` HttpRouter: `GET /health` (the report as JSON, 200
 * when up, 503 when down) and `GET /metrics` (Effect metrics in the Prometheus text format).
 *
 * A sub-path of its own (`effect-background/HealthHttp`) so that the root entry point does not
 * load `@effect/platform`.
 *
 * @since 0.1.0
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import * as Health from "./Health.js"

/**
 * `GET /health`: the report as JSON, status 200 when up and 503 when down.
 *
 * @since 0.1.0
 * @category accessors
 */
export const healthHandler: Effect.Effect<HttpServerResponse.HttpServerResponse, never, Health.Health> = Effect.map(
  Health.check,
  (report) => HttpServerResponse.unsafeJson(report, { status: report.status === "up" ? 200 : 503 })
)

/**
 * `GET /metrics`: Effect metrics in the Prometheus text format.
 *
 * @since 0.1.0
 * @category accessors
 */
export const metricsHandler: Effect.Effect<HttpServerResponse.HttpServerResponse> = Effect.map(
  Health.prometheusText,
  (body) => HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
)

/**
 * A router with `GET /health` and `GET /metrics`; concatenate or mount it into the app's router.
 *
 * @since 0.1.0
 * @category accessors
 */
export const router: HttpRouter.HttpRouter<never, Health.Health> = HttpRouter.empty.pipe(
  HttpRouter.get("/health", healthHandler),
  HttpRouter.get("/metrics", metricsHandler)
)
