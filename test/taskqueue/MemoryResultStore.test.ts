import * as TaskQueue from "../../src/TaskQueue.js"
import { resultStoreContract } from "./resultStoreContract.js"

resultStoreContract("memory", TaskQueue.layerResultStoreMemory)
