import { Layer, Redacted } from "effect"
import * as RedisBroker from "../../src/layers/RedisBroker.js"
import { runId } from "../fixtures/env.js"
import { cleanupLayer, probeLayer, redisUrl } from "../support/redis.js"
import { taskQueueContract } from "./contract.js"

const prefix = `tq${runId}`
const maxMessageBytes = 256 * 1024

/** Redis under this run's own key prefix, every key deleted afterwards. */
const live = Layer.merge(
  RedisBroker.layer({
    url: Redacted.make(redisUrl),
    prefix,
    maxMessageBytes,
    shutdownTimeout: "2 seconds",
    pollInterval: "20 millis"
  }),
  probeLayer(prefix, maxMessageBytes)
).pipe(Layer.provideMerge(cleanupLayer(prefix)), Layer.orDie)

taskQueueContract("Redis", live, { real: true, priority: false })
