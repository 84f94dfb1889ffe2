import * as ResultStore from "../../src/ResultStore.js"
import { resultStoreContract } from "./resultStoreContract.js"

resultStoreContract("memory", ResultStore.layerMemory)
