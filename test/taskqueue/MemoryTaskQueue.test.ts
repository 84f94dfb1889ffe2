import { memoryBrokerWithProbe } from "../fixtures/memory.js"
import { taskQueueContract } from "./contract.js"

taskQueueContract("memory", memoryBrokerWithProbe, { real: false })
