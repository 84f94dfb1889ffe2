import { assert, describe, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import * as Broker from "../../src/Broker.js"
import * as names from "../../src/internal/names.js"

const kindOf = (result: Either.Either<void, { readonly kind: string }>) =>
  Either.match(result, { onLeft: (error) => error.kind, onRight: () => "ok" })

describe("names.matchesPattern (AMQP topic exchange)", () => {
  const cases: ReadonlyArray<readonly [pattern: string, key: string, matches: boolean]> = [
    ["orders.paid", "orders.paid", true],
    ["orders.paid", "orders.paid.eu", false],
    ["orders.*", "orders.paid", true],
    ["orders.*", "orders", false],
    ["orders.*", "orders.paid.eu", false],
    ["*.paid", "orders.paid", true],
    ["*.paid", "paid", false],
    ["orders.*.eu", "orders.paid.eu", true],
    ["orders.*.eu", "orders.paid.us", false],
    ["orders.#", "orders", true],
    ["orders.#", "orders.paid", true],
    ["orders.#", "orders.paid.eu.de", true],
    ["orders.#", "order.paid", false],
    ["#", "anything.at.all", true],
    ["#", "single", true],
    ["#.paid", "paid", true],
    ["#.paid", "orders.eu.paid", true],
    ["#.paid", "orders.paid.late", false],
    ["orders.#.paid", "orders.paid", true],
    ["orders.#.paid", "orders.eu.de.paid", true],
    ["orders.#.paid", "orders.eu.refunded", false],
    ["#.*", "orders", true],
    ["*.#", "orders.paid", true],
    ["*.#", "orders", true],
    ["*.*", "orders", false],
    ["a.#.#.b", "a.b", true],
    ["a.#.b.#.c", "a.x.b.y.z.c", true],
    ["a.#.b.#.c", "a.x.c.y.b", false]
  ]
  for (const [pattern, key, matches] of cases) {
    it(`${JSON.stringify(pattern)} ${matches ? "matches" : "does not match"} ${JSON.stringify(key)}`, () => {
      assert.strictEqual(names.matchesPattern(pattern, key), matches)
    })
  }

  it("stays fast on adversarial `#` patterns", () => {
    const key = Array.from({ length: 30 }, (_, i) => `w${i}`).join(".")
    const start = performance.now()
    assert.isFalse(names.matchesPattern("#.#.#.#.#.#.nomatch", key))
    assert.isBelow(performance.now() - start, 2000)
  })
})

describe("names validation", () => {
  it("topics are dotted words without wildcards, 1-255 bytes", () => {
    assert.strictEqual(kindOf(names.validateTopic("orders.paid")), "ok")
    assert.strictEqual(kindOf(names.validateTopic("orders")), "ok")
    for (const bad of ["", ".orders", "orders.", "orders..paid", "orders.*", "orders.#", "ord*ers", "x".repeat(256)]) {
      assert.strictEqual(kindOf(names.validateTopic(bad)), "topic", bad)
    }
  })

  it("patterns allow `*` and `#` only as whole words", () => {
    for (const good of ["orders.*", "orders.#", "#", "*.paid", "a.#.b"]) {
      assert.strictEqual(kindOf(names.validatePattern(good)), "ok", good)
    }
    for (const bad of ["", "orders.p*", "orders.#x", "a..b"]) {
      assert.strictEqual(kindOf(names.validatePattern(bad)), "pattern", bad)
    }
  })

  it("groups reject empty, reserved `amq.`, odd characters and long names", () => {
    for (const good of ["billing", "billing.v2", "svc:worker-1_a"]) {
      assert.strictEqual(kindOf(names.validateGroup(good)), "ok", good)
    }
    for (const bad of ["", "amq.billing", "has space", "tab\there", "ünïcode", "g".repeat(201)]) {
      assert.strictEqual(kindOf(names.validateGroup(bad)), "group", bad)
    }
  })

  it("headers: names 1-128 bytes, no reserved `x-eb-` prefix, bounded total size", () => {
    assert.strictEqual(kindOf(names.validateHeaders({ tenant: "acme", "x-request-id": "1" })), "ok")
    assert.strictEqual(kindOf(names.validateHeaders({})), "ok")
    assert.strictEqual(kindOf(names.validateHeaders({ "": "v" })), "header")
    assert.strictEqual(kindOf(names.validateHeaders({ ["h".repeat(129)]: "v" })), "header")
    assert.strictEqual(kindOf(names.validateHeaders({ "x-eb-attempt": "2" })), "header")
    assert.strictEqual(kindOf(names.validateHeaders({ big: "v".repeat(names.maxHeaderBytes) })), "header")
  })

  it("reserved names are refused as user headers and accepted as library metadata", () => {
    for (const reserved of ["traceparent", "tracestate", "x-death", "x-eb-task-key"]) {
      assert.strictEqual(kindOf(names.validateHeaders({ [reserved]: "v" })), "header", reserved)
    }
    assert.strictEqual(kindOf(names.validateHeaders({ "eb-task-key": "any legal name is the caller's" })), "ok")
    assert.strictEqual(kindOf(names.validateMetadata({ "x-eb-task-key": "k" })), "ok")
    assert.strictEqual(kindOf(names.validateMetadata({ "task-key": "k" })), "header", "metadata names start with x-eb-")
    assert.strictEqual(kindOf(names.validateMetadata({ "x-eb-attempt": "2" })), "header", "written by the transport")
    assert.strictEqual(kindOf(names.validateHeaders({ tenant: "a\u0000b" })), "header")
  })
})

describe("matchesPattern with many wildcards", () => {
  it("stays fast and correct with eight `#` against a 30-word key", () => {
    const key = Array.from({ length: 30 }, (_, i) => `w${i}`).join(".")
    const pattern = Array.from({ length: 8 }, () => "#").join(".") + ".nomatch"
    assert.isFalse(names.matchesPattern(pattern, key))
    assert.isTrue(names.matchesPattern(Array.from({ length: 8 }, () => "#").join(".") + ".w29", key))
  })
})

describe("topic and pattern definitions", () => {
  it("topicEither and patternEither return the InvalidName that topic and pattern throw", () => {
    const schema = Schema.String
    for (const bad of ["", "a..b", "orders.*"]) {
      const result = Broker.topicEither(bad, schema)
      assert.isTrue(Either.isLeft(result), bad)
      assert.throws(() => Broker.topic(bad, schema), Broker.InvalidName)
    }
    assert.isTrue(Either.isRight(Broker.topicEither("orders.placed", schema)))
    assert.isTrue(Either.isLeft(Broker.patternEither("orders.*x", schema)))
    assert.throws(() => Broker.pattern("orders.*x", schema), Broker.InvalidName)
    assert.isTrue(Either.isRight(Broker.patternEither("orders.#", schema)))
  })
})
