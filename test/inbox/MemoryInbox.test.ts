import { Context, Effect, Layer, Ref } from "effect"
import { Inbox } from "../../src/index.js"
import { inboxContract } from "./contract.js"

class Counts extends Context.Tag("test/inbox/Counts")<Counts, Ref.Ref<ReadonlyMap<string, number>>>() {}

inboxContract(
  "memory",
  Layer.merge(Inbox.layerMemory, Layer.effect(Counts, Ref.make<ReadonlyMap<string, number>>(new Map()))),
  {
    transactional: false,
    write: (label) =>
      Effect.flatMap(Counts, (counts) => Ref.update(counts, (m) => new Map(m).set(label, (m.get(label) ?? 0) + 1))),
    count: (label) => Effect.map(Effect.flatMap(Counts, Ref.get), (m) => m.get(label) ?? 0)
  }
)
