import { Effect, Layer } from "effect"
import * as MemoryBroker from "../../src/layers/MemoryBroker.js"
import { ContractProbe } from "../broker/contract.js"
import { taskQueueContract } from "./contract.js"

const probe = Layer.effect(
  ContractProbe,
  Effect.map(MemoryBroker.MemoryBroker, (memory) => ({
    deadLetters: (group: string) =>
      Effect.map(memory.deadLetters(group), (letters) =>
        letters.map(({ body, headers, messageId, reason }) => ({ body, headers, messageId, reason }))),
    maxMessageBytes: MemoryBroker.defaults.maxMessageBytes
  }))
)

taskQueueContract("memory", Layer.provideMerge(probe, MemoryBroker.layer()), { real: false })
