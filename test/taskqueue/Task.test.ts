import { assert, describe, it } from "@effect/vitest"
import { Duration, Either, Schedule, Schema } from "effect"
import * as Broker from "../../src/Broker.js"
import { InvalidOptions } from "../../src/InvalidOptions.js"
import * as Task from "../../src/Task.js"

const payload = Schema.Struct({ id: Schema.String })

describe("Task definitions", () => {
  it("a task rides on topic and group tasks.<name>", () => {
    const task = Task.make("send_welcome_email", { payload })
    assert.strictEqual(task.name, "send_welcome_email")
    assert.strictEqual(task.topic.name, "tasks.send_welcome_email")
    assert.strictEqual(task.group, "tasks.send_welcome_email")
    assert.isTrue(Task.isTask(task))
    assert.isFalse(Task.isTask({ name: "x" }))
  })

  it("a name that cannot be a routing key is refused at definition", () => {
    assert.throws(() => Task.make("bad..name", { payload }), Broker.InvalidName)
    assert.throws(() => Task.make("wild.*", { payload }), Broker.InvalidName)
    assert.throws(() => Task.make("", { payload }), Broker.InvalidName)
  })

  it("a non-positive timeout or an out-of-range maxPriority is refused", () => {
    assert.throws(() => Task.make("t", { payload, timeout: 0 }), InvalidOptions)
    assert.throws(() => Task.make("t", { payload, timeout: "-1 second" }), InvalidOptions)
    assert.throws(() => Task.make("t", { payload, maxPriority: 256 }), InvalidOptions)
    assert.throws(() => Task.make("t", { payload, delivery: "fast" as Task.Delivery }), InvalidOptions)
    assert.throws(() => Task.make("t", { payload }).pipe(Task.withTimeout("-1 second")), InvalidOptions)
  })

  it("the Either twins return what make and withTimeout throw", () => {
    const bad = Task.makeEither("t", { payload, maxPriority: 0 })
    assert.isTrue(
      Either.isLeft(bad) && bad.left._tag === "InvalidOptions" && bad.left.module === "Task" &&
        bad.left.field === "maxPriority"
    )
    const badName = Task.makeEither("bad..name", { payload })
    assert.isTrue(Either.isLeft(badName) && badName.left._tag === "InvalidName")
    const good = Task.makeEither("t", { payload, timeout: "1 second" })
    assert.isTrue(Either.isRight(good) && Task.timeoutMillis(good.right) === 1000)
    if (Either.isLeft(good)) return
    const longer = good.right.pipe(Task.withTimeoutEither("2 seconds"))
    assert.isTrue(Either.isRight(longer) && Task.timeoutMillis(longer.right) === 2000)
    const zero = Task.withTimeoutEither(good.right, 0)
    assert.isTrue(Either.isLeft(zero) && zero.left.field === "timeout")
  })

  it("combinators return new definitions and leave the original alone", () => {
    const base = Task.make("t", { payload })
    const changed = base.pipe(Task.withTimeout("5 seconds"), Task.withRetry(Schedule.recurs(2)))
    assert.strictEqual(base.timeout, undefined)
    assert.strictEqual(Task.timeoutMillis(changed), 5000)
    assert.notStrictEqual(changed.retry, base.retry)
    assert.strictEqual(changed.name, "t")
    assert.isTrue(Task.isTask(changed))
    assert.isTrue(Duration.equals(Task.withTimeout(base, 1000).timeout ?? Duration.zero, Duration.seconds(1)))
  })
})
